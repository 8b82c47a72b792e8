"""`shipper tail`: spans as they flow through the running daemon."""

from __future__ import annotations

import subprocess
import sys

from support import EXAMPLES, wait_for

from shipper.testing import send_seqpacket

VALID = (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()


def test_tail_prints_spans_as_they_flow(daemon_factory) -> None:
    """A watcher started before the spans sees each one, once, as a readable line."""
    daemon = daemon_factory().start()
    watcher = subprocess.Popen([sys.executable, "-m", "shipper", "tail", "--control", daemon.control],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: daemon.status()["pipeline"]["tail_watchers"] == 1, message="the watcher")
        send_seqpacket(daemon.socket, [b"\n".join(VALID)])
        wait_for(lambda: len(daemon.records()) == 5)
    finally:
        daemon.stop()
        out, err = watcher.communicate(timeout=20)
    lines = out.splitlines()
    names = [line.split()[3] for line in lines]
    assert len(lines) == 5, (out, err)
    assert names == ["query_llm", "query_llm", "query_embedding", "query_agent", "my_llm_application"]
    agent = [line for line in lines if " query_agent " in line][-1]
    assert "error='429 Too Many Requests'" in agent and "trace=4bf92f3577b34da6a3ce929d0e0e4736" in agent
    assert "model=gpt-4o-mini" in lines[1]


def test_tail_without_daemon_fails_clearly(tmp_path) -> None:
    """No daemon: exit 1 and a sentence, not a traceback."""
    out = subprocess.run([sys.executable, "-m", "shipper", "tail", "--control", str(tmp_path / "none.sock")],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "no shipper daemon is running" in out.stderr
