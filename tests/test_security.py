"""Security: the uid/gid allow-list on real kernel credentials, secrets kept out of every output, and the
start-time checks of the spool directory and the config file."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from support import Daemon, wait_for

from shipper import logs, security
from shipper.config import parse_config
from shipper.errors import ConfigError
from shipper.security import check_config_file, check_spool_dir, check_startup, secrets_in
from shipper.testing import OTLPServer, Reply, send_seqpacket, short_dir

ROOT = Path(__file__).resolve().parents[1]
REPO_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
SETPRIV = shutil.which("setpriv")
CLIENT_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
SECRETS = {
    "langfuse": "hunter2-langfuse-0042-zeta",
    "braintrust": "hunter2-braintrust-0043-eta",
    "phoenix": "hunter2-phoenix-0044-theta",
    "otlp": "hunter2-otlp-header-0045-iota",
    "env": "hunter2-from-env-0046-kappa",
}


def record(i: int) -> bytes:
    return orjson.dumps({"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "name": f"span-{i}",
                         "start_ns": 1, "end_ns": 2})


def send_as(uid: int, gid: int, path: str, payload: bytes) -> subprocess.CompletedProcess[bytes]:
    """Connect and send one message from a process running as uid:gid (real kernel credentials)."""
    code = ("import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); "
            "s.connect(sys.argv[1]); s.send(sys.argv[2].encode())")
    assert SETPRIV is not None
    return subprocess.run([SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", CLIENT_PYTHON, "-c",
                           code, path, payload.decode()], capture_output=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to run a client "
                    "under another uid")
def test_allow_list_refuses_other_uids_by_kernel_credentials(daemon_factory) -> None:
    """allowed_uids/allowed_gids are checked with SO_PEERCRED: uid 65534 is refused unless its gid is allowed."""
    daemon: Daemon = daemon_factory(env=REPO_ENV)
    os.chmod(daemon.root, 0o755)  # let the other uid reach the socket file
    config = daemon.default_config()
    config["receivers"]["socket"].update(mode="0666", allowed_uids=[0], allowed_gids=[12345])
    daemon.set_config(**config).start()

    refused = send_as(65534, 65534, daemon.socket, record(1))
    assert refused.returncode == 0 or b"Broken pipe" in refused.stderr, refused.stderr
    wait_for(lambda: daemon.status()["receivers"]["socket"].get("refused") == 1, message="one refusal counted")
    assert "Refused a sender with uid 65534 gid 65534" in daemon.log()

    allowed_by_gid = send_as(65534, 12345, daemon.socket, record(2))
    assert allowed_by_gid.returncode == 0, allowed_by_gid.stderr
    send_seqpacket(daemon.socket, [record(3)])  # uid 0 is on the list
    wait_for(lambda: len(daemon.records()) == 2, message="the two allowed spans")
    got = {r["name"]: r["resource"]["process.real_user.id"] for r in daemon.records()}
    assert got == {"span-2": 65534, "span-3": 0}
    assert daemon.status()["receivers"]["socket"]["refused"] == 1
    assert daemon.stop() == 0


def secret_config(daemon: Daemon, url: str) -> dict:
    config = daemon.default_config()
    fast = {"retry": {"initial_interval": "10ms", "max_interval": "50ms"}, "batch": {"max_delay": "10ms"}}
    config["log_level"] = "debug"
    config["exporters"].update({
        "langfuse": {"type": "langfuse", "host": url, "public_key": "pk-public",
                     "secret_key": SECRETS["langfuse"], **fast},
        "braintrust": {"type": "braintrust", "api_url": url, "api_key": SECRETS["braintrust"], **fast},
        "phoenix": {"type": "phoenix", "endpoint": url, "api_key": SECRETS["phoenix"], **fast},
        "otlp": {"type": "otlp_http", "endpoint": url, **fast,
                 "headers": {"Authorization": f"Bearer {SECRETS['otlp']}", "X-Other": "${SHIPPER_TEST_TOKEN}"}},
    })
    return config


def test_secrets_never_appear_in_logs_status_or_check(daemon_factory) -> None:
    """A run whose config holds secrets, with a backend echoing them back: log, status, check, dead letters show none."""
    echo = " ".join(SECRETS.values())
    replies = [Reply.status(400, body=f"bad request: {echo}")] * 4
    with OTLPServer(*replies, default=Reply.status(401, body=f"invalid credentials {echo}")) as server:
        daemon: Daemon = daemon_factory(env={**REPO_ENV, "SHIPPER_TEST_TOKEN": SECRETS["env"]})
        daemon.set_config(**secret_config(daemon, server.url)).start()
        send_seqpacket(daemon.socket, [record(i) for i in range(1, 4)])  # 400: dead-lettered
        wait_for(lambda: len(server.requests) >= 4, message="one request per backend")
        send_seqpacket(daemon.socket, [record(i) for i in range(4, 7)])  # 401: retried
        wait_for(lambda: len(server.requests) >= 12, timeout=20, message="the backend to be tried and retried")
        assert any(SECRETS["otlp"] in (r.header("authorization") or "") for r in server.requests)

        outputs = {}
        for args in (["status"], ["status", "--json"], ["check", "-c", str(daemon.config_path)]):
            done = subprocess.run([sys.executable, "-m", "shipper", *args, "--control", daemon.control]
                                  if args[0] == "status" else [sys.executable, "-m", "shipper", *args],
                                  capture_output=True, env=daemon.env, timeout=30)
            assert done.returncode == 0, done.stderr
            outputs[" ".join(args)] = (done.stdout + done.stderr).decode()
        assert "last_error" in outputs["status --json"] or "401" in outputs["status --json"]
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Reloaded" in daemon.log(), message="the reload")
        assert daemon.stop() == 0
        outputs["log"] = daemon.log()
        dead = sorted((daemon.state / "deadletter").glob("*.ndjson"))
        assert dead, "the 400 answers were dead-lettered"
        for path in dead:
            outputs[f"dead letters {path.name}"] = path.read_text()
    assert "401" in outputs["log"] and "invalid credentials" in outputs["log"]
    for where, text in outputs.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"the {name} secret leaked into {where}"


def test_log_lines_scrub_registered_secrets_and_stay_one_line() -> None:
    """The formatter replaces registered secrets by *** (tracebacks too) and joins lines with ' | '."""
    stream = io.StringIO()
    handler = logs.configure("info", stream=stream)
    try:
        security.remember(["s3cret-value-1", "ab", "Bearer t0ken-in-a-header"])
        log = logging.getLogger("shipper.test")
        log.error("Backend said %s\nsecond line", "no: s3cret-value-1 t0ken-in-a-header ab")
        try:
            raise ValueError("boom s3cret-value-1")
        except ValueError:
            log.exception("Failed")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 2
        assert "s3cret-value-1" not in stream.getvalue()
        assert lines[0].endswith("Backend said no: *** *** ab | second line")
        assert "Traceback (most recent call last): | " in lines[1] and "ValueError: boom ***" in lines[1]
    finally:
        logging.getLogger().removeHandler(handler)


def test_repeated_messages_are_rate_limited_and_counted() -> None:
    """Messages differing only in numbers pass once per interval; the next to pass says how many were held."""
    stream = io.StringIO()
    handler = logs.configure("info", interval=3600, stream=stream)
    try:
        log = logging.getLogger("shipper.test.repeats")
        for pid in range(100, 150):
            log.warning("Refused a sender with uid 65534 (pid %d).", pid)
        log.warning("Another message.")
        assert stream.getvalue().count("Refused a sender") == 1
        assert "Another message." in stream.getvalue()
        logs.flush()
        assert "49 similar messages were suppressed before exit." in stream.getvalue()
        filt = logs.RepeatFilter(interval=0)
        rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "same %d", (1,), None)
        assert filt.filter(rec) and filt.filter(rec)  # interval 0: nothing held
    finally:
        logging.getLogger().removeHandler(handler)


def test_journal_lines_carry_syslog_priority(monkeypatch) -> None:
    """Under systemd ($JOURNAL_STREAM naming stderr) lines start with <priority> and carry no timestamp."""
    work = short_dir("jrn")
    try:
        with open(os.path.join(work, "log"), "w+") as stream:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            handler = logs.configure("debug", stream=stream)
            try:
                logging.getLogger("shipper.j").warning("careful")
                logging.getLogger("shipper.j").error("broken")
                stream.flush()
                stream.seek(0)
                assert stream.read().splitlines() == ["<4>shipper.j: careful", "<3>shipper.j: broken"]
            finally:
                logging.getLogger().removeHandler(handler)
    finally:
        shutil.rmtree(work, ignore_errors=True)


CONFIG_WITH_SECRET = """
receivers: {s: {type: spool, dir: /tmp/x}}
exporters:
  bt: {type: braintrust, api_key: "%s"}
"""


def test_world_readable_config_holding_a_secret_is_warned_about(tmp_path, monkeypatch) -> None:
    """Mode o+r and a literal secret: a warning naming the key, not the value; 0640 or ${VAR}: none."""
    path = tmp_path / "shipper.yaml"
    path.write_text(CONFIG_WITH_SECRET % SECRETS["braintrust"])
    config = parse_config(path.read_text(), str(path))
    assert [key for key, _ in secrets_in(config)] == ["exporters.bt.api_key"]
    os.chmod(path, 0o644)
    (warning,) = check_config_file(path, config)
    assert "mode 0644" in warning and "exporters.bt.api_key" in warning and SECRETS["braintrust"] not in warning
    os.chmod(path, 0o640)
    assert check_config_file(path, config) == []
    os.chmod(path, 0o644)
    monkeypatch.setenv("BT_KEY", SECRETS["braintrust"])
    path.write_text(CONFIG_WITH_SECRET % "${BT_KEY}")
    assert check_config_file(path, parse_config(path.read_text(), str(path))) == []


def test_daemon_logs_the_readable_config_warning(daemon_factory) -> None:
    """The daemon warns at start about a world-readable config file with a secret in it, then runs."""
    daemon: Daemon = daemon_factory(env=REPO_ENV)
    config = daemon.default_config()
    config["exporters"]["bt"] = {"type": "braintrust", "api_url": "http://127.0.0.1:9", "api_key": "k3y-" + "x" * 20}
    daemon.set_config(**config)
    os.chmod(daemon.config_path, 0o644)
    daemon.start()
    assert "every user on this machine can read this file (mode 0644)" in daemon.log()
    assert "k3y-" + "x" * 20 not in daemon.log()
    assert daemon.stop() == 0


def test_spool_dir_checks_explain_what_to_do() -> None:
    """A file, a world-writable directory without sticky bit, an uncreatable path: each a clear problem."""
    work = short_dir("spl")
    try:
        plain = os.path.join(work, "file")
        Path(plain).write_text("")
        assert "is not a directory" in check_spool_dir(plain, "receivers.spool.dir")[0]
        open_dir = os.path.join(work, "open")
        os.mkdir(open_dir)
        os.chmod(open_dir, 0o777)
        (problem,) = check_spool_dir(open_dir, "receivers.spool.dir")
        assert problem.startswith("receivers.spool.dir: ") and "chmod 3770" in problem
        os.chmod(open_dir, 0o1777)
        assert check_spool_dir(open_dir, "receivers.spool.dir") == []
        os.chmod(open_dir, 0o3770)
        assert check_spool_dir(open_dir, "receivers.spool.dir") == []
        assert check_spool_dir(os.path.join(work, "new", "spool"), "x") == []  # creatable
        if os.geteuid() != 0:
            assert "cannot create it" in check_spool_dir("/proc/nope/spool", "x")[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_daemon_refuses_a_world_writable_spool_dir(daemon_factory) -> None:
    """Start with a world-writable, non-sticky spool dir: exit 1 with the key path and the fix."""
    daemon: Daemon = daemon_factory(env=REPO_ENV)
    os.makedirs(daemon.spool)
    os.chmod(daemon.spool, 0o777)
    daemon.start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(30) == 1
    assert "receivers.spool.dir: " in daemon.log() and "chmod 3770" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_check_startup_raises_config_error_with_the_file_name(tmp_path) -> None:
    """check_startup prefixes each problem with the config's source."""
    bad = tmp_path / "spool"
    bad.write_text("")
    config = parse_config(yaml.safe_dump({"receivers": {"s": {"type": "spool", "dir": str(bad)}},
                                          "exporters": {"f": {"type": "file"}}}), "cfg.yaml")
    with pytest.raises(ConfigError) as err:
        check_startup(config, None)
    assert re.match(r"cfg\.yaml:\d+:\d+: receivers\.s\.dir: ", err.value.problems[0]), err.value.problems
    assert stat.S_ISREG(os.stat(bad).st_mode)
