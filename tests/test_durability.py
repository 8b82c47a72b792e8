"""Durability with real parts: the daemon as a subprocess, a real OTLP/HTTP backend, kill -9, outages."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import Daemon, wait_for

from shipper.segment import HEADER, read_records
from shipper.testing import OTLPServer, Reply, make_span, send_seqpacket


def backend_config(daemon: Daemon, url: str, **exporter: Any) -> Daemon:
    """The daemon's socket receiver, one `otlp_http` exporter named `backend` at `url`."""
    settings = {"type": "otlp_http", "endpoint": url,
                "retry": {"initial_interval": "50ms", "max_interval": "500ms"},
                "batch": {"max_spans": 100, "max_delay": "50ms"}}
    settings.update(exporter)
    return daemon.set_config(receivers={"socket": {"type": "unix_socket", "path": daemon.socket}},
                             exporters={"backend": settings})


def lines(first: int, n: int, pad: int = 0) -> list[bytes]:
    """`n` records as NDJSON lines, span ids first+1..first+n, each with `pad` bytes of input."""
    return [orjson.dumps(make_span(trace=1 + i // 50, span=i + 1, name=f"s{i}", input="x" * pad)) + b"\n"
            for i in range(first, first + n)]


def unique_ids(server: OTLPServer) -> set[str]:
    return {s["span_id"] for s in server.spans()}


def expected_ids(first: int, n: int) -> set[str]:
    return {f"{i + 1:016x}" for i in range(first, first + n)}


def exporter_status(daemon: Daemon, name: str = "backend") -> dict[str, Any]:
    return daemon.status()["exporters"][name]


def restart(daemon: Daemon) -> None:
    """Start the daemon again and wait for this run's own "ready" line (the log keeps the last run's)."""
    runs = daemon.log().count("shipper is ready")
    daemon.start(wait=False)
    wait_for(lambda: daemon.proc.poll() is None and daemon.log().count("shipper is ready") > runs,
             timeout=20, message="the restarted daemon to be ready")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_kill_9_while_exporting_then_restart_delivers_everything(daemon_factory) -> None:
    """kill -9 mid-export to a slow backend, then a restart: every span queued arrives at least once."""
    with OTLPServer(default=Reply.hang(1.0)) as server:
        daemon = backend_config(daemon_factory(), server.url).start()
        send_seqpacket(daemon.socket, [b"".join(lines(i, 50)) for i in range(0, 2000, 50)])
        wait_for(lambda: exporter_status(daemon).get("queued") == 2000, message="2000 spans queued")
        server.wait_for_requests(3, timeout=20)
        daemon.kill()
        before = len(unique_ids(server))
        assert before < 2000  # the kill came mid-way
        server.default = Reply.ok()
        restart(daemon)
        wait_for(lambda: unique_ids(server) >= expected_ids(0, 2000), timeout=30,
                 message="every span to arrive after the restart")
        assert exporter_status(daemon)["queue_items"] == 0
        assert daemon.stop() == 0


def test_a_dead_backend_does_not_stall_another_exporter(daemon_factory) -> None:
    """Fan-out: one backend down, the file exporter still gets everything; status shows the dead one's queue."""
    with OTLPServer(default=Reply.status(503, "maintenance")) as server:
        daemon = backend_config(daemon_factory(), server.url)
        daemon.config["exporters"]["file"] = {"type": "file", "batch": {"max_delay": "50ms"}}
        daemon.set_config().start()
        send_seqpacket(daemon.socket, [b"".join(lines(i, 50)) for i in range(0, 500, 50)])
        wait_for(lambda: len(daemon.records()) == 500, message="the file exporter to write every span")
        dead = wait_for(lambda: (s := exporter_status(daemon)).get("retried", 0) >= 2 and s)
        assert dead["queue_items"] == 500 and dead["queue_bytes"] > 0
        assert dead["queue_oldest_age_s"] >= 0 and dead["state"] in ("backing_off", "exporting")
        assert "503" in dead["last_error"] and "maintenance" in dead["last_error"]
        assert exporter_status(daemon, "file")["exported"] == 500
        out = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(daemon.config_path)],
                             capture_output=True, text=True, env=daemon.env, timeout=20)
        assert out.returncode == 0, out.stderr
        row = next(line for line in out.stdout.splitlines() if line.startswith("exporter backend "))
        cells = row.split()  # COMPONENT(2) STATE IN/S OUT/S DROP/S QUEUED OLDEST RECEIVED EXPORTED RETRIED DEAD ...
        assert cells[2] in ("backing_off", "exporting") and cells[6] == "500" and cells[9] == "0", row
        assert int(cells[10]) >= 2 and "503" in row and "maintenance" in row, row
        assert daemon.stop() == 0


def test_corrupted_segment_is_recovered_at_start_with_a_count(daemon_factory) -> None:
    """Flipped bytes and a cut tail in a queue segment: the restarted daemon counts them and delivers the rest."""
    with OTLPServer(default=Reply.status(503)) as server:
        daemon = backend_config(daemon_factory(), server.url).start()
        for k in range(3):  # three separate records
            send_seqpacket(daemon.socket, [b"".join(lines(10 * k, 10))])
            wait_for(lambda k=k: exporter_status(daemon).get("queued") == 10 * (k + 1))
        assert daemon.stop() == 0
        segment = sorted((daemon.state / "queues" / "backend").glob("*.seg"))[0]
        offsets = [offset for offset, _, _ in read_records(segment)]
        assert len(offsets) == 3
        data = bytearray(segment.read_bytes())
        data[offsets[1] + HEADER.size + 10] ^= 0x55  # flip bytes in the second record
        segment.write_bytes(bytes(data[:-9]))  # and cut the third one short
        server.default = Reply.ok()
        restart(daemon)
        wait_for(lambda: unique_ids(server) >= expected_ids(0, 10), message="the intact record to arrive")
        status = exporter_status(daemon)
        assert status["queue_corrupt_records"] == 1 and status["queue_torn_bytes"] > 0
        assert status["dropped"]["corrupt"] == 1
        assert "Recovered queue" in daemon.log()
        assert daemon.stop() == 0


def test_replay_sends_a_dead_letter_file_again(daemon_factory) -> None:
    """A 400 dead-letters a batch; `shipper replay` queues it while the daemon is stopped; it goes out on start."""
    with OTLPServer(Reply.status(400, "schema mismatch")) as server:
        daemon = backend_config(daemon_factory(), server.url).start()
        send_seqpacket(daemon.socket, [b"".join(lines(0, 20))])
        wait_for(lambda: exporter_status(daemon).get("dead_lettered") == 20)
        assert daemon.stop() == 0
        letters = daemon.state / "deadletter" / "backend.ndjson"
        [letter] = [orjson.loads(line) for line in letters.read_bytes().splitlines()]
        assert letter["reason"] == "rejected_by_backend" and "schema mismatch" in letter["excerpt"]
        replay = [sys.executable, "-m", "shipper", "replay", str(letters), "-c", str(daemon.config_path)]
        out = subprocess.run(replay, capture_output=True, text=True, env=daemon.env, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "queued 20 spans for exporter backend" in out.stdout
        restart(daemon)
        wait_for(lambda: unique_ids(server) >= expected_ids(0, 20), message="the replayed spans to arrive")
        # with the daemon running, a targeted replay is refused; --all goes through its socket
        refused = subprocess.run(replay, capture_output=True, text=True, env=daemon.env, timeout=30)
        assert refused.returncode == 1 and "--all" in refused.stderr
        server.clear()
        out = subprocess.run([*replay, "--all"], capture_output=True, text=True, env=daemon.env, timeout=30)
        assert out.returncode == 0 and "sent 20 spans to the running daemon" in out.stdout
        wait_for(lambda: unique_ids(server) >= expected_ids(0, 20), message="spans replayed through the socket")
        assert daemon.stop() == 0


def test_replay_of_plain_records_needs_a_target(daemon_factory, tmp_path: Path) -> None:
    """Plain span NDJSON (file output) says nothing about its exporter: replay asks for --exporter or --all."""
    daemon = backend_config(daemon_factory(), "http://127.0.0.1:9")
    daemon.set_config()
    archive = tmp_path / "spans.ndjson"
    archive.write_bytes(b"".join(lines(0, 3)))
    base = [sys.executable, "-m", "shipper", "replay", str(archive), "-c", str(daemon.config_path)]
    out = subprocess.run(base, capture_output=True, text=True, env=daemon.env, timeout=30)
    assert out.returncode == 1 and "--exporter NAME or --all" in out.stderr
    out = subprocess.run([*base, "--exporter", "backend"], capture_output=True, text=True, env=daemon.env,
                         timeout=30)
    assert out.returncode == 0 and "queued 3 spans" in out.stdout


class Gate:
    """A port on 127.0.0.1 that refuses connections until `open()`, then forwards them to `target`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def open(self) -> None:
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_refused_connections_then_the_backend_comes_up(daemon_factory) -> None:
    """A backend that refuses connections is retried; once it listens, every queued span arrives."""
    with OTLPServer() as server:
        gate = Gate(server.port)
        try:
            daemon = backend_config(daemon_factory(), gate.url).start()
            send_seqpacket(daemon.socket, [b"".join(lines(i, 50)) for i in range(0, 300, 50)])
            failing = wait_for(lambda: (s := exporter_status(daemon)).get("retried", 0) >= 3 and s)
            assert "could not be reached" in failing["last_error"] and failing["queue_items"] == 300
            gate.open()
            wait_for(lambda: unique_ids(server) >= expected_ids(0, 300), timeout=20,
                     message="every span to arrive once the backend listens")
            assert daemon.stop() == 0
        finally:
            gate.close()


def test_when_full_block_holds_everything_back_and_loses_nothing(daemon_factory) -> None:
    """`when_full: block` with a dead backend stalls the pipeline (the other exporter waits too, as
    documented); once the backend is back, every span reaches both exporters."""
    with OTLPServer(default=Reply.status(503)) as server:
        daemon = backend_config(daemon_factory(), server.url,
                                queue={"max_bytes": "64KiB", "when_full": "block"})
        daemon.config["exporters"]["file"] = {"type": "file", "batch": {"max_delay": "20ms"}}
        daemon.set_config(batch={"max_spans": 20, "max_delay": "20ms"}).start()
        sender = threading.Thread(target=send_seqpacket,
                                  args=(daemon.socket, [b"".join(lines(i, 10, 1000)) for i in range(0, 300, 10)]))
        sender.start()
        blocked = wait_for(lambda: (s := exporter_status(daemon)).get("queue_blocked", 0) > 0 and s)
        assert blocked["queue_bytes"] <= 64 * 1024 and not blocked.get("dropped")
        held = len(daemon.records())
        assert held < 300
        server.default = Reply.ok()
        sender.join(30)
        wait_for(lambda: unique_ids(server) >= expected_ids(0, 300), timeout=30, message="the backend to get all")
        wait_for(lambda: len(daemon.records()) == 300, message="the file exporter to get all")
        assert daemon.stop() == 0


@pytest.mark.slow
def test_sixty_second_outage_loses_nothing_and_memory_stays_bounded(daemon_factory) -> None:
    """60 s of 503 while spans keep coming: afterwards all arrive, and the daemon's RSS stays bounded."""
    rate, pad, seconds = 200, 2000, 60  # 200 spans/s of ~2.2 KB: ~26 MB queued during the outage
    with OTLPServer(default=Reply.status(503, "outage")) as server:
        daemon = backend_config(daemon_factory(), server.url,
                                retry={"initial_interval": "100ms", "max_interval": "2s"}).start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        baseline = rss_bytes(pid)
        samples: list[int] = []
        sent = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(daemon.socket)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append(rss_bytes(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        try:
            for tick in range(seconds * 10):  # a message of rate/10 spans every 100 ms
                sock.send(b"".join(lines(sent, rate // 10, pad)))
                sent += rate // 10
                pause = start + (tick + 1) * 0.1 - time.monotonic()
                if pause > 0:
                    stop.wait(pause)
            during = exporter_status(daemon)
            assert during["queue_items"] > 0.9 * sent and during["retried"] > 5
            server.default = Reply.ok()
            wait_for(lambda: unique_ids(server) >= expected_ids(0, sent), timeout=60,
                     message="every span sent during the outage to arrive")
        finally:
            stop.set()
            sampler.join()
            sock.close()
        peak = max(samples)
        print(f"\noutage: {sent} spans ({sent * (pad + 150) / 1e6:.0f} MB) over {seconds}s; daemon RSS "
              f"{baseline / 2**20:.1f} MiB at start, peak {peak / 2**20:.1f} MiB, queue peaked at "
              f"{during['queue_bytes'] / 2**20:.1f} MiB on disk")
        assert peak < baseline + 80 * 2**20, f"RSS grew from {baseline} to {peak}"
        assert daemon.stop() == 0
