"""The command line tells the truth: --version, help, status tables and --watch, tail filters, emit --wait."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import orjson
import pytest
from support import EXAMPLES, wait_for

from shipper.cli import SUBCOMMANDS
from shipper.testing import make_span, send_seqpacket

VALID = (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()


def shipper(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipper", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_version_names_the_version_python_and_the_config(tmp_path) -> None:
    """`--version` and `-V`: the installed version, the Python, and where the config would be read from."""
    from importlib.metadata import version

    env = {k: v for k, v in os.environ.items() if k != "SHIPPER_CONFIG"}
    out = shipper("--version", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"shipper {version('shipper')}"
    assert lines[1].startswith(f"Python {sys.version.split()[0]} (")
    assert lines[2].startswith("config: the embedded default (") and "default_config.yaml" in lines[2]
    chosen = tmp_path / "mine.yaml"
    short = shipper("-V", env={**env, "SHIPPER_CONFIG": str(chosen)})
    assert short.stdout.splitlines()[2] == f"config: {chosen} (from $SHIPPER_CONFIG; the file does not exist)"


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_help_has_a_description_and_an_example(command: str) -> None:
    """`shipper COMMAND --help` has its one-line description and an example line that starts `shipper`."""
    out = shipper(command, "--help")
    assert out.returncode == 0
    description, _ = SUBCOMMANDS[command]
    assert description in out.stdout
    example = out.stdout.split("example:\n", 1)[1]
    assert example.lstrip().startswith(f"shipper {command}")
    top = shipper("--help").stdout
    assert re.search(rf"^\s+{command}\s+\S", top, re.M), top


def _pty_run(args: list[str], env: dict[str, str], until: int, timeout: float = 30.0) -> str:
    """Run `args` on a pseudo-terminal; return what it printed once `until` screens were drawn."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while seen.count(b"\x1b[2J") < until and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(leader)
    return seen.decode(errors="replace")


def test_status_watch_redraws_on_a_terminal_and_stays_line_oriented_otherwise(daemon_factory) -> None:
    """On a pty each redraw clears the screen; into a pipe each sample is a timestamped block."""
    daemon = daemon_factory().start()
    send_seqpacket(daemon.socket, [b"\n".join(VALID)])
    wait_for(lambda: len(daemon.records()) == 5)
    screen = _pty_run([sys.executable, "-m", "shipper", "status", "--watch", "0.2", "--control", daemon.control],
                      daemon.env, until=4)
    assert screen.count("\x1b[H\x1b[2J") >= 4, screen
    whole = screen.split("\x1b[2J")[-2]  # a screen drawn in full (the last one may be cut where reading stopped)
    assert "COMPONENT" in whole and "exporter file" in whole and "every 0.2s" in whole, whole
    piped = subprocess.Popen([sys.executable, "-m", "shipper", "status", "--watch", "0.2", "--control",
                              daemon.control], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        while sum(1 for line in lines if line.startswith("--- ")) < 2:
            line = piped.stdout.readline()
            assert line, f"status --watch ended: {piped.stderr.read()}"
            lines.append(line)
    finally:
        piped.terminate()
        piped.wait(10)
    assert "\x1b" not in "".join(lines)
    assert re.match(r"--- \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", lines[0].strip())
    as_json = shipper("status", "--json", "--control", daemon.control)
    assert set(orjson.loads(as_json.stdout)) >= {"pid", "receivers", "exporters", "processors", "dropped"}
    assert daemon.stop() == 0


def test_tail_filters_by_service_trace_kind_name_and_errors(daemon_factory) -> None:
    """Each filter keeps only the matching spans; filters combine."""
    daemon = daemon_factory().start()
    watchers = {
        "errors": ["--errors"],
        "llm": ["--kind", "llm"],
        "glob": ["--name", "query_*", "--service", "hinbox"],
        "glob_other": ["--name", "query_*", "--service", "elsewhere"],
        "trace": ["--trace", "0" * 31 + "7"],
        "other": ["--service", "nobody"],
    }
    procs = {key: subprocess.Popen([sys.executable, "-m", "shipper", "tail", "--control", daemon.control, *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for key, args in watchers.items()}
    try:
        wait_for(lambda: daemon.status()["pipeline"]["tail_watchers"] == len(procs), message="the watchers")
        extra = orjson.dumps(make_span(7, 9, name="query_other", service="elsewhere"))
        send_seqpacket(daemon.socket, [b"\n".join(VALID), extra])
        wait_for(lambda: len(daemon.records()) == 6)
    finally:
        daemon.stop()
        outputs = {key: proc.communicate(timeout=20)[0].splitlines() for key, proc in procs.items()}
    assert [line.split()[3] for line in outputs["errors"]] == ["query_agent"]
    assert [line.split()[3] for line in outputs["llm"]] == ["query_llm", "query_llm"]
    assert [line.split()[3] for line in outputs["glob"]] == ["query_llm", "query_llm", "query_embedding", "query_agent"]
    assert [line.split()[3] for line in outputs["glob_other"]] == ["query_other"]
    assert [line.split()[3] for line in outputs["trace"]] == ["query_other"]
    assert outputs["other"] == []


def _refused_to_another_uid(daemon) -> None:
    """A forked child turns into uid 65534 (keeping the socket's group, so it may connect) and asks for raw."""
    from shipper.control import stream_tail
    from shipper.errors import ControlError

    stat = os.stat(daemon.control)
    os.chmod(daemon.root, 0o711)  # another uid may reach the socket (mkdtemp made the directory 0700)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            os.close(read_end)
            signal.alarm(10)  # were raw records streamed to it, it would wait for one: end it anyway
            os.setgid(stat.st_gid)
            os.setuid(65534)
            try:
                next(stream_tail(daemon.control, raw=True))
                message, code = "streamed", 2
            except ControlError as exc:
                message, code = str(exc), 0
            os.write(write_end, message.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        message = answer.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
    assert "only the owner of the control socket (uid 0) may use it; you are uid 65534" in message
    wait_for(lambda: "Refused `tail --raw` to uid 65534" in daemon.log(), message="the refusal in the log")


def test_tail_raw_shows_records_before_processing_to_the_socket_owner_only(daemon_factory) -> None:
    """--raw shows what the redact processor hides, to the control socket's owner; another uid is refused
    (SO_PEERCRED)."""
    daemon = daemon_factory()
    daemon.set_config(processors=[{"type": "redact"}]).start()
    if os.geteuid() == 0:  # a client of another uid can be made only as root
        _refused_to_another_uid(daemon)
    secret = "sk-ant-api03-" + "x" * 30
    raw = subprocess.Popen([sys.executable, "-m", "shipper", "tail", "--raw", "--json", "--control", daemon.control],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cooked = subprocess.Popen([sys.executable, "-m", "shipper", "tail", "--json", "--control", daemon.control],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: daemon.status()["pipeline"]["tail_watchers"] == 2, message="both watchers")
        send_seqpacket(daemon.socket, [orjson.dumps(make_span(3, 1, input=secret))])
        wait_for(lambda: len(daemon.records()) == 1)
    finally:
        daemon.stop()
        raw_out, raw_err = raw.communicate(timeout=20)
        cooked_out, _ = cooked.communicate(timeout=20)
    assert secret in raw_out, raw_err
    assert secret not in cooked_out and "[REDACTED:anthropic_key]" in cooked_out
    assert secret not in daemon.output.read_text()


def test_emit_says_where_the_spans_land_and_waits_until_they_are_there(daemon_factory) -> None:
    """With the daemon up, emit names each exporter and returns once the spans are in the file."""
    daemon = daemon_factory().start()
    out = shipper("emit", "-c", str(daemon.config_path), env=daemon.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"sends them to: exporter file ({daemon.output})" in out.stdout
    trace = re.search(r"trace ([0-9a-f]{32}): 5 spans", out.stdout).group(1)
    assert f"exporter file ({daemon.output}): delivered" in out.stdout
    assert len([r for r in daemon.records() if r["trace_id"] == trace]) == 5  # there already, no waiting here
    assert daemon.stop() == 0
    down = shipper("emit", "-c", str(daemon.config_path), env=daemon.env)
    assert down.returncode == 0
    assert f"no daemon answers at {daemon.control}; once one runs with {daemon.config_path}, it sends them " \
           f"to: exporter file ({daemon.output})" in down.stdout
    assert "written to the spool" in down.stdout and "waiting" not in down.stdout


def test_log_format_json_writes_one_object_per_line(daemon_factory) -> None:
    """`log_format: json`: every log line of the daemon is a JSON object with level, logger and message."""
    daemon = daemon_factory()
    daemon.set_config(log_format="json").start()
    assert daemon.stop() == 0
    lines = [line for line in daemon.log().splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    assert any(e["message"].startswith("shipper is ready: 2 receivers, 1 exporter,") for e in entries)


def test_a_key_that_fails_at_start_names_its_line(daemon_factory) -> None:
    """A port that is taken stops the start, and the error points at the key's file:line:column."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        daemon = daemon_factory()
        daemon.set_config(metrics={"endpoint": f"127.0.0.1:{taken.getsockname()[1]}"}).start(wait=False)
        assert daemon.proc.wait(30) == 1
    finally:
        taken.close()
    lines = daemon.config_path.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.strip() == "metrics:") + 1  # its `endpoint:`
    assert re.search(rf"^{re.escape(str(daemon.config_path))}:{line}:\d+: metrics\.endpoint: cannot listen on ",
                     daemon.log(), re.M), daemon.log()


def test_status_text_takes_any_figures_and_prints_no_reprs() -> None:
    """Figures of any shape (a count where a mapping could be, None, flags, nested partitions) render as
    words; the extra ones are listed under details."""
    from shipper.status_text import render

    status = {
        "pid": 7, "uptime_s": 75.0, "config": None, "state_dir": "/s", "pipeline": {"received": 3},
        "receivers": {"bus": {"received": 3, "inherited": False, "last_error": None,
                              "partitions": {"t/0": {"committed": 5, "lag": None}}}},
        "exporters": {"edge": {"broker": "up", "broker_up": 1, "partitions": 4, "queue_items": 0,
                               "queue_oldest_age_s": None, "exported": 3, "last_error": "503 Service Unavailable"}},
        "processors": {"shared[0].sample": {"dropped": {"sampled": 2}}},
        "dropped": {"sampled": 2},
    }
    text = render(status, None, None)
    assert not re.search(r"\b(None|True|False)\b", text), text
    assert "  receiver bus: inherited no" in text and "    t/0: committed 5, lag -" in text
    assert "exporter edge: broker up, broker_up 1, partitions 4" in text
    assert re.search(r"^exporter edge +active .* 503 Service Unavailable$", text, re.M), text
    assert re.search(r"^sampled +2 +processor shared\[0\]\.sample$", text, re.M), text
