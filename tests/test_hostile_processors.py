"""Issue 10 item 10: a processor that raises never ends the daemon (real daemon subprocess, real socket).

The buggy processor is a real class registered under a new type name in the daemon process itself
(the daemon is started through a two-line runner that adds it to the registry), so the daemon's own
chain, pipeline and dead-letter code handle its exception exactly as they would a bug in a built-in.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from support import Daemon, wait_records

from shipper.testing import send_seqpacket

BOOM = '''
from dataclasses import dataclass


@dataclass
class BoomConfig:
    pass


class Boom:
    """Raises on a record named "poison" (a bug that only some input triggers); passes the rest."""

    Config = BoomConfig

    def __init__(self, config, ctx):
        self.ctx = ctx

    def __call__(self, batch):
        for record in batch:
            if record.get("name") == "poison":
                raise ValueError("boom: cannot handle " + record["span_id"])
        return batch
'''

RUNNER = '''
import sys
from shipper import registry
registry.REGISTRY["processors"]["boom"] = "boomproc:Boom"
from shipper.cli import main
raise SystemExit(main(sys.argv[1:]))
'''


class BoomDaemon(Daemon):
    """A real daemon whose registry also knows the `boom` processor."""

    def start(self, wait: bool = True) -> Daemon:
        (self.root / "boomproc.py").write_text(BOOM)
        runner = self.root / "run_boom.py"
        runner.write_text(RUNNER)
        self.env["PYTHONPATH"] = f"{self.root}:{self.env.get('PYTHONPATH', '')}"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(runner), "run", "-c", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.root))
        log.close()
        if wait:
            self.wait_ready()
        return self


def _record(i: int, name: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"v": 1, "trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "name": name,
            "start_ns": 1_000, "end_ns": 2_000, **extra}


@pytest.fixture
def daemon():
    d = BoomDaemon()
    d.config["processors"] = [{"type": "boom"}, {"type": "redact"}]
    d.set_config()
    yield d
    d.cleanup()


def test_a_raising_processor_dead_letters_only_what_it_fails_on_and_the_daemon_keeps_running(daemon):
    daemon.start()
    secret = "sk-proj-" + "A1b2C3d4" * 4
    batch = [_record(i) for i in range(10)]
    batch.insert(5, _record(100, "poison", attributes={"prompt": f"my key is {secret}"}))
    send_seqpacket(daemon.socket, [b"\n".join(orjson.dumps(r) for r in batch)])
    got = wait_records(daemon, 10, name="ok")
    assert len({r["span_id"] for r in got}) == 10
    assert daemon.proc is not None and daemon.proc.poll() is None

    # A second poisonous batch: counted again, logged only once, the daemon still delivers.
    send_seqpacket(daemon.socket, [orjson.dumps(_record(200, "poison")), orjson.dumps(_record(300))])
    wait_records(daemon, 11, name="ok")
    status = daemon.status()
    figures = status["processors"]["shared[0].boom"]
    assert figures["dropped"]["processor_error"] == 2
    assert figures["errors"] == 2
    assert status["dropped"]["processor_error"] == 2
    assert not [r for r in daemon.records() if r["name"] == "poison"]

    letters = [orjson.loads(line) for line in
               (daemon.state / "deadletter" / "processors.ndjson").read_bytes().splitlines()]
    assert [len(letter["records"]) for letter in letters] == [1, 1]
    assert all(letter["reason"] == "processor_error" for letter in letters)
    assert "shared[0].boom" in letters[0]["error"]
    first = letters[0]["records"][0]
    assert first["span_id"] == f"{101:016x}"
    assert secret not in orjson.dumps(letters).decode()  # the default redaction masked it at rest
    log = daemon.log()
    assert log.count("Processor shared[0].boom raised") == 1
    assert secret not in log
    assert daemon.stop() == 0
