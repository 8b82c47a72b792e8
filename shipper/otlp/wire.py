"""OTLP protobuf request bytes from parts encoded once per span and shared by every exporter.

Protobuf lets a message be the concatenation of its fields' encodings, repeated fields included, so a
`Span`'s bytes are its *core* (ids, name, kind, times, events, links, status: the same for every
exporter) followed by one run of `attributes` per attribute group: each mapper's (`gen_ai.*`,
OpenInference, a backend's own) and the record's raw `attributes`. Parsers read that exactly as the
message `Encoder.span` builds (attributes in the same order).

`PARTS`, one per process, keeps the core and the groups of pure mappers (a function of the record
alone: `PURE`) of the last `CACHE_SPANS` records, keyed by the record's JSON. The first exporter to send
a span encodes it; the others (otlp_http, phoenix, langfuse sending the same span) reuse what they
share and encode only their own groups. A mapper that reads exporter state (Langfuse's trace names) is
run and encoded every time. When two groups of one span name the same key, the span is encoded from
the merged mapping instead, as `Encoder` does (the later group wins), so the output never differs from
`Encoder.request(...).SerializeToString()` but in the order of fields inside each span. Exporters
`join` while open; with only one, `shared()` is False and it encodes as before.
"""

from __future__ import annotations

import functools
import inspect
import struct
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from shipper.otlp.encode import SCOPE, Encoder, add_attributes, fill_core
from shipper.otlp.semconv import genai_attributes, openinference_attributes
from shipper.record import Record

__all__ = ["CACHE_SPANS", "PARTS", "PURE", "SpanParts", "join", "leave", "request_bytes", "shared", "span_bytes"]

CACHE_SPANS = 4096
"""Records whose parts are kept: about 2.5 KiB each for the benchmark's LLM span (10 MiB in all)."""
PURE: frozenset[Callable[..., Any]] = frozenset({genai_attributes, openinference_attributes})
"""Mappers whose output depends on the record alone, so their encoding can be shared (also as a
`functools.partial` with keyword arguments: otlp_http's `gen_ai.*` mapper)."""
_RAW = "attributes"
_SCOPE = SCOPE.SerializeToString()
_VARINT = [bytes([i]) for i in range(128)]


def varint(n: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if n < 128:
        return _VARINT[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


_KEYS: dict[str, bytes] = {}
_KEYS_MAX = 8192
_DOUBLE = struct.Struct("<d").pack
_INT64 = (-(2**63), 2**63 - 1)


def _key(key: str) -> bytes:
    """`KeyValue.key` (field 1) encoded; attribute names repeat, so they are kept."""
    encoded = _KEYS.get(key)
    if encoded is None:
        raw = key.encode()
        encoded = b"\x0a" + varint(len(raw)) + raw if raw else b""
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[key] = encoded
    return encoded


def _upb_attribute(key: Any, value: Any) -> bytes:
    """One attribute through protobuf itself (lists, mappings, bytes, other types)."""
    span = PbSpan()
    add_attributes(span.attributes, {key: value})
    out: bytes = span.SerializeToString()
    return out


def _attribute(key: str, value: Any) -> bytes:
    """One `Span.attributes` entry, as protobuf writes it."""
    kind = type(value)
    if kind is str:
        try:
            raw = value.encode()
        except UnicodeEncodeError:  # a lone surrogate: let protobuf say what it says
            return _upb_attribute(key, value)
        any_value = b"\x0a" + varint(len(raw)) + raw
    elif kind is bool:
        any_value = b"\x10\x01" if value else b"\x10\x00"
    elif kind is int and _INT64[0] <= value <= _INT64[1]:
        any_value = b"\x18" + varint(value if value >= 0 else value + (1 << 64))
    elif kind is float:
        any_value = b"\x21" + _DOUBLE(value)
    else:
        return _upb_attribute(key, value)
    body: bytes = _key(key) + b"\x12" + varint(len(any_value)) + any_value
    return b"\x4a" + varint(len(body)) + body


_SHORT = 64
_VALUES: dict[tuple[str, Any, type], bytes] = {}
_VALUES_MAX = 16384


def _attributes_bytes(attributes: dict[str, Any]) -> bytes:
    """A mapping as a run of `Span.attributes` (field 9) entries, the bytes `add_attributes` gives.

    Strings, ints, floats and bools are written here; other values go through `add_attributes`. Short
    strings and ints (model, provider, operation, kinds, parameters, token counts) repeat from span to
    span, so their entries are kept by (key, value) for their type."""
    out: list[bytes] = []
    append = out.append
    values = _VALUES
    for key, value in attributes.items():
        if value is None:
            continue
        kind = type(value)
        if type(key) is not str:
            append(_upb_attribute(key, value))
        elif (kind is str and len(value) <= _SHORT) or kind is int:
            # a tuple with the type: (k, 1), (k, True) and (k, 1.0) are equal keys otherwise
            token = (key, value, kind)
            entry = values.get(token)
            if entry is None:
                entry = _attribute(key, value)
                if len(values) >= _VALUES_MAX:
                    values.clear()
                values[token] = entry
            append(entry)
        else:
            append(_attribute(key, value))
    return b"".join(out)


Group = tuple[bytes, tuple[str, ...]]
"""(encoded attributes, their keys) of one attribute group of a span (the mapping itself is not kept:
a kept entry should cost little to keep and to drop)."""


def _group(attributes: dict[str, Any]) -> Group:
    return _attributes_bytes(attributes), tuple(attributes)


class _Entry:
    __slots__ = ("core", "groups", "spans")

    def __init__(self) -> None:
        self.core: bytes | None = None
        self.groups: dict[Any, Group] = {}
        self.spans: dict[tuple[Any, ...], bytes] = {}


class SpanParts:
    """The encoded parts of recently sent records, by the record's JSON; oldest forgotten first."""

    def __init__(self, size: int = CACHE_SPANS) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = self.misses = 0

    def entry(self, key: bytes) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            entries = self._entries
            if len(entries) >= self.size:
                entries.popitem(last=False)
            entry = entries[key] = _Entry()
        else:
            self.hits += 1
        return entry

    def clear(self) -> None:
        self._entries.clear()


PARTS = SpanParts()
_SHARERS: weakref.WeakSet[Any] = weakref.WeakSet()


def join(exporter: Any) -> None:
    """Count `exporter` among those that send protobuf built here (while it is open)."""
    _SHARERS.add(exporter)


def leave(exporter: Any) -> None:
    _SHARERS.discard(exporter)


def shared() -> bool:
    """True when two or more open exporters build protobuf here: only then is sharing parts worth its
    bookkeeping (about a quarter more than encoding a span whole, for the first exporter to send it)."""
    return len(_SHARERS) > 1


def _token(mapper: Any) -> Any:
    """What identifies a pure mapper's output (None: not pure). A `functools.partial` of a pure function
    with keyword arguments is pure too; with only its defaults it is the function itself."""
    try:
        if mapper in PURE:
            return mapper
    except TypeError:  # unhashable
        return None
    if isinstance(mapper, functools.partial) and mapper.func in PURE and not mapper.args:
        try:
            defaults = {name: p.default for name, p in inspect.signature(mapper.func).parameters.items()}
            if all(defaults.get(k, inspect.Parameter.empty) == v for k, v in mapper.keywords.items()):
                return mapper.func
            return (mapper.func, tuple(sorted(mapper.keywords.items())))
        except (TypeError, ValueError):  # unhashable or unreadable arguments: not shared
            return None
    return None


def _tokens(encoder: Encoder) -> tuple[Any, ...]:
    """The `_token` of each of the encoder's mappers, worked out once per encoder."""
    tokens = getattr(encoder, "_wire_tokens", None)
    if tokens is None or tokens[0] is not encoder.mappers:
        tokens = (encoder.mappers, tuple(_token(m) for m in encoder.mappers))
        encoder._wire_tokens = tokens  # type: ignore[attr-defined]
    return tokens[1]


def whole_span_bytes(encoder: Encoder, rec: Record) -> bytes:
    """The encoded `Span` of `rec` as `encoder` sends it, nothing shared (one exporter alone)."""
    pb = PbSpan()
    fill_core(pb, rec)
    core: bytes = pb.SerializeToString()
    return core + _attributes_bytes(encoder.attributes(rec))


def span_bytes(encoder: Encoder, rec: Record, key: bytes | None = None, parts: SpanParts = PARTS) -> bytes:
    """The encoded `Span` of `rec` as `encoder` sends it, from shared parts where it can."""
    if key is None:
        try:
            key = orjson.dumps(rec)
        except TypeError:  # not JSON (never from a queue): encode it whole, share nothing
            whole: bytes = encoder.span(rec).SerializeToString()
            return whole
    entry = parts.entry(key)
    mappers = encoder.mappers
    tokens = _tokens(encoder)
    done = entry.spans.get(tokens)
    if done is not None:
        return done
    core = entry.core
    if core is None:
        pb = PbSpan()
        fill_core(pb, rec)
        core = entry.core = pb.SerializeToString()
    groups: list[Group] = []
    all_pure = True
    cache = entry.groups
    for mapper, token in zip(mappers, tokens):
        if token is not None:
            group = cache.get(token)
            if group is None:
                group = cache[token] = _group(mapper(rec))
        else:
            all_pure = False
            group = _group(mapper(rec))
        groups.append(group)
    raw = cache.get(_RAW)
    if raw is None:
        raw = cache[_RAW] = _group(rec.get("attributes") or {})
    groups.append(raw)
    keys: set[str] = set()
    count = 0
    for group in groups:
        keys.update(group[1])
        count += len(group[1])
    if len(keys) != count:  # two groups name the same key: the merged mapping decides, as in Encoder
        out = core + _attributes_bytes(encoder.attributes(rec))
    else:
        out = core + b"".join([g[0] for g in groups])
    if all_pure:
        entry.spans[tokens] = out
    return out


def request_bytes(encoder: Encoder, records: Iterable[Record], project: str | None = None,
                  parts: SpanParts | None = PARTS) -> bytes:
    """`encoder.request(records, project).SerializeToString()`, built from shared per-span parts (or,
    with `parts` None, each span encoded whole: for an exporter alone)."""
    by_resource: dict[bytes, tuple[dict[str, Any], list[Record]]] = {}
    for rec in records:
        resource = encoder.resource_attributes(rec, project)
        key = orjson.dumps(resource, default=str, option=orjson.OPT_SORT_KEYS)
        by_resource.setdefault(key, (resource, []))[1].append(rec)
    out: list[bytes] = []
    for resource, group in by_resource.values():
        if parts is None:
            spans = b"".join([_field(b"\x12", whole_span_bytes(encoder, rec)) for rec in group])
        else:
            spans = b"".join([_field(b"\x12", span_bytes(encoder, rec, None, parts)) for rec in group])
        scope_spans = _field(b"\x0a", _SCOPE) + spans
        message = Resource()
        add_attributes(message.attributes, resource)
        encoded = message.SerializeToString()
        resource_spans = (_field(b"\x0a", encoded) if encoded else b"") + _field(b"\x12", scope_spans)
        out.append(_field(b"\x0a", resource_spans))
    return b"".join(out)
