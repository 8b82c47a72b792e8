"""The daemon-as-a-subprocess harness of this test suite; the shared helpers are in `shipper.testing`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from shipper.testing import (  # the shared helpers live in shipper.testing; these tests use them by these names
    read_ndjson,
    short_dir,
    wait_until,
)

EXAMPLES = Path(__file__).resolve().parent / "examples"  # example records (docs/record.md)


class Daemon:
    """`python -m shipper run -c CONFIG` in a subprocess, in a directory of its own under /tmp."""

    def __init__(self, config: dict[str, Any] | None = None, root: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.root = Path(root or short_dir())
        self.socket = str(self.root / "s.sock")
        self.spool = str(self.root / "spool")
        self.state = self.root / "state"
        self.embedded = config == "embedded"  # run with no -c: the embedded default, paths from the env
        self.config = self.default_config() if config is None or self.embedded else config
        self.config_path = self.root / "shipper.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = self.root / "daemon.log"
        self.env = {**os.environ, "SHIPPER_SOCKET": self.socket, "SHIPPER_SPOOL_DIR": self.spool,
                    "SHIPPER_STATE_DIR": str(self.state), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def set_config(self, **changes: Any) -> Daemon:
        """Change top-level keys of the config and rewrite the file (a running daemon sees it on reload)."""
        self.config.update(changes)
        self.config_path.write_text(yaml.safe_dump(self.config))
        return self

    def default_config(self) -> dict[str, Any]:
        """Socket and spool receivers in this daemon's directory, a file exporter."""
        return {
            "state_dir": str(self.state),
            "receivers": {
                "socket": {"type": "unix_socket", "path": self.socket},
                "spool": {"type": "spool", "dir": self.spool, "poll_interval": "50ms"},
            },
            # short batch delays (not the 200 ms / 1 s defaults): a test waits for its records, not for timers
            "exporters": {"file": {"type": "file", "batch": {"max_delay": "20ms"}}},
            "batch": {"max_delay": "20ms"},
        }

    @property
    def output(self) -> Path:
        return self.state / "spans" / "spans.ndjson"

    @property
    def control(self) -> str:
        """This daemon's control socket, as the daemon derives it from its config."""
        if self.embedded:
            return self.socket[:-5] + ".control.sock"
        if self.config.get("control_socket"):
            return str(self.config["control_socket"])
        for spec in (self.config.get("receivers") or {}).values():
            if isinstance(spec, dict) and spec.get("type") == "unix_socket":
                path = str(spec.get("path", self.socket))
                return (path[:-5] if path.endswith(".sock") else path) + ".control.sock"
        return str(Path(self.config.get("state_dir", self.state)) / "control.sock")

    def start(self, wait: bool = True) -> Daemon:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shipper", "run", *([] if self.embedded else ["-c", str(self.config_path)])],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.root),
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def start_socket_activated(self) -> Daemon:
        """Start as systemd would with socket activation: the socket bound and listening here, handed to
        the daemon as fd 3 with LISTEN_PID (the child names itself, then execs: same pid) and LISTEN_FDS."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.socket)
        listener.listen(16)
        fd = listener.fileno()
        launcher = (f"import os, sys; os.dup2({fd}, 3); os.close({fd}) if {fd} != 3 else None; "
                    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='socket'); "
                    "os.execv(sys.executable, [sys.executable, '-m', 'shipper', 'run', '-c', sys.argv[1]])")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", launcher, str(self.config_path)], pass_fds=(fd,),
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.root))
        listener.close()  # the daemon holds its own copy now
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            return "shipper is ready" in self.log()
        wait_for(ready, timeout, message="the daemon to be ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        from shipper.control import request

        return request(self.control, "status")["status"]

    def records(self) -> list[dict[str, Any]]:
        return read_ndjson(self.output)

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """`shipper.testing.wait_until` under the name these tests use."""
    return wait_until(condition, timeout, interval, message)


def wait_records(daemon: Daemon, count: int, timeout: float = 20.0, **match: Any) -> list[dict[str, Any]]:
    """Wait until the daemon's file output holds `count` records whose fields equal `match`; return them."""
    def found() -> list[dict[str, Any]]:
        records = [r for r in daemon.records() if all(r.get(k) == v for k, v in match.items())]
        return records if len(records) >= count else []
    return wait_for(found, timeout, message=f"{count} records matching {match}")
