"""Hostile and faulty input on the data socket (issue 10, items 5, 7 and 8): a stop under load loses nothing,
a zero-length message does not end a connection, secrets in malformed records are masked at rest.
Real daemon subprocesses, a real client process, real SEQPACKET sockets, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from support import Daemon, wait_for, wait_records

from shipper.testing import make_span, send_seqpacket

ROOT = Path(__file__).resolve().parents[1]
REPO_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

LOAD_CLIENT = textwrap.dedent("""
    import json, os, sys, time
    import shipper
    socket_path, spool_dir, stop_file, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    shipper.configure(service="load", socket=socket_path, spool_dir=spool_dir)
    i, start = 0, time.monotonic()
    while not os.path.exists(stop_file):
        for _ in range(25):
            with shipper.span(f"r{i}"):
                pass
            i += 1
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    print(json.dumps({"emitted": i, **shipper.statistics()}), flush=True)
""")


def line(i: int, **fields) -> bytes:
    return orjson.dumps(make_span(trace=i, span=i, name=f"sock-{i}", **fields))


@pytest.mark.slow
def test_sigterm_under_load_loses_nothing_the_client_counted_sent(daemon_factory, tmp_path: Path) -> None:
    """Item 5: a client process sends at a steady 50,000 spans/s (more than the daemon takes, so its kernel
    buffer is never empty); SIGTERM the daemon mid-stream. Every record the client counted `sent` is in the
    file exporter's output once the daemon has exited (exactly once), and what it spooled after the stop
    arrives when a daemon reads the spool: nothing lost."""
    daemon: Daemon = daemon_factory(env=REPO_ENV)
    config = daemon.default_config()
    del config["receivers"]["spool"]  # this daemon only reads the socket: its output is what `sent` promised
    daemon.set_config(**config).start()
    stop_file = tmp_path / "stop"
    client = subprocess.Popen([sys.executable, "-c", LOAD_CLIENT, daemon.socket, daemon.spool, str(stop_file), "50000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon.env)
    try:
        wait_for(lambda: daemon.status()["receivers"]["socket"].get("received", 0) >= 6000, timeout=30,
                 message="the daemon taking the load")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0, daemon.log()
        wait_for(lambda: client.poll() is None and Path(daemon.spool).exists() and any(Path(daemon.spool).glob("*.ndjson")),
                 message="the client spooling after the stop")
        stop_file.touch()
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    stats = json.loads(out)
    assert stats["dropped"] == {}, stats
    names = [r["name"] for r in daemon.records()]
    assert stats["sent"] > 6000
    assert len(names) == len(set(names)) == stats["sent"], (len(names), stats)
    assert stats["sent"] + stats["spooled"] == stats["emitted"]
    # a daemon reading the spool delivers the rest
    daemon.set_config(receivers={"spool": {"type": "spool", "dir": daemon.spool, "poll_interval": "50ms"}}).start()
    wait_for(lambda: len({r["name"] for r in daemon.records()}) == stats["emitted"], timeout=30,
             message="every emitted record delivered")
    assert daemon.stop() == 0


def test_a_zero_length_message_is_counted_and_skipped(daemon_factory) -> None:
    """Item 8: a zero-length SEQPACKET message is counted `empty`; what the client sends after it on the same
    connection is delivered; only the real end of the stream closes the connection."""
    daemon: Daemon = daemon_factory().start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(daemon.socket)
    try:
        sock.send(line(1))
        sock.send(b"")
        sock.send(line(2))
        wait_records(daemon, 2)
        figures = daemon.status()["receivers"]["socket"]
        assert figures["empty"] == 1 and figures["open_connections"] == 1
        sock.send(b"")
        sock.send(b"")
        sock.send(line(3))
        wait_records(daemon, 3)
        assert daemon.status()["receivers"]["socket"]["empty"] == 3
    finally:
        sock.close()
    wait_for(lambda: daemon.status()["receivers"]["socket"]["open_connections"] == 0, message="the EOF seen")
    send_seqpacket(daemon.socket, [line(4), b"", line(5)])  # close right after an empty message
    wait_records(daemon, 5)
    assert sorted(r["name"] for r in daemon.records()) == [f"sock-{i}" for i in range(1, 6)]
    assert daemon.stop() == 0


def test_secrets_in_malformed_records_are_masked_in_the_rejects_file(daemon_factory) -> None:
    """Item 7: the rejects file gets the default redaction of exported records: secret-named keys and
    key-shaped values in a malformed record (valid JSON or not) are masked, and each line says so."""
    daemon: Daemon = daemon_factory().start()
    openai_key = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    bearer = "Bearer " + "eyJhbGciOiJIUzI1NiJ9abcdefghij"
    nameless = orjson.dumps({"trace_id": "1" * 32, "span_id": "2" * 16, "start_ns": 1, "end_ns": 2,
                             "attributes": {"api_key": "hunter2-hunter2", "note": f"Authorization: {bearer}"}})
    send_seqpacket(daemon.socket, [nameless, f"not json at all {openai_key}".encode(), line(1)])
    wait_records(daemon, 1)
    path = daemon.state / "rejected" / "rejected.ndjson"
    wait_for(lambda: path.exists() and len(path.read_bytes().splitlines()) == 2, message="two rejects")
    text = path.read_text()
    for secret in ("hunter2-hunter2", openai_key, bearer.split()[1]):
        assert secret not in text
    rows = [orjson.loads(x) for x in text.splitlines()]
    assert {r["reason"] for r in rows} == {"missing_name", "not_json"}
    assert all(r["redacted"] == "secrets" for r in rows)
    by_reason = {r["reason"]: r["line"] for r in rows}
    assert "[REDACTED:key]" in by_reason["missing_name"] and "[REDACTED:bearer_token]" in by_reason["missing_name"]
    assert "[REDACTED:openai_key]" in by_reason["not_json"]
    assert daemon.stop() == 0
