"""The daemon as a real subprocess: socket and spool intake, malformed input, shutdown, kill -9."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import orjson
from support import EXAMPLES, wait_for

from shipper.testing import send_seqpacket

VALID = (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()
INVALID = (EXAMPLES / "invalid-records.ndjson").read_bytes().splitlines()
REASONS = (EXAMPLES / "invalid-records.reasons").read_text().split()


def make_records(n: int, trace: str = "ab" * 16) -> list[bytes]:
    """`n` small valid records of one trace, span ids 1..n."""
    return [
        orjson.dumps({"trace_id": trace, "span_id": f"{i + 1:016x}", "name": f"s{i}", "start_ns": i, "end_ns": i + 1})
        for i in range(n)
    ]


def test_socket_records_land_in_the_file(daemon_factory) -> None:
    """The example trace sent on the socket lands in the file output, ids and parents intact."""
    daemon = daemon_factory().start()
    send_seqpacket(daemon.socket, [line + b"\n" for line in VALID])
    records = wait_for(lambda: len(daemon.records()) == 5 and daemon.records(), message="5 records")
    sent = [orjson.loads(line) for line in VALID]
    assert [(r["span_id"], r.get("parent_id")) for r in records] == [(r["span_id"], r.get("parent_id")) for r in sent]
    assert all(r["resource"]["process.pid"] == os.getpid() for r in records)
    assert daemon.stop() == 0


def test_malformed_records_counted_and_set_aside(daemon_factory) -> None:
    """Each invalid example, on the socket and in a spool file, is counted by reason; valid ones beside it arrive."""
    daemon = daemon_factory().start()
    mixed = [x for pair in zip(VALID * 2, INVALID) for x in pair]
    # one record per message, and all of them in one message
    send_seqpacket(daemon.socket, [line + b"\n" for line in mixed])
    send_seqpacket(daemon.socket, [b"\n".join(mixed)])
    os.makedirs(daemon.spool, exist_ok=True)
    with open(os.path.join(daemon.spool, "test.1.1.ndjson"), "wb") as f:
        f.write(b"\n".join(mixed) + b"\n")
    expected_valid = 3 * len(INVALID)
    wait_for(lambda: len(daemon.records()) == expected_valid, message="valid records")
    malformed = wait_for(lambda: daemon.status()["pipeline"].get("malformed", {}).get("bad_kind") == 3
                         and daemon.status()["pipeline"]["malformed"])
    assert malformed == {reason: 3 for reason in REASONS}
    assert daemon.status()["dropped"]["malformed"] == 3 * len(INVALID)
    rejected = (daemon.state / "rejected" / "rejected.ndjson").read_bytes().splitlines()
    assert sorted(orjson.loads(r)["reason"] for r in rejected) == sorted(REASONS * 3)
    assert daemon.stop() == 0


def test_spool_files_are_read_and_deleted(daemon_factory) -> None:
    """Records in a finished spool file arrive, and the file is deleted once committed."""
    daemon = daemon_factory()
    os.makedirs(daemon.spool)
    path = os.path.join(daemon.spool, "app.99.1.ndjson")
    with open(path, "wb") as f:
        f.write(b"\n".join(make_records(1000)) + b"\n")
    daemon.start()
    wait_for(lambda: len(daemon.records()) == 1000, message="1000 records")
    wait_for(lambda: not os.path.exists(path), message="the spool file to be deleted")
    assert daemon.stop() == 0


def test_spool_file_of_live_writer_is_kept_and_torn_line_waits(daemon_factory) -> None:
    """A locked spool file is read but not deleted; a half-written line waits for its newline."""
    import fcntl

    daemon = daemon_factory().start()
    os.makedirs(daemon.spool, exist_ok=True)
    path = os.path.join(daemon.spool, "app.98.1.ndjson")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    first, second = make_records(2)
    os.write(fd, first + b"\n" + second[:10])
    wait_for(lambda: len(daemon.records()) == 1, message="the complete line")
    os.write(fd, second[10:] + b"\n")
    wait_for(lambda: len(daemon.records()) == 2, message="the completed second line")
    assert os.path.exists(path)
    os.write(fd, b'{"torn": ')
    os.close(fd)  # the writer is done: the torn tail is malformed, the file goes
    wait_for(lambda: not os.path.exists(path), message="the finished file to be deleted")
    wait_for(lambda: daemon.status()["pipeline"].get("malformed", {}).get("torn_line") == 1)
    assert daemon.stop() == 0


def test_kill_9_while_reading_spool_loses_nothing(daemon_factory) -> None:
    """kill -9 in the middle of a large spool backlog, restart: every record arrives at least once."""
    daemon = daemon_factory()
    os.makedirs(daemon.spool)
    n_files, per_file = 4, 25_000
    expected = set()
    for f in range(n_files):
        records = make_records(per_file, trace=f"{f + 1:032x}")
        expected |= {(f"{f + 1:032x}", f"{i + 1:016x}") for i in range(per_file)}
        with open(os.path.join(daemon.spool, f"app.{f}.1.ndjson"), "wb") as out:
            out.write(b"\n".join(records) + b"\n")
    daemon.start()
    wait_for(lambda: daemon.output.exists() and daemon.output.stat().st_size > 200_000, timeout=30,
             message="some output before the kill")
    daemon.kill()
    partial = len(daemon.records())
    assert partial < n_files * per_file, "the kill came too late to test anything"
    daemon.start()
    wait_for(lambda: {(r["trace_id"], r["span_id"]) for r in daemon.records()} >= expected, timeout=60,
             interval=0.2, message="every record after the restart")
    got = daemon.records()
    duplicates = len(got) - len(expected)
    print(f"kill -9 after {partial} records: {duplicates} duplicates out of {len(got)}")
    wait_for(lambda: not os.listdir(daemon.spool), timeout=20, message="the spool to be emptied")
    assert daemon.stop() == 0


def test_sigterm_flushes_and_exits_zero(daemon_factory) -> None:
    """SIGTERM: what was received is written before exit, and the socket file is removed."""
    daemon = daemon_factory().set_config(batch={"max_delay": "5s", "max_spans": 100000}).start()
    send_seqpacket(daemon.socket, [r + b"\n" for r in make_records(300)])
    wait_for(lambda: daemon.status()["receivers"]["socket"].get("received") == 300)
    assert daemon.records() == []  # still batching: the delay is 5 s
    assert daemon.stop() == 0
    assert len(daemon.records()) == 300
    assert not os.path.exists(daemon.socket)


def test_stale_socket_is_replaced_and_live_one_refused(daemon_factory) -> None:
    """A leftover socket file is replaced; a second daemon on a live socket fails with a clear error."""
    first = daemon_factory()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(first.socket)
    stale.close()  # the file stays, nobody listens
    first.start()
    second = daemon_factory(config=first.config)
    second.start(wait=False)
    assert second.proc.wait(20) == 1
    # refused by whichever it meets first: the live socket, or the exporter queues locked by the first
    assert "another shipper daemon" in second.log() and "Traceback" not in second.log()
    assert first.stop() == 0


def test_status_command_prints_counts(daemon_factory) -> None:
    """`shipper status` reads the running daemon's counts through its control socket."""
    daemon = daemon_factory().start()
    send_seqpacket(daemon.socket, [line + b"\n" for line in VALID] + [b"\n".join(INVALID)])
    wait_for(lambda: len(daemon.records()) == 5)
    wait_for(lambda: daemon.status()["dropped"].get("malformed") == len(INVALID))
    out = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(daemon.config_path)],
                         capture_output=True, text=True, env=daemon.env)
    assert out.returncode == 0, out.stderr
    assert "received 5" in out.stdout
    lines = out.stdout.splitlines()
    assert re.search(r"^receiver socket +listening .* 5 +- +- +- +-$", out.stdout, re.M), out.stdout
    assert re.search(r"^exporter file +idle .* 5 +0 +0 +-$", out.stdout, re.M), out.stdout
    assert re.search(rf"^malformed +{len(INVALID)} +pipeline$", out.stdout, re.M), out.stdout
    assert re.search(r"^  bad_kind +1 +pipeline$", out.stdout, re.M), out.stdout
    assert not re.search(r"\b(None|True|False)\b", out.stdout), out.stdout
    header = next(line for line in lines if line.startswith("COMPONENT"))
    rows = [line for line in lines if line.startswith(("receiver ", "processor ", "exporter "))]
    for column in ("STATE", "QUEUED", "EXPORTED", "LAST ERROR"):  # every row's cells start under the header
        at = header.index(column)
        assert all(row[at - 1] == " " for row in rows), (column, out.stdout)
    as_json = subprocess.run([sys.executable, "-m", "shipper", "status", "--json", "--control", daemon.control],
                             capture_output=True, text=True)
    assert orjson.loads(as_json.stdout)["receivers"]["socket"]["received"] == 5
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(20) == 0
    gone = subprocess.run([sys.executable, "-m", "shipper", "status", "--control", daemon.control],
                          capture_output=True, text=True)
    assert gone.returncode == 1 and "no shipper daemon is running" in gone.stderr


def test_message_over_the_receive_buffer_is_counted_and_neighbours_arrive(daemon_factory) -> None:
    """A message larger than max_message_bytes is rejected as too_large; the connection keeps working."""
    daemon = daemon_factory()
    daemon.config["receivers"]["socket"]["max_message_bytes"] = 8192
    daemon.set_config().start()
    small = make_records(2)
    big = orjson.dumps({"trace_id": "ab" * 16, "span_id": "f" * 16, "name": "big", "start_ns": 1, "end_ns": 2,
                        "input": "x" * 20_000})
    send_seqpacket(daemon.socket, [small[0] + b"\n", big + b"\n", small[1] + b"\n"])
    wait_for(lambda: len(daemon.records()) == 2, message="the two small records")
    assert daemon.status()["pipeline"]["malformed"] == {"too_large": 1}
    assert daemon.status()["receivers"]["socket"]["messages"] == 3
    assert daemon.stop() == 0
