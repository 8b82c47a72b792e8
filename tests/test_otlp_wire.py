"""shipper.otlp.wire: request bytes from shared per-span parts parse to exactly the message Encoder builds."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_exporters_contract import TRACE, TYPES, make

from shipper.otlp.encode import fill_trace_wide
from shipper.otlp.wire import SpanParts, request_bytes

EXTRA = [
    # raw attributes that override a mapped key (and one with None): the merged mapping decides
    {**TRACE[0], "span_id": "00000000000000aa", "attributes": {"gen_ai.request.model": "mine", "input.value": None}},
    {**TRACE[-1], "span_id": "00000000000000ab", "resource": {}, "service": None, "project": "p2"},
    {**TRACE[1], "span_id": "00000000000000ac", "attributes": {"flag": True, "off": False, "n": -3, "big": 2**70,
                                                               "xs": [1, "a"], "f": -0.0},
     "links": [{"trace_id": TRACE[0]["trace_id"], "span_id": "00000000000000ad", "attributes": {"k": 1}}]},
]


def _parsed(body: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return message


@pytest.mark.parametrize("kind", TYPES)
def test_the_shared_parts_give_the_message_the_encoder_builds(kind: str) -> None:
    """For every OTLP-family exporter, first (parts encoded) and second time (parts reused)."""
    exporter = make(kind, "http://127.0.0.1:9")
    batch = fill_trace_wide(copy.deepcopy(TRACE + EXTRA))
    if kind == "langfuse":  # its mapper reads the trace names export() notes per batch
        exporter._trace_names = {r["trace_id"]: r["name"] for r in batch if not r.get("parent_id")}
    parts = SpanParts()
    for project in (None, "p2"):
        expected = exporter.encoder.request(batch, project)
        for _ in range(2):
            assert _parsed(request_bytes(exporter.encoder, batch, project, parts)) == expected
        assert _parsed(request_bytes(exporter.encoder, batch, project, None)) == expected  # alone, unshared
    assert parts.hits > 0


def test_exporters_share_what_they_have_in_common() -> None:
    """otlp_http, phoenix and langfuse sending the same spans: each span is one entry, reused."""
    parts = SpanParts()
    batch = copy.deepcopy(TRACE)
    for kind in ("otlp_http", "phoenix", "langfuse"):
        exporter = make(kind, "http://127.0.0.1:9")
        assert _parsed(request_bytes(exporter.encoder, batch, None, parts)) == exporter.encoder.request(batch)
    assert parts.misses == len(batch) and parts.hits == 2 * len(batch)


def test_a_changed_record_is_encoded_again_and_old_entries_are_forgotten() -> None:
    exporter = make("otlp_http", "http://127.0.0.1:9")
    parts = SpanParts(size=2)
    rec = copy.deepcopy(TRACE[0])
    request_bytes(exporter.encoder, [rec], None, parts)
    changed = {**rec, "name": "renamed"}
    assert _parsed(request_bytes(exporter.encoder, [changed], None, parts)) == exporter.encoder.request([changed])
    request_bytes(exporter.encoder, copy.deepcopy(TRACE[1:3]), None, parts)
    assert len(parts._entries) == 2 and orjson.dumps(rec) not in parts._entries


async def test_open_exporters_share_parts_and_send_what_one_alone_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several exporters open (and sharing on) the bodies come from shared parts; the backend
    decodes the same spans."""
    from shipper.otlp import wire

    monkeypatch.setattr(wire, "SHARE_PARTS", True)
    from shipper.testing import OTLPServer

    bodies = {}
    for together in (False, True):
        with OTLPServer() as server:
            kinds = ("otlp_http", "phoenix", "langfuse") if together else ("otlp_http",)
            exporters = [make(kind, server.url) for kind in kinds]
            for exp in exporters:
                await exp.open()
            try:
                assert wire.shared() is together
                hits = wire.PARTS.hits
                batch = copy.deepcopy(TRACE)  # one decoded record per queued line, as every worker gets it
                for exp in exporters:
                    await exp.export(batch)
                assert (wire.PARTS.hits > hits) is together
                bodies[together] = [sorted(r.spans, key=lambda s: s["span_id"]) for r in server.requests]
            finally:
                for exp in exporters:
                    await exp.aclose()
    assert len(bodies[True]) == 3
    assert bodies[True][0] == bodies[False][0]  # otlp_http's request, the same either way


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=80), st.binary(max_size=8),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(attributes=st.dictionaries(st.text(max_size=20), _VALUES, max_size=8))
def test_attributes_are_written_byte_for_byte_as_protobuf_writes_them(attributes) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    from shipper.otlp.encode import add_attributes
    from shipper.otlp.wire import _attributes_bytes

    expected = PbSpan()
    add_attributes(expected.attributes, attributes)
    for _ in range(2):  # written, then from the kept (key, value) entries
        assert _attributes_bytes(attributes) == expected.SerializeToString()


def _family(*extra: tuple[str, dict]) -> list:
    """otlp_http, phoenix and langfuse, then `extra` (kind, overrides), all sharing one SpanParts."""
    kinds = [("otlp_http", {}), ("phoenix", {}), ("langfuse", {}), *extra]
    return [make(kind, "http://127.0.0.1:9", **overrides) for kind, overrides in kinds]


def _trace_names(exporter, batch) -> None:
    if hasattr(exporter, "_trace_names"):
        exporter._trace_names = {r["trace_id"]: r["name"] for r in batch if not r.get("parent_id")}


def test_exporters_with_other_conventions_never_get_each_others_attributes() -> None:
    """Five encoders over one record each: every body is the one its own encoder builds, in any order."""
    batch = fill_trace_wide(copy.deepcopy(TRACE + EXTRA))
    exporters = _family(("otlp_http", {"conventions": ["openinference"]}),
                        ("otlp_http", {"conventions": ["gen_ai_legacy"], "tool_content": True}))
    for order in (exporters, exporters[::-1]):
        parts = SpanParts()
        for exporter in order:
            _trace_names(exporter, batch)
            for project in (None, "p2"):
                assert _parsed(request_bytes(exporter.encoder, batch, project, parts)) == \
                    exporter.encoder.request(batch, project)
        assert parts.misses == len(batch)


def test_a_record_another_object_now_stands_for_is_not_served_its_parts() -> None:
    """Parts are kept by identity: an entry found under a record's id but holding another record (the
    id reused) is not served; a changed copy of a record is encoded as itself."""
    from shipper.otlp.wire import _Entry

    exporter = make("otlp_http", "http://127.0.0.1:9")
    parts = SpanParts()
    rec = copy.deepcopy(TRACE[0])
    request_bytes(exporter.encoder, [rec], None, parts)
    impostor = {**rec, "name": "renamed", "attributes": {"mine": 1}}
    parts._entries[id(impostor)] = parts._entries.pop(id(rec))  # as if impostor had rec's address
    assert isinstance(parts._entries[id(impostor)], _Entry)
    for _ in range(2):
        assert _parsed(request_bytes(exporter.encoder, [impostor], None, parts)) == exporter.encoder.request([impostor])


def test_a_record_changed_by_an_exporters_own_processors_is_encoded_as_changed() -> None:
    """An exporter's own processors run before its queue, so its worker gets another record (decoded from
    another line) than the others: it is sent as changed, and the others as they were."""
    plain, redacted = make("otlp_http", "http://127.0.0.1:9"), make("phoenix", "http://127.0.0.1:9")
    parts = SpanParts()
    batch = copy.deepcopy(TRACE)
    changed = [{**rec, "input": "[REDACTED]", "attributes": {"redacted": True}} for rec in batch]
    assert _parsed(request_bytes(plain.encoder, batch, None, parts)) == plain.encoder.request(batch)
    assert _parsed(request_bytes(redacted.encoder, changed, None, parts)) == redacted.encoder.request(changed)
    assert _parsed(request_bytes(plain.encoder, batch, None, parts)) == plain.encoder.request(batch)


def test_langfuse_trace_names_follow_each_batch_though_the_rest_is_shared() -> None:
    """The trace name is the one attribute worked out at each send: a child span sent with its root, then
    without it, then with a raw attribute of that name (the merged mapping decides)."""
    lf = make("langfuse", "http://127.0.0.1:9")
    parts = SpanParts()
    root = {**copy.deepcopy(TRACE[0]), "parent_id": None, "span_id": "00000000000000f1", "name": "the-root"}
    child = {**copy.deepcopy(TRACE[1]), "parent_id": "00000000000000f1", "trace_id": root["trace_id"]}
    named = {**copy.deepcopy(TRACE[2]), "trace_id": root["trace_id"], "attributes": {"langfuse.trace.name": "mine"}}
    for batch in ([root, child, named], [child, named], [child, root, named]):
        _trace_names(lf, batch)
        message = _parsed(request_bytes(lf.encoder, batch, None, parts))
        assert message == lf.encoder.request(batch)
        spans = {s.span_id.hex(): {a.key: a.value.string_value for a in s.attributes}
                 for s in message.resource_spans[0].scope_spans[0].spans}
        assert spans[child["span_id"]].get("langfuse.trace.name") == ("the-root" if root in batch else None)
        assert spans[named["span_id"]]["langfuse.trace.name"] == "mine"


def test_completed_spans_are_one_copy_for_every_exporter() -> None:
    """fill_trace_wide's copies are made once while parts are shared, so they share their parts too."""
    from shipper.otlp import wire

    batch = copy.deepcopy(TRACE)
    batch[0]["session_id"] = "s-1"
    for rec in batch[1:]:
        rec.pop("session_id", None)
    parts = SpanParts()
    first, second = fill_trace_wide(batch, parts.copy), fill_trace_wide(batch, parts.copy)
    assert first == fill_trace_wide(batch) and all(a is b for a, b in zip(first, second))
    assert any(a is not b for a, b in zip(first, batch))
    assert wire.trace_wide(batch) == fill_trace_wide(batch)  # not shared (no exporters open): plain copies


def test_an_entry_is_let_go_once_every_exporter_sent_its_span() -> None:
    exporters = _family()
    parts = SpanParts(users=lambda: len(exporters))
    batch = copy.deepcopy(TRACE)
    for i, exporter in enumerate(exporters):
        _trace_names(exporter, batch)
        request_bytes(exporter.encoder, batch, None, parts)
        assert len(parts._entries) == (len(batch) if i < len(exporters) - 1 else 0)
    for exporter in exporters:  # sent again (a retry): encoded again, the same
        assert _parsed(request_bytes(exporter.encoder, batch, None, parts)) == exporter.encoder.request(batch)


def test_spans_of_resources_that_come_to_the_same_are_grouped_as_the_encoder_groups_them() -> None:
    exporter = make("otlp_http", "http://127.0.0.1:9")
    a, b, c = (copy.deepcopy(TRACE[i]) for i in range(3))
    a["service"], a["resource"] = "svc", {"k": 1}
    b["service"], b["resource"] = None, {"k": 1, "service.name": "svc"}  # the same resource, said otherwise
    c["service"], c["resource"] = "svc", {"k": 1}
    for parts in (SpanParts(), None):
        assert _parsed(request_bytes(exporter.encoder, [a, b, c], None, parts)) == exporter.encoder.request([a, b, c])


_ID = st.text("0123456789abcdef", min_size=16, max_size=16)


@settings(max_examples=300, deadline=None)
@given(rec=st.fixed_dictionaries(
    {"trace_id": st.text("0123456789abcdef", min_size=32, max_size=32), "span_id": _ID,
     "name": st.text(max_size=30), "start_ns": st.integers(0, 2**64 - 1), "end_ns": st.integers(0, 2**64 - 1)},
    optional={"parent_id": st.one_of(st.none(), st.just(""), _ID),
              "kind": st.sampled_from(["llm", "embedding", "tool", "span", "agent"]),
              "otel_kind": st.sampled_from(["internal", "server", "client", "producer", "consumer"]),
              "status": st.sampled_from(["ok", "error", "unset", None]),
              "error": st.fixed_dictionaries({"type": st.text(max_size=5), "message": st.text(max_size=5)}),
              "events": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}), max_size=2)}))
def test_a_span_core_is_written_byte_for_byte_as_protobuf_writes_it(rec) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    from shipper.otlp.encode import fill_core
    from shipper.otlp.wire import core_bytes

    expected = PbSpan()
    fill_core(expected, rec)
    assert core_bytes(rec) == expected.SerializeToString()


def test_kept_entries_tell_equal_values_of_other_types_and_signed_zeros_apart() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    from shipper.otlp.encode import add_attributes
    from shipper.otlp.wire import _attributes_bytes

    for attributes in ({"k": 1}, {"k": True}, {"k": 1.0}, {"k": 0.0}, {"k": -0.0}, {"k": float("nan")},
                       {"k": 1}, {"k": -0.0}, {"k": 0.0}, {"k": 1.0}, {"k": "1"}):
        expected = PbSpan()
        add_attributes(expected.attributes, attributes)
        assert _attributes_bytes(attributes) == expected.SerializeToString(), attributes


_TEXT = st.text(max_size=90)
_ATTRS = st.dictionaries(st.sampled_from(["gen_ai.request.model", "input.value", "langfuse.trace.name", "k", "n",
                                          "llm.provider", "session.id", "langfuse.observation.type"]),
                         st.one_of(st.none(), _TEXT, st.integers(-3, 3), st.floats(allow_nan=False)), max_size=3)


@st.composite
def _records(draw):
    trace = draw(st.sampled_from(["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"]))
    rec = {"v": 1, "trace_id": trace, "span_id": draw(_ID), "name": draw(st.sampled_from(["root", "llm", "tool"])),
           "kind": draw(st.sampled_from(["llm", "tool", "span", "agent", "embedding"])),
           "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_500_000_000}
    if draw(st.booleans()):
        rec["parent_id"] = draw(_ID)
    for key in ("input", "output", "session_id", "user_id", "service", "project"):
        if draw(st.booleans()):
            rec[key] = draw(_TEXT.filter(bool))
    if draw(st.booleans()):
        rec["llm"] = {"model": draw(_TEXT), "provider": "openai",
                      "usage": {"input_tokens": draw(st.integers(0, 99)), "output_tokens": 3},
                      "params": {"temperature": draw(st.floats(0, 2))}, "cost_usd": draw(st.floats(0, 1))}
    if draw(st.booleans()):
        rec["attributes"] = draw(_ATTRS)
    if draw(st.booleans()):
        rec["resource"] = draw(st.dictionaries(st.sampled_from(["service.name", "host", "pid"]), _TEXT, max_size=2))
    if draw(st.booleans()):
        rec["status"], rec["error"] = "error", {"type": "E", "message": draw(_TEXT)}
    return rec


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(_records(), min_size=1, max_size=6), min_size=1, max_size=3))
def test_every_encoder_sharing_parts_sends_what_it_would_alone(batches) -> None:
    """Random records, in batches that share some records, through otlp_http, phoenix and langfuse sharing
    one SpanParts: each request parses to what the exporter's own encoder builds."""
    exporters = _family()
    parts = SpanParts(users=lambda: len(exporters))
    shared = [rec for batch in batches for rec in batch]
    for batch in batches:
        batch = fill_trace_wide(batch + shared[:2], parts.copy)
        for exporter in exporters:
            _trace_names(exporter, batch)
            for project in (None, "p"):
                assert _parsed(request_bytes(exporter.encoder, batch, project, parts)) == \
                    exporter.encoder.request(batch, project)
