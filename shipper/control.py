"""The control socket: how `shipper status` and `shipper reload` reach the running daemon.

A SOCK_STREAM Unix socket (mode 0660) of this daemon's own, named after its data socket
(`shipper.sock` -> `shipper.control.sock`, see `control_path`); a daemon refuses to start on a
control socket another live daemon answers on, so `shipper status -c FILE` always reaches FILE's daemon. One request per connection: a JSON line
`{"command": "status" | "reload"}`; one JSON answer: `{"ok": true, ...}` or `{"ok": false, "problems": [...]}`.
`{"command": "tail"}` instead keeps the connection open and streams every processed span as an NDJSON
line until the client goes (`"raw": true`: as received, before the processors; the socket owner only); a watcher that cannot keep up misses spans (counted, `tail_lagged`), the
pipeline never waits for it.
Status carries counts and figures only, never configuration values; every answer also goes through
`security.redact`, so a secret echoed into an error text (`last_error`) leaves as `***`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shipper.errors import ConfigError, ControlError
from shipper.security import redact

if TYPE_CHECKING:
    from shipper.config import Config
    from shipper.pipeline import Pipeline

__all__ = ["ControlServer", "control_path", "install", "request", "stream_tail"]

log = logging.getLogger("shipper.control")

MAX_REQUEST = 64 * 1024


class ControlServer:
    """Answers status and reload requests for one pipeline."""

    def __init__(self, path: str, pipeline: Pipeline) -> None:
        self.path = path
        self.pipeline = pipeline
        self._listener: Any = None

    async def open(self) -> None:
        """Bind the control socket, replacing a stale one; refuse one a live daemon answers on."""
        import stat

        import anyio

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise ConfigError([f"control_socket: {self.path} exists and is not a socket; remove it or "
                                   "set control_socket to another path"])
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(2.0)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # stale: nobody answers
            else:
                raise ConfigError([f"control_socket: another shipper daemon answers on {self.path}; stop it, "
                                   "or give this daemon its own data socket path or control_socket"])
            finally:
                probe.close()
        try:
            self._listener = await anyio.create_unix_listener(self.path, mode=0o660)
        except OSError as exc:
            raise ConfigError([f"control_socket: cannot listen on {self.path}: {exc.strerror or exc}"]) from exc

    async def serve(self) -> None:
        """Answer requests until cancelled; a failed accept (EMFILE) backs off, never ends the daemon."""
        import anyio

        if self._listener is None:
            return
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await self._listener.accept()
                except (OSError, anyio.BrokenResourceError) as caught:  # anyio wraps EMFILE for Unix sockets
                    exc = caught if isinstance(caught, OSError) else caught.__cause__
                    if not isinstance(exc, OSError):
                        raise
                    log.warning("Cannot accept on the control socket %s: %s; retrying.", self.path,
                                exc.strerror or exc)
                    await anyio.sleep(0.5)
                    continue
                tg.start_soon(self._handle, stream)

    async def _handle(self, stream: Any) -> None:
        import anyio

        async with stream:
            try:
                data = b""
                with anyio.fail_after(5):
                    while b"\n" not in data and len(data) < MAX_REQUEST:
                        chunk = await stream.receive(MAX_REQUEST)
                        data += chunk
                request = orjson.loads(data)
                command = request.get("command") if isinstance(request, dict) else None
                if command == "tail":
                    raw = bool(request.get("raw"))
                    refusal = self._refuse_raw(stream) if raw else None
                    if refusal is None:
                        await self._tail(stream, raw)
                        return
                    answer = {"ok": False, "problems": [refusal]}
                else:
                    answer = redact(await self._answer(command, request))
            except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError):
                return
            except orjson.JSONDecodeError:
                answer = {"ok": False, "problems": ["the request is not JSON"]}
            except Exception as exc:  # e.g. out of file descriptors while gathering status
                log.warning("A control request failed: %s: %s.", type(exc).__name__, exc)
                answer = {"ok": False, "problems": [f"the daemon could not answer: {type(exc).__name__}: {exc}"]}
            try:
                await stream.send(orjson.dumps(answer) + b"\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    def _refuse_raw(self, stream: Any) -> str | None:
        """Why this peer may not see records before processing (None: it may): only the socket's owner.

        Raw records are what the processors would redact; the control socket is group-writable, so the
        peer's uid (SO_PEERCRED, given by the kernel, not by the peer) must be the socket file's owner.
        """
        import struct

        from anyio.abc import SocketAttribute

        try:
            raw_socket = stream.extra(SocketAttribute.raw_socket)
            _pid, uid, _gid = struct.unpack("3i", raw_socket.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            owner = os.stat(self.path).st_uid
        except (OSError, AttributeError, struct.error) as exc:
            return f"--raw needs the peer's credentials, which are not available here ({exc})"
        if uid != owner:
            log.warning("Refused `tail --raw` to uid %d: only the control socket's owner (uid %d) may see "
                        "records before processing.", uid, owner)
            return (f"--raw shows records before processing (unredacted), so only the owner of the control "
                    f"socket (uid {owner}) may use it; you are uid {uid}. Tail without --raw.")
        return None

    async def _tail(self, stream: Any, raw: bool = False) -> None:
        """Stream processed (or, `raw`, received) spans to one watcher until it disconnects."""
        import anyio

        send, receive = anyio.create_memory_object_stream[bytes](256)
        counters = self.pipeline.stats.component("pipeline", "intake")

        def tap(batch: list[dict[str, Any]]) -> None:
            if not batch:
                return
            try:  # encoded now: the records may change on their way on after this returns
                send.send_nowait(b"".join(orjson.dumps(r) + b"\n" for r in batch))
            except anyio.WouldBlock:
                counters.add("tail_lagged", len(batch))

        taps = self.pipeline.raw_taps if raw else self.pipeline.taps
        taps.append(tap)
        try:
            await stream.send(b'{"ok":true}\n')
            async with receive:
                async for chunk in receive:
                    await stream.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            taps.remove(tap)
            send.close()

    async def _answer(self, command: Any, request: dict[str, Any]) -> dict[str, Any]:
        if command == "status":
            from shipper.about import version

            per_second, interval = self.pipeline.rates()
            if request.get("settled"):  # between two batches: what was received is in every queue
                async with self.pipeline.swapping():
                    status = self.pipeline.status()
            else:
                status = self.pipeline.status()
            return {"ok": True, "status": status, "rates": per_second,
                    "interval_s": round(interval, 3), "version": version()}
        if command == "reload":
            wanted = request.get("config")
            report = await self.pipeline.reload(wanted if isinstance(wanted, str) else None)
            return {"ok": report.ok, "problems": report.problems, "changes": report.changes,
                    "source": report.source}
        return {"ok": False, "problems": [f"unknown command {command!r}; expected status, reload or tail"]}

    async def aclose(self) -> None:
        """Stop answering and remove the socket file. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def named_after(data_socket: str) -> str:
    """The control socket named after a data socket: `shipper.sock` -> `shipper.control.sock`."""
    return (data_socket[:-5] if data_socket.endswith(".sock") else data_socket) + ".control.sock"


def control_path(config: Config) -> str:
    """The control socket of this config's daemon, its own whatever other daemons share a directory.

    `control_socket` when set; else named after the first unix_socket receiver's data socket
    (`/run/shipper/shipper.sock` -> `/run/shipper/shipper.control.sock`), since only one live daemon can
    hold a data socket; else (no unix_socket receiver, or that name would pass the 107-byte limit of a
    Unix socket path) `control.sock` in the state_dir, which one daemon at a time owns (queue locks).
    """
    if config.settings.control_socket:
        return config.settings.control_socket
    for spec in config.receivers:
        if spec.type == "unix_socket":
            candidate = named_after(str(spec.config.path))
            if len(os.fsencode(candidate)) <= 107:
                return candidate
            break
    return str(Path(config.settings.state_dir) / "control.sock")


def install(pipeline: Pipeline) -> ControlServer:
    """Serve `pipeline`'s control socket with the daemon: bound before `ready`, removed at shutdown."""
    server = ControlServer(control_path(pipeline.config), pipeline)
    pipeline.openers.append(server.open)
    pipeline.services.append(lambda _pipeline: server.serve())
    pipeline.closers.append(server.aclose)
    return server


def request(path: str, command: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """Send one command (and its `fields`) to the daemon at `path` (blocking; for the CLI). Raises ControlError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(orjson.dumps({**fields, "command": command}) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError as exc:
        raise ControlError(f"no shipper daemon is running (no control socket at {path})") from exc
    except ConnectionRefusedError as exc:
        raise ControlError(f"no shipper daemon answers at {path} (stale control socket)") from exc
    except OSError as exc:
        raise ControlError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from exc
    finally:
        sock.close()
    try:
        answer: dict[str, Any] = orjson.loads(data)
        return answer
    except orjson.JSONDecodeError as exc:
        raise ControlError(f"the daemon at {path} gave an answer that is not JSON") from exc


def stream_tail(path: str, raw: bool = False) -> Iterator[dict[str, Any]]:
    """Yield every span the daemon at `path` processes (`raw`: receives) from now on (for `shipper tail`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
            sock.sendall(orjson.dumps({"command": "tail", **({"raw": True} if raw else {})}) + b"\n")
        except FileNotFoundError as exc:
            raise ControlError(f"no shipper daemon is running (no control socket at {path})") from exc
        except OSError as exc:
            raise ControlError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from exc
        reader = sock.makefile("rb")
        first = reader.readline()
        if not first:
            raise ControlError(f"the daemon at {path} closed the connection")
        answer = orjson.loads(first)
        if not answer.get("ok"):
            raise ControlError("; ".join(answer.get("problems") or ["the daemon refused"]))
        for line in reader:
            yield orjson.loads(line)
    finally:
        sock.close()
