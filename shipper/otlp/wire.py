"""OTLP protobuf request bytes from parts encoded once per span and shared by every exporter.

Protobuf lets a message be the concatenation of its fields' encodings, repeated fields included, so a
`Span`'s bytes are its *core* (ids, name, kind, times, events, links, status: the same for every
exporter) followed by one run of `attributes` per attribute group: each mapper's (`gen_ai.*`,
OpenInference, a backend's own) and the record's raw `attributes`. Parsers read that exactly as the
message `Encoder.span` builds (attributes in the same order).

`PARTS`, one per process, keeps the parts of recently sent records (at most `CACHE_SPANS`), by the
record's identity: the delivery workers of every exporter get the one record decoded from a queued line
(queue.py's `_Decoded`), read-only past the queue, and an entry holds its record so that the identity
cannot be reused while it is kept. An entry holds the core, the groups of pure mappers (a function of
the record alone: `PURE`, or registered with `pure`) with their mappings, the record's resource key
and, per encoder, the finished span (its pieces: tag and length, core, attribute runs, joined only
into the request body): the first exporter to send a span encodes it, the others encode only the
groups no other exporter has, then just concatenate. An entry is let go once every sharing exporter
took its span; a span sent again (a retry, a split) is encoded again. A mapper that reads exporter
state (Langfuse's trace names) is run and encoded at every send, between the kept bytes. Spans
`fill_trace_wide` completes are copied once for every exporter (`SpanParts.copy`), so they are shared
too. When two groups an encoder sends name the same key, the span is encoded from the merged mapping
instead, as `Encoder` does (the later group wins), so the output never differs from
`Encoder.request(...).SerializeToString()` but in the order of fields inside each span. Exporters
`join` while open; with only one, or with `SHARE_PARTS` off (the default: measured slower), `shared()`
is False and each span is encoded whole, nothing kept.
"""

from __future__ import annotations

import functools
import inspect
import struct
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from shipper.otlp.encode import _KINDS, _STATUS, SCOPE, Encoder, add_attributes, fill_core, fill_trace_wide
from shipper.otlp.semconv import genai_attributes, openinference_attributes, otel_kind_of
from shipper.record import Record

__all__ = ["CACHE_SPANS", "PARTS", "PURE", "SpanParts", "core_bytes", "join", "leave", "pure", "request_bytes",
           "shared", "span_bytes", "trace_wide"]

CACHE_SPANS = 4096
"""Records whose parts are kept at most (an exporter that lags or never gets a span leaves its entry
until then): a few KiB each for the benchmark's LLM span."""
PURE: set[Callable[..., Any]] = {genai_attributes, openinference_attributes}
"""Mappers whose output depends on the record alone, so their encoding can be shared (also as a
`functools.partial` with keyword arguments: otlp_http's `gen_ai.*` mapper). Add one with `pure`."""
_RAW = "attributes"
_SCOPE = SCOPE.SerializeToString()
_VARINT = [bytes([i]) for i in range(128)]
F = TypeVar("F", bound=Callable[..., Any])


def pure(mapper: F) -> F:
    """Declare `mapper` pure (its attributes depend on the record alone), so its encoding is shared."""
    PURE.add(mapper)
    return mapper


def varint(n: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if n < 128:
        return _VARINT[n]
    if n < 16384:  # the length of most long strings and of a span
        return bytes((n & 127 | 128, n >> 7))
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_VARINT[n] if n < 128 else varint(n)) + payload


_SCOPE_FIELD = _field(b"\x0a", _SCOPE)
_KEYS: dict[str, bytes] = {}
_KEYS_MAX = 8192
_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
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
    span, so their entries are kept by (key, value) for their type. A long string's bytes are
    joined once, into the result, behind its entry's header."""
    out: list[bytes] = []
    append = out.append
    values = _VALUES
    small = _VARINT
    for key, value in attributes.items():
        if value is None:
            continue
        kind = type(value)
        if type(key) is not str:
            append(_upb_attribute(key, value))
        elif kind is str and len(value) > _SHORT:
            try:
                raw = value.encode()
            except UnicodeEncodeError:
                append(_upb_attribute(key, value))
                continue
            n = len(raw)
            head = small[n] if n < 128 else varint(n)
            n += 1 + len(head)  # the AnyValue
            name = _KEYS.get(key) or _key(key)
            size = small[n] if n < 128 else varint(n)
            n += len(name) + 1 + len(size)  # the KeyValue
            out += (b"\x4a", small[n] if n < 128 else varint(n), name, b"\x12", size, b"\x0a", head, raw)
        elif kind is str or kind is int:
            # a tuple with the type: (k, 1) and (k, True) are equal keys otherwise (floats are not kept:
            # 0.0 and -0.0 are equal keys, and NaN is not equal to itself)
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


def core_bytes(rec: Record) -> bytes:
    """Everything of a record's encoded `Span` but its attributes (`encode.fill_core`, serialized).

    A span without events, links or error is written here (ids, name, kind, times, status); others,
    and anything unusual, go through protobuf."""
    if rec.get("events") or rec.get("links") or rec.get("error"):
        return _upb_core(rec)
    try:
        trace_id = bytes.fromhex(rec["trace_id"])
        span_id = bytes.fromhex(rec["span_id"])
        parent = rec.get("parent_id")
        name = rec["name"].encode()
        start, end = rec["start_ns"], rec["end_ns"]
        if type(start) is not int or type(end) is not int or not (0 < start < 2**64 and 0 < end < 2**64):
            return _upb_core(rec)
        out = [_field(b"\x0a", trace_id) if trace_id else b"", _field(b"\x12", span_id) if span_id else b""]
        if parent:
            parent_id = bytes.fromhex(parent)
            if parent_id:
                out.append(_field(b"\x22", parent_id))
        if name:
            out.append(_field(b"\x2a", name))
        kind = _KINDS.get(otel_kind_of(rec), PbSpan.SPAN_KIND_INTERNAL)
        if kind:
            out.append(b"\x30" + varint(kind))
        out.append(b"\x39" + _FIXED64(start) + b"\x41" + _FIXED64(end))
        code = _STATUS.get(rec.get("status") or "unset", 0)
        out.append(b"\x7a\x02\x18" + _VARINT[code] if code else b"\x7a\x00")
        return b"".join(out)
    except (AttributeError, KeyError, TypeError, ValueError, UnicodeEncodeError):
        return _upb_core(rec)  # what protobuf makes of it, or its error


def _upb_core(rec: Record) -> bytes:
    pb = PbSpan()
    fill_core(pb, rec)
    out: bytes = pb.SerializeToString()
    return out


class _Template:
    """A span with impure groups: the kept bytes (core and pure runs) and, between them, the index of
    each impure mapper whose attributes go there; `mappings`: the pure groups' mappings, to see a clash
    with an impure one."""

    __slots__ = ("impure", "mappings", "pieces", "size")

    def __init__(self, pieces: list[bytes | int], mappings: list[dict[str, Any]]) -> None:
        self.pieces = pieces
        self.mappings = mappings
        kept = [p for p in pieces if not isinstance(p, int)]
        self.impure = len(pieces) - len(kept)
        self.size = sum(map(len, kept))


_MERGED = object()
"""The kept mark of a span whose groups name one key twice: always encoded from the merged mapping."""
Group = tuple[bytes, dict[str, Any]]
"""One attribute group of a span: its encoding, and its mapping (kept while the entry is: the mapper made
it anyway, and clashes are found by comparing mappings, with nothing built)."""
_EMPTY: Group = (b"", {})


class _Entry:
    __slots__ = ("core", "groups", "rec", "resource", "spans", "uses")

    def __init__(self, rec: Record) -> None:
        self.rec = rec  # held, so that no other record gets its id while the entry is kept
        self.core: bytes | None = None
        self.resource: bytes | None = None
        self.groups: dict[Any, Group] = {}
        self.spans: dict[tuple[Any, ...], Any] = {}
        self.uses = 0


class SpanParts:
    """The encoded parts of recently sent records, by the record's identity; oldest forgotten first.

    `users`, when given, says how many exporters share the parts: an entry is let go as soon as that
    many requests took its span (every exporter sent it), so only spans some exporter has yet to send
    are kept; one sent again later (a retry, a split) is just encoded again."""

    def __init__(self, size: int = CACHE_SPANS, users: Callable[[], int] | None = None) -> None:
        self.size = size
        self.users = users
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._copies: OrderedDict[tuple[int, bytes], tuple[Record, Record]] = OrderedDict()
        self.hits = self.misses = 0

    def entry(self, rec: Record) -> _Entry:
        entries = self._entries
        entry = entries.get(id(rec))
        if entry is not None and entry.rec is rec:
            self.hits += 1
            return entry
        self.misses += 1
        if entry is None and len(entries) >= self.size:
            entries.popitem(last=False)
        entry = entries[id(rec)] = _Entry(rec)
        return entry

    def used(self, entry: _Entry, users: int) -> None:
        """One more request took `entry`'s span; with `users` requests in all it is let go."""
        entry.uses += 1
        if users and entry.uses >= users and self._entries.get(id(entry.rec)) is entry:
            del self._entries[id(entry.rec)]

    def copy(self, rec: Record, fields: dict[str, Any]) -> Record:
        """`{**rec, **fields}`, the same object for every exporter that asks while it is kept."""
        try:
            key = (id(rec), orjson.dumps(fields))
        except TypeError:
            return {**rec, **fields}
        copies = self._copies
        kept = copies.get(key)
        if kept is not None and kept[0] is rec:
            return kept[1]
        out = {**rec, **fields}
        if kept is None and len(copies) >= self.size:
            copies.popitem(last=False)
        copies[key] = (rec, out)
        return out

    def clear(self) -> None:
        self._entries.clear()
        self._copies.clear()


_SHARERS: weakref.WeakSet[Any] = weakref.WeakSet()
PARTS = SpanParts(users=lambda: len(_SHARERS))


def join(exporter: Any) -> None:
    """Count `exporter` among those that send protobuf built here (while it is open)."""
    _SHARERS.add(exporter)


def leave(exporter: Any) -> None:
    _SHARERS.discard(exporter)
    if len(_SHARERS) < 2:
        PARTS.clear()  # nothing to share any more: let the records go


SHARE_PARTS = False
"""Off: measured, sharing parts across exporters costs more than it saves. In the daemon with
otlp_http, phoenix and langfuse (`python -m benchmarks.profile daemon family3 --defaults`, three
alternating pairs), 86-94 µs per span with sharing against 77-81 without; in isolation it saved about
5% of the encoding. Keeping each span's parts alive until the slowest exporter sent it seems to cost
more memory traffic than the shared work saves. The code stays tested (the tests turn it on) for
whoever measures again."""


def shared() -> bool:
    """True when sharing is on (`SHARE_PARTS`) and two or more open exporters build protobuf here: only
    then is keeping parts worth its bookkeeping (the first exporter to send a span pays for keeping it)."""
    return SHARE_PARTS and len(_SHARERS) > 1


def trace_wide(batch: list[Record]) -> list[Record]:
    """`encode.fill_trace_wide(batch)`; while exporters share parts, a completed span is the same copy
    for each of them (so its parts are shared too)."""
    if not shared():
        return fill_trace_wide(batch)
    return fill_trace_wide(batch, PARTS.copy)


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


Span = tuple[int, tuple[bytes, ...]]
"""A span as a `ScopeSpans.spans` field: its size and its pieces (tag and length, core, attribute runs),
joined only once, into the request."""


def _head(size: int) -> bytes:
    return b"\x12" + (_VARINT[size] if size < 128 else varint(size))


def _whole_span(encoder: Encoder, rec: Record) -> Span:
    """The span of `rec` as `encoder` sends it, nothing shared (one exporter alone)."""
    core, attributes = core_bytes(rec), _attributes_bytes(encoder.attributes(rec))
    size = len(core) + len(attributes)
    head = _head(size)
    return size + len(head), (head, core, attributes)


def span_bytes(encoder: Encoder, rec: Record, parts: SpanParts = PARTS) -> bytes:
    """The encoded `Span` of `rec` as `encoder` sends it, from shared parts where it can."""
    return b"".join(_span(encoder, rec, parts.entry(rec))[1][1:])


def _span(encoder: Encoder, rec: Record, entry: _Entry) -> Span:
    """The span of `rec` as `encoder` sends it, from kept parts."""
    tokens = _tokens(encoder)
    done = entry.spans.get(tokens)
    if done is None:
        done = entry.spans[tokens] = _build(encoder, rec, entry, tokens)
    if type(done) is tuple:
        return done
    if done is _MERGED:
        return _merged(encoder, rec, entry)
    mappings = done.mappings
    mappers = encoder.mappers
    out: list[bytes] = []
    size = done.size
    seen: list[dict[str, Any]] | None = [] if done.impure > 1 else None
    for piece in done.pieces:
        if type(piece) is int:
            attributes = mappers[piece](rec)
            if attributes:
                for other in mappings:
                    if not attributes.keys().isdisjoint(other):  # the merged mapping decides, as in Encoder
                        return _merged(encoder, rec, entry)
                if seen is not None:
                    for other in seen:
                        if not attributes.keys().isdisjoint(other):
                            return _merged(encoder, rec, entry)
                    seen.append(attributes)
                encoded = _attributes_bytes(attributes)
                size += len(encoded)
                out.append(encoded)
        else:
            out.append(piece)
    head = _head(size)
    return size + len(head), (head, *out)


def _merged(encoder: Encoder, rec: Record, entry: _Entry) -> Span:
    core, attributes = _core(entry, rec), _attributes_bytes(encoder.attributes(rec))
    size = len(core) + len(attributes)
    head = _head(size)
    return size + len(head), (head, core, attributes)


def _core(entry: _Entry, rec: Record) -> bytes:
    core = entry.core
    if core is None:
        core = entry.core = core_bytes(rec)
    return core


def _clash(mappings: list[dict[str, Any]]) -> bool:
    """True when two of the mappings name one key."""
    for i in range(1, len(mappings)):
        mapping = mappings[i].keys()
        for other in mappings[:i]:
            if not mapping.isdisjoint(other):
                return True
    return False


def _build(encoder: Encoder, rec: Record, entry: _Entry, tokens: tuple[Any, ...]) -> Any:
    """What is kept of `rec`'s span for encoders with these mapper tokens: the `Span` when every mapper
    is pure, else a `_Template`; `_MERGED` when two of its pure groups name one key."""
    groups = entry.groups
    pieces: list[bytes | int] = []
    mappings: list[dict[str, Any]] = []
    run = [_core(entry, rec)]
    for i, (mapper, token) in enumerate(zip(encoder.mappers, tokens)):
        if token is None:
            pieces += [b"".join(run), i]
            run = []
            continue
        group = groups.get(token)
        if group is None:
            attributes = mapper(rec)
            group = groups[token] = (_attributes_bytes(attributes), attributes) if attributes else _EMPTY
        if group[0]:
            run.append(group[0])
        if group[1]:
            mappings.append(group[1])
    raw = groups.get(_RAW)
    if raw is None:
        own: dict[str, Any] | None = rec.get("attributes")
        raw = groups[_RAW] = (_attributes_bytes(own), own) if own else _EMPTY
    if raw[0]:
        run.append(raw[0])
    if raw[1]:
        mappings.append(raw[1])
    if len(mappings) > 1 and _clash(mappings):
        return _MERGED
    if not pieces:
        size = sum(map(len, run))
        head = _head(size)
        return size + len(head), (head, *run)
    pieces.append(b"".join(run))
    return _Template(pieces, mappings)


def _resource_key(rec: Record) -> bytes:
    """What of a record decides its resource (service, resource), as sorted JSON."""
    return orjson.dumps([rec.get("service") or None, rec.get("resource") or None], default=str,
                        option=orjson.OPT_SORT_KEYS)


def request_bytes(encoder: Encoder, records: Iterable[Record], project: str | None = None,
                  parts: SpanParts | None = PARTS) -> bytes:
    """`encoder.request(records, project).SerializeToString()`, built from shared per-span parts (or,
    with `parts` None, each span encoded whole: for an exporter alone).

    Spans are grouped by their own resource (service and `resource`; kept per span), then each group's
    resource is worked out once; should two groups come to the same resource (a `resource` naming
    `service.name`), the spans are grouped again by their whole resource, as `Encoder.request` does."""
    keyed: list[tuple[bytes, Record, Span]] = []
    append = keyed.append
    by_own: dict[bytes, tuple[Record, list[Span]]] = {}
    users = parts.users() if parts is not None and parts.users is not None else 0
    for rec in records:
        if parts is None:
            key = _resource_key(rec)
            span = _whole_span(encoder, rec)
        else:
            entry = parts.entry(rec)
            span = _span(encoder, rec, entry)
            key = entry.resource or _resource_key(rec)
            entry.resource = key
            parts.used(entry, users)
        append((key, rec, span))
        group = by_own.get(key)
        if group is None:
            by_own[key] = (rec, [span])
        else:
            group[1].append(span)
    resources: dict[bytes, tuple[dict[str, Any], list[Span]]] = {}
    for first, spans in by_own.values():
        resource = encoder.resource_attributes(first, project)
        whole = orjson.dumps(resource, default=str, option=orjson.OPT_SORT_KEYS)
        if whole in resources:  # two own resources come to one: group span by span, as Encoder does
            resources = {}
            for _, rec, span in keyed:
                resource = encoder.resource_attributes(rec, project)
                whole = orjson.dumps(resource, default=str, option=orjson.OPT_SORT_KEYS)
                resources.setdefault(whole, (resource, []))[1].append(span)
            break
        resources[whole] = (resource, spans)
    out: list[bytes] = []
    extend = out.extend
    for resource, spans in resources.values():
        message = Resource()
        add_attributes(message.attributes, resource)
        encoded = message.SerializeToString()
        described = _field(b"\x0a", encoded) if encoded else b""
        scope_size = len(_SCOPE_FIELD) + sum([span[0] for span in spans])
        scope_head = b"\x12" + varint(scope_size)
        extend((b"\x0a", varint(len(described) + len(scope_head) + scope_size), described, scope_head, _SCOPE_FIELD))
        for span in spans:
            extend(span[1])
    return b"".join(out)
