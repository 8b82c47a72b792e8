"""Issue 10 item 6: each daemon has its own control socket (real daemon subprocesses, real sockets)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from support import Daemon

from shipper.testing import short_dir


def _status_pid(config_path: str, env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-m", "shipper", "status", "--json", "-c", config_path],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)["pid"]


@pytest.fixture
def shared_dir():
    return short_dir("shpc")


def test_two_daemons_with_sockets_in_one_directory_each_answer_for_their_own_config(shared_dir):
    """Data sockets side by side: `status -c FILE` reaches FILE's daemon; a third cannot take a live one."""
    daemons = []
    try:
        for name in ("a", "b"):
            d = Daemon()
            d.socket = f"{shared_dir}/{name}.sock"
            d.config["receivers"]["socket"]["path"] = d.socket
            d.set_config()
            daemons.append(d.start())
        a, b = daemons
        assert a.control != b.control
        assert _status_pid(str(a.config_path), a.env) == a.proc.pid
        assert _status_pid(str(b.config_path), b.env) == b.proc.pid

        # A third daemon told to use a's control socket refuses to start and leaves a's alone.
        c = Daemon()
        c.set_config(control_socket=a.control)
        daemons.append(c)
        c.start(wait=False)
        assert c.proc.wait(30) != 0
        assert "another shipper daemon answers on" in c.log() and a.control in c.log()
        assert _status_pid(str(a.config_path), a.env) == a.proc.pid
        assert a.stop() == 0 and b.stop() == 0
    finally:
        for d in daemons:
            d.cleanup()
