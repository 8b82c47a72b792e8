"""`shipper emit`: send an example trace through the client shim, say where it lands, wait until it is there.

Before sending, it asks the daemon (its control socket) which exporters it runs, or, with no daemon up,
reads the config to say where the spans will go once one runs. `--wait` (on by default when the daemon
answers) then follows the daemon's counters: first until the spans are received and handled (a status
taken between two batches, so they are in every exporter's queue), then until each exporter has
delivered (or dead-lettered) everything that was queued before them; a file exporter's output is also
read for the trace id. It waits at most `timeout` seconds and exits 1 if they are not all there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import shipper

__all__ = ["emit_example"]

SPANS = 5


def _status(control: str) -> dict[str, Any] | None:
    from shipper.control import request
    from shipper.errors import ShipperError

    try:
        answer = request(control, "status", settled=True)
    except ShipperError:
        return None
    return answer.get("status") if answer.get("ok") else None


def _destination(spec: Any, state_dir: Path) -> str:
    if spec.type == "file":
        return str(Path(spec.config.path) if spec.config.path else state_dir / "spans" / "spans.ndjson")
    for key in ("endpoint", "host", "api_url", "url"):
        value = getattr(spec.config, key, None)
        if value:
            return str(value)
    return str(spec.type)


def _delivered(figures: dict[str, Any]) -> int:
    """Spans this exporter is done with: exported, or dropped (dead letters are counted under their reason)."""
    drops = sum(n for reason, n in (figures.get("dropped") or {}).items() if reason != "malformed")
    return int(figures.get("exported", 0)) + int(drops)


def _where(name: str, figures: dict[str, Any]) -> str:
    for key in ("path", "url", "endpoint"):
        if figures.get(key):
            return f"exporter {name} ({figures[key]})"
    return f"exporter {name}"


def emit_example(service: str, config: str | None = None, control: str | None = None, wait: bool | None = None,
                 timeout: float = 30.0) -> int:
    """Emit the example trace, say where it goes, and (`wait`) wait until it is there."""
    from shipper.errors import ConfigError

    try:
        from shipper.config import load_config
        from shipper.control import control_path
    except ModuleNotFoundError:  # an app's install, the shim alone: no config loader, only the daemon's answer
        if config:
            raise
        if control is None:
            control = _shim_control_path()
        loaded = None
    else:
        try:
            loaded = load_config(config) if config or not control else None
        except ConfigError as exc:
            print("\n".join(exc.problems))
            return 1
        if control is None:
            assert loaded is not None  # loaded whenever no control socket was given
            control = control_path(loaded)
    before = _status(control)
    if before is not None:
        print(f"the daemon (pid {before.get('pid')}, config {before.get('config')}) sends them to: "
              + ", ".join(_where(n, f) for n, f in (before.get("exporters") or {}).items()))
    elif loaded is not None:
        state = Path(loaded.settings.state_dir)
        print(f"no daemon answers at {control}; once one runs with {loaded.source}, it sends them to: "
              + ", ".join(f"exporter {s.name} ({_destination(s, state)})" for s in loaded.exporters))
    if wait is None:
        wait = before is not None
    code, trace_id = _emit(service)
    if code or not wait:
        return code
    return _wait(control, before, trace_id, timeout)


def _shim_control_path() -> str:
    """The control socket of the daemon on the shim's socket (named after it, as `control_path` does)."""
    from shipper.client.paths import resolve_socket_path
    from shipper.control import named_after

    return named_after(resolve_socket_path())


def _wait(control: str, before: dict[str, Any] | None, trace_id: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    print(f"waiting up to {timeout:g}s until they are delivered ...", flush=True)
    while before is None:  # --wait with no daemon yet: one may be starting
        if time.monotonic() > deadline:
            print(f"no daemon answered at {control} within {timeout:g}s; the spans wait in the spool")
            return 1
        time.sleep(0.2)
        before = _status(control)
        if before is not None:
            before = {**before, "pipeline": {}, "exporters": {}}  # it started after the spans were written
    received = int((before.get("pipeline") or {}).get("received", 0))
    handled = None
    while time.monotonic() < deadline:
        now = _status(control)
        if now is not None and int((now.get("pipeline") or {}).get("received", 0)) >= received + SPANS:
            handled = now
            break
        time.sleep(0.1)
    if handled is None:
        print(f"the daemon did not receive the {SPANS} spans within {timeout:g}s (see `shipper status`)")
        return 1
    targets = {name: int(figures.get("queued", 0)) for name, figures in (handled.get("exporters") or {}).items()}
    pending = dict(targets)
    last: dict[str, Any] = handled
    while pending and time.monotonic() < deadline:
        now = _status(control)
        if now is None:
            break
        last = now
        for name in list(pending):
            figures = (now.get("exporters") or {}).get(name) or {}
            if _delivered(figures) >= pending[name] and _file_has(figures, trace_id):
                del pending[name]
        if pending:
            time.sleep(0.1)
    exporters = last.get("exporters") or {}
    for name in targets:
        figures = exporters.get(name) or {}
        was = ((before.get("exporters") or {}).get(name) or {})
        new_dead = int(figures.get("dead_lettered", 0)) - int(was.get("dead_lettered", 0))
        if name in pending:
            error = figures.get("last_error")
            print(f"  {_where(name, figures)}: not delivered yet ({figures.get('state', 'waiting')}"
                  + (f"; last error: {error}" if error else "") + ")")
        elif new_dead:
            print(f"  {_where(name, figures)}: dead-lettered {new_dead} spans "
                  f"(last error: {figures.get('last_error')}); see `shipper status`")
        else:
            print(f"  {_where(name, figures)}: delivered")
    return 1 if pending else 0


def _file_has(figures: dict[str, Any], trace_id: str) -> bool:
    """For a file exporter, whether its output holds the trace (others: True)."""
    path = figures.get("path")
    if not path or "file_bytes" not in figures:
        return True
    try:
        with open(path, "rb") as out:
            size = os.fstat(out.fileno()).st_size
            out.seek(max(0, size - (8 << 20)))
            return trace_id.encode() in out.read()
    except OSError:
        return False


def _emit(service: str) -> tuple[int, str]:
    """Five spans shaped like the classic example: two LLM calls, a tool and a failed agent under a root."""
    shipper.configure(service=service)
    before = shipper.statistics()
    with shipper.trace_context(session_id="session-42", user_id="user-123", tags=["capitals"]):
        with shipper.span("my_llm_application", kind="chain", otel_kind="server") as root:
            answers = []
            for question, answer, model in (("China", "Beijing", "gpt-4o-mini"), ("Japan", "Tokyo", "gpt-4o-mini")):
                with shipper.span("query_llm", kind="llm") as llm:
                    messages = [{"role": "user", "content": f"What's the capital of {question}?"}]
                    llm.log(input=messages, output=answer, llm={
                        "model": model, "provider": "openai", "operation": "chat",
                        "input_messages": messages, "output_messages": [{"role": "assistant", "content": answer}],
                        "usage": {"input_tokens": 18, "output_tokens": 2, "total_tokens": 20}, "cost_usd": 3.9e-06,
                    })
                answers.append(answer)
            with shipper.span("query_embedding", kind="tool") as tool:
                tool.log(input="What's the capital of China?", output=[0.1, 0.2, 0.3],
                         attributes={"tool.description": "Query embedding"})
            try:
                with shipper.span("query_agent", kind="agent", input="Who are you?"):
                    raise RuntimeError("429 Too Many Requests (an example failure)")
            except RuntimeError:
                pass
            root.log(output=answers, metadata={"org_id": "org-456"})
    from shipper.client import transport

    transport.active().confirm()  # the daemon's verdict on a new connection: sent, or spooled if refused
    after = shipper.statistics()
    sent = after["sent"] - before["sent"]
    spooled = after["spooled"] - before["spooled"]
    dropped = sum(after["dropped"].values()) - sum(before["dropped"].values())
    print(f"trace {root.trace_id}: 5 spans")
    if sent:
        print(f"  {sent} sent to the daemon on {after['socket_path']}")
    if spooled:
        print(f"  {spooled} written to the spool {after.get('spool_file') or after['spool_dir']} "
              "(the daemon was not reachable; it reads them when it runs)")
    if dropped:
        print(f"  {dropped} dropped: {after['dropped']}")
        return 1, root.trace_id
    return 0, root.trace_id
