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


async def test_open_exporters_share_parts_and_send_what_one_alone_sends() -> None:
    """With several exporters open the bodies come from shared parts; the backend decodes the same spans."""
    from shipper.otlp import wire
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
                for exp in exporters:
                    await exp.export(copy.deepcopy(TRACE))
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
