"""shipper.inject / shipper.extract: W3C traceparent and baggage carry a trace across real process boundaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from support import wait_records

import shipper

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
import shipper
headers = json.loads(sys.argv[1])
with shipper.span("child", kind="task", parent=shipper.extract(headers)) as s:
    with shipper.span("grandchild"):
        pass
print(json.dumps({"trace_id": s.trace_id, "span_id": s.span_id}))
"""


def _env(daemon) -> dict[str, str]:
    return {**daemon.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_a_child_process_continues_the_trace_under_the_parent_span(shipped_daemon) -> None:
    """Headers passed to a subprocess: its span has the parent's trace id, the parent span, and the baggage."""
    with shipper.trace_context(session_id="s-prop", user_id="u-prop", tags=["t 1", "t,2"]):
        with shipper.span("parent", kind="chain") as parent:
            headers = shipper.inject({"baggage": "other=kept"})
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(headers)], env=_env(shipped_daemon),
                                 capture_output=True, text=True, timeout=60, check=True)
    child = json.loads(out.stdout)
    assert headers["traceparent"] == f"00-{parent.trace_id}-{parent.span_id}-01"
    assert "other=kept" in headers["baggage"]
    records = {r["name"]: r for r in wait_records(shipped_daemon, 3, trace_id=parent.trace_id)}
    assert child["trace_id"] == parent.trace_id
    assert records["child"]["parent_id"] == parent.span_id
    assert records["grandchild"]["parent_id"] == child["span_id"]
    for name in ("child", "grandchild"):
        assert (records[name]["session_id"], records[name]["user_id"], records[name]["tags"]) == (
            "s-prop", "u-prop", ["t 1", "t,2"])
        assert records[name]["resource"]["process.pid"] != os.getpid()


def test_a_trace_continues_over_http_into_another_process(shipped_daemon) -> None:
    """A subprocess calls this process over HTTP with inject(); the handler's span continues its trace."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = dict(self.headers.items())
            seen.append(headers)
            with shipper.span("handle", kind="task", parent=shipper.extract(headers)) as s:
                body = json.dumps({"trace_id": s.trace_id}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = (
        "import json, sys, urllib.request, shipper\n"
        "with shipper.span('call', kind='chain') as s:\n"
        "    req = urllib.request.Request(sys.argv[1], headers=shipper.inject({}))\n"
        "    answer = json.load(urllib.request.urlopen(req, timeout=30))\n"
        "print(json.dumps({'trace_id': s.trace_id, 'span_id': s.span_id, 'answer': answer}))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", client, f"http://127.0.0.1:{server.server_port}/"],
                             env=_env(shipped_daemon), capture_output=True, text=True, timeout=60, check=True)
    finally:
        server.shutdown()
        server.server_close()
    caller = json.loads(out.stdout)
    assert caller["answer"]["trace_id"] == caller["trace_id"]
    records = {r["name"]: r for r in wait_records(shipped_daemon, 2, trace_id=caller["trace_id"])}
    assert records["handle"]["parent_id"] == caller["span_id"]
    assert records["call"]["resource"]["process.pid"] != records["handle"]["resource"]["process.pid"]


def test_opentelemetry_propagators_read_and_write_the_same_headers() -> None:
    """shipper's traceparent/baggage are what OpenTelemetry's W3C propagators read, and the other way round."""
    with shipper.trace_context(session_id="s-otel"):
        with shipper.span("p") as parent:
            headers = shipper.inject({})
    context = TraceContextTextMapPropagator().extract(headers)
    context = W3CBaggagePropagator().extract(headers, context)
    otel_parent = get_current_span(context).get_span_context()
    assert format(otel_parent.trace_id, "032x") == parent.trace_id
    assert format(otel_parent.span_id, "016x") == parent.span_id
    from opentelemetry.baggage import get_all
    assert get_all(context)["session.id"] == "s-otel"

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context)
    W3CBaggagePropagator().inject(carrier, context)
    remote = shipper.extract(carrier)
    assert (remote.trace_id, remote.span_id) == (parent.trace_id, parent.span_id)
    assert remote.fields.session_id == "s-otel"


def test_extract_refuses_what_is_not_a_w3c_traceparent() -> None:
    """Missing, malformed, all-zero or version-ff traceparents give no parent (a new trace starts)."""
    good_trace, good_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for value in (None, "", "garbage", f"00-{'0' * 32}-{good_span}-01", f"00-{good_trace}-{'0' * 16}-01",
                  f"ff-{good_trace}-{good_span}-01", f"00-{good_trace}-{good_span}-01-extra"):
        assert shipper.extract({} if value is None else {"traceparent": value}) is None, value
    remote = shipper.extract({"TraceParent": f"00-{good_trace.upper()}-{good_span}-00"})
    assert (remote.trace_id, remote.span_id, remote.sampled) == (good_trace, good_span, False)
    future = shipper.extract({"traceparent": f"01-{good_trace}-{good_span}-01-more"})
    assert future is not None and future.trace_id == good_trace
