"""`shipper replay FILE`: send dead-lettered records, or file-exporter output, again.

FILE is a dead-letter file (deadletter.py: one line per given-up batch, naming its exporter) or plain
span NDJSON (the `file` exporter's output, a spool file). Where the records go:

- a dead-letter line goes back to the exporter it came from; `--exporter NAME` sends every line to NAME;
  `--all` sends every line to every exporter; plain records need `--exporter` or `--all`;
- **daemon stopped** (its control socket does not answer): the records are appended straight to the
  chosen exporters' durable queues (queue.py; the queue's lock keeps out a daemon starting meanwhile) and
  go out when the daemon starts. They skip the processors: dead letters and file output were processed
  already. A queue that is full keeps what fits (the replay stops counting there and says so);
- **daemon running**: it owns the queues, so the records go through its `unix_socket` receiver, sent with
  blocking writes (backpressure, nothing spooled or cut as the app's non-blocking shim would), and pass
  its processors again on their way to every exporter. So with a running daemon only `--all` is
  accepted: targeting one exporter needs the daemon stopped.

Replay sends records at least once more: a backend that already took some of them may get them twice.
On a terminal it shows records done of the file's total (estimated from the share of lines done, as a
dead letter holds several), the rate and what is left (progress.py); into a pipe or a file it prints
only its summary.
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson

from shipper.config import Config
from shipper.deadletter import read_lines
from shipper.errors import ShipperError
from shipper.progress import Progress
from shipper.stats import Counters

__all__ = ["ReplayError", "replay"]

MESSAGE_BYTES = 512 * 1024


class ReplayError(ShipperError):
    """The replay cannot proceed; the message says why and what to do."""


def _daemon_running(config: Config) -> bool:
    from shipper.control import control_path, request

    try:
        request(control_path(config), "status", timeout=5.0)
    except ShipperError:
        return False
    return True


def _targets(config: Config, source: str | None, exporter: str | None, everyone: bool) -> list[str]:
    names = [spec.name for spec in config.exporters]
    if everyone:
        return names
    target = exporter or source
    if target is None:
        raise ReplayError("these are plain span records, not dead letters: say where they go with "
                          "--exporter NAME or --all")
    if target not in names:
        raise ReplayError(f"no exporter named {target!r} in {config.source} (it has {', '.join(names)}); "
                          "pick one with --exporter NAME")
    return [target]


def count_lines(path: str) -> int:
    """How many lines FILE has (a quick byte count, no parsing): what replay's progress measures by.

    A dead letter holds several records a line, so the records' total is estimated from the share of
    lines done; for plain span NDJSON (one a line) the estimate is exact.
    """
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines, 1)


def replay(config: Config, path: str, exporter: str | None = None, everyone: bool = False,
           progress: str = "off") -> dict[str, int]:
    """Replay FILE per the module docstring; returns spans sent per exporter (`*` for the daemon).

    `progress`: `auto` shows it on stderr when that is a terminal, `on` also as plain lines otherwise.
    """
    if not Path(path).is_file():
        raise ReplayError(f"{path} is not a file")
    if exporter is not None:
        _targets(config, None, exporter, False)  # an unknown name fails before anything is sent
    shown = Progress(f"replay {Path(path).name}", mode=progress)
    lines = count_lines(path) if shown.shown else 1
    try:
        if _daemon_running(config):
            if not everyone:
                raise ReplayError("the daemon is running and owns the exporter queues; replaying through it "
                                  "sends the records to every exporter (add --all for that), or stop it to "
                                  "replay into one exporter")
            return {"*": _through_daemon(config, path, shown, lines)}
        return anyio.run(_into_queues, config, path, exporter, everyone, shown, lines)
    finally:
        shown.close()


async def _into_queues(config: Config, path: str, exporter: str | None, everyone: bool,
                       shown: Progress, lines: int) -> dict[str, int]:
    from dataclasses import replace

    from shipper.queue import DiskQueue
    from shipper.settings import DeliveryConfig
    from shipper.sink import open_queue

    specs = {spec.name: spec for spec in config.exporters}
    queues: dict[str, tuple[DiskQueue, Counters]] = {}
    done: dict[str, int] = {}
    try:
        for line, source, records in read_lines(path):
            for name in _targets(config, source, exporter, everyone):
                if name not in queues:
                    spec = specs[name]
                    delivery = spec.delivery or DeliveryConfig()
                    settings = replace(delivery, queue=replace(delivery.queue, when_full="drop_newest"))
                    counters = Counters()
                    queue = open_queue(name, settings, Path(config.settings.state_dir), counters)
                    await queue.open()
                    queues[name] = (queue, counters)
                queue, counters = queues[name]
                await queue.put(records)
                if counters.dropped:
                    raise ReplayError(f"the queue of exporter {name} is full: {sum(counters.dropped.values())} "
                                      f"spans of {path} line {line} were not queued; {done.get(name, 0)} spans were "
                                      "queued before: start the daemon to drain it, then replay the rest")
                done[name] = done.get(name, 0) + len(records)
            shown.advance(len(records), line / lines)
    finally:
        for queue, _counters in queues.values():
            await queue.aclose()
    return done


def _socket_path(config: Config) -> str:
    for spec in config.receivers:
        if spec.type == "unix_socket":
            return str(spec.config.path)
    raise ReplayError("the running daemon has no unix_socket receiver to replay through; stop it to replay "
                      "straight into the exporter queues")


def _through_daemon(config: Config, path: str, shown: Progress, lines: int) -> int:
    target = _socket_path(config)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = 0
    try:
        sock.connect(target)
        message: list[bytes] = []
        size = 0
        for number, _, records in read_lines(path):
            for record in records:
                line = orjson.dumps(record) + b"\n"
                if message and size + len(line) > MESSAGE_BYTES:
                    sock.send(b"".join(message))  # SOCK_SEQPACKET: the whole message or an error
                    message, size = [], 0
                message.append(line)
                size += len(line)
                sent += 1
            shown.advance(len(records), number / lines)
        if message:
            sock.send(b"".join(message))
    except OSError as exc:
        raise ReplayError(f"cannot send to the daemon's socket {target}: {exc.strerror or exc}; "
                          f"{sent} spans may not have been sent") from exc
    finally:
        sock.close()
    return sent


def summary(done: dict[str, Any]) -> str:
    """One line per target, for the command line."""
    counts = Counter(done)
    if "*" in counts:
        return f"sent {counts['*']} spans to the running daemon (every exporter, through its processors)"
    return "\n".join(f"queued {n} spans for exporter {name}; they go out when the daemon runs"
                     for name, n in sorted(counts.items()))
