"""The OTLP → record mapping as it was before it was sped up (shipper.otlp.decode at bb5ab11), frozen.

tests/test_otlp_decode.py checks that today's decoders (`shipper.otlp.decode` and the receivers' fast
protobuf path in `shipper.receivers.otlp_intake`) give exactly the records this one gives. It still uses
today's `semconv`, `langfuse`, `messages` and `text` helpers, so a deliberate change of those shows in both.
Change it only together with a deliberate change of the mapping itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shipper.otlp import langfuse as lf
from shipper.otlp import semconv as sc
from shipper.otlp.messages import genai_messages_from, oi_messages_from
from shipper.otlp.text import parse_json
from shipper.record import KINDS, MAX_KEY_CHARS, Record

__all__ = ["OTelSpan", "clean_attributes", "clean_value", "from_request", "lift", "to_record"]

SCOPE_NAME, SCOPE_VERSION = "otel.scope.name", "otel.scope.version"
OTEL_KINDS = ("internal", "internal", "server", "client", "producer", "consumer")
"""OTLP `Span.SpanKind` numbers (0 unspecified, 1 internal, ...) → record `otel_kind`."""
STATUS_CODES = ("unset", "ok", "error")
"""OTLP `Status.StatusCode` numbers → record `status`."""

GENAI_KINDS = {"chat": "llm", "text_completion": "llm", "generate_content": "llm", "completion": "llm",
               "embeddings": "embedding", "execute_tool": "tool", "invoke_agent": "agent", "create_agent": "agent"}
"""`gen_ai.operation.name` → record kind."""
GENAI_USAGE_OLD = {"gen_ai.usage.prompt_tokens": "input_tokens", "gen_ai.usage.completion_tokens": "output_tokens"}
USER_IDS = (sc.USER_ID, lf.USER, "enduser.id")
_PARAM_OF = {name: key for key, name in sc.GENAI_PARAMS.items()}
_USAGE_OF = {name: key for key, name in (*sc.GENAI_USAGE.items(), *sc.OI_TOKENS.items())}
_SCALARS = (str, bool, int, float)


@dataclass(slots=True)
class OTelSpan:
    """One OpenTelemetry span, whatever it was read from; ids in lowercase hex, attributes as given."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    parent_id: str | None = None
    otel_kind: str = "internal"
    status: str = "unset"
    status_message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: list[tuple[str, int, Mapping[str, Any]]] = field(default_factory=list)
    links: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    resource: Mapping[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""


# -- values ----------------------------------------------------------------------------------------------


def clean_value(value: Any) -> Any:
    """A value a record attribute may hold: scalars and lists of scalars stay, the rest becomes text."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, _SCALARS) and not (isinstance(v, float) and not math.isfinite(v)) for v in value):
            return list(value)
        return sc.json_text(list(value))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return sc.json_text(value)


def clean_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes valid for a record: None values left out, keys cut to 256 characters."""
    return {str(k)[:MAX_KEY_CHARS]: clean_value(v) for k, v in attributes.items() if v is not None}


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value >= 0 and math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- lifting ---------------------------------------------------------------------------------------------


def _kind(attrs: Mapping[str, Any]) -> str:
    oi = attrs.get(sc.SPAN_KIND)
    if isinstance(oi, str) and oi.lower() in KINDS:
        return oi.lower()
    langfuse_kind = lf.KINDS.get(attrs.get(lf.TYPE))  # type: ignore[arg-type]
    if langfuse_kind:
        return langfuse_kind
    return GENAI_KINDS.get(attrs.get(sc.OPERATION_NAME), "span")  # type: ignore[arg-type]


_USAGE_ORDER = (*GENAI_USAGE_OLD.items(), *((k, v) for k, v in _USAGE_OF.items() if k.startswith("gen_ai.")),
                *((k, v) for k, v in _USAGE_OF.items() if k.startswith("llm.")))
"""Token-count attributes, weakest first: a later (OpenInference) one overrides an earlier one."""


def _usage(attrs: Mapping[str, Any]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for name, key in _USAGE_ORDER:
        if name in attrs:
            count = _count(attrs[name])
            if count is not None:
                usage[key] = count
    details = parse_json(attrs.get(lf.USAGE))
    if isinstance(details, dict):
        found: dict[str, int] = {}
        for name, key in lf.USAGE_KEYS.items():
            count = _count(details.get(name))
            if count is not None:
                found.setdefault(key, count)
        # Langfuse's input / output leave out the cached / reasoning counts the record's include.
        for whole, part in (("input_tokens", "cache_read_tokens"), ("output_tokens", "reasoning_tokens")):
            if whole in found and part in found:
                found[whole] += found[part]
        for key, count in found.items():
            usage.setdefault(key, count)
    return usage


def _params(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    for name in (sc.INVOCATION_PARAMETERS, lf.PARAMS):
        params = parse_json(attrs.get(name))
        if isinstance(params, dict) and params:
            return params
    params = {key: attrs[name] for name, key in _PARAM_OF.items() if name in attrs}
    return params or None


def _ttft_ns(attrs: Mapping[str, Any], start_ns: int) -> int | None:
    seconds = attrs.get(sc.TIME_TO_FIRST_CHUNK)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return round(seconds * 1e9)
    stamp = attrs.get(lf.COMPLETION_START)
    if isinstance(stamp, str) and stamp:
        try:
            first = datetime.fromisoformat(stamp.replace("Z", "+00:00").strip('"')).timestamp()
        except ValueError:
            return None
        delta = round(first * 1e9) - start_ns
        return delta if delta >= 0 else None
    return None


def _llm(attrs: Mapping[str, Any], start_ns: int) -> dict[str, Any]:
    llm: dict[str, Any] = {}
    model = (_text(attrs.get(sc.MODEL_NAME)) or _text(attrs.get(sc.EMBEDDING_MODEL_NAME))
             or _text(attrs.get(lf.MODEL)) or _text(attrs.get(sc.REQUEST_MODEL)))
    if model:
        llm["model"] = model
    response_model = _text(attrs.get(sc.RESPONSE_MODEL)) or _text(attrs.get("llm.response.model_name"))
    if response_model:
        llm["response_model"] = response_model
    provider = (_text(attrs.get(sc.LLM_PROVIDER)) or _text(attrs.get(sc.PROVIDER_NAME))
                or _text(attrs.get(sc.SYSTEM)) or _text(attrs.get("llm.system")))
    if provider:
        llm["provider"] = provider
    operation = _text(attrs.get(sc.OPERATION_NAME))
    if operation:
        llm["operation"] = operation
    params = _params(attrs)
    if params:
        llm["params"] = params
    oi = oi_messages_from(attrs)
    for side, name in (("input", sc.INPUT_MESSAGES), ("output", sc.OUTPUT_MESSAGES)):
        messages = oi.get(side) or (genai_messages_from(attrs[name], side == "output") if name in attrs else None)
        if messages:
            llm[f"{side}_messages"] = messages
    usage = _usage(attrs)
    if usage:
        llm["usage"] = usage
    cost = _cost(attrs.get(sc.COST_TOTAL))
    if cost is None:
        cost = _cost(attrs.get("gen_ai.usage.cost"))
    if cost is None:
        details = parse_json(attrs.get(lf.COST))
        cost = _cost(details.get("total")) if isinstance(details, dict) else None
    if cost is not None:
        llm["cost_usd"] = cost
    ttft = _ttft_ns(attrs, start_ns)
    if ttft is not None:
        llm["time_to_first_token_ns"] = ttft
    return llm


def _value(attrs: Mapping[str, Any], value_key: str, mime_key: str, langfuse_key: str) -> Any:
    if value_key in attrs:
        value = attrs[value_key]
        if attrs.get(mime_key) == sc.JSON_MIME and isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
        return value
    if langfuse_key in attrs:
        return parse_json(attrs[langfuse_key])
    return None


def _tags(attrs: Mapping[str, Any]) -> list[str] | None:
    for name in (sc.TAGS, lf.TAGS):
        tags = parse_json(attrs.get(name))
        if isinstance(tags, str) and tags:
            return [tags]
        if isinstance(tags, (list, tuple)) and tags:
            return [str(t) for t in tags]
    return None


def lift(attrs: Mapping[str, Any], start_ns: int = 0) -> dict[str, Any]:
    """The record fields the known conventions' attributes say: kind, llm, input, output, trace-wide ones."""
    out: dict[str, Any] = {"kind": _kind(attrs)}
    llm = _llm(attrs, start_ns)
    if llm:
        out["llm"] = llm
    for side, keys, tool_key in (("input", (sc.INPUT_VALUE, sc.INPUT_MIME, lf.INPUT), sc.TOOL_CALL_ARGUMENTS),
                                 ("output", (sc.OUTPUT_VALUE, sc.OUTPUT_MIME, lf.OUTPUT), sc.TOOL_CALL_RESULT)):
        value = _value(attrs, *keys)
        if value is None and tool_key in attrs:
            value = parse_json(attrs[tool_key])
        if value is not None:
            out[side] = value
    session = _text(attrs.get(sc.SESSION_ID)) or _text(attrs.get(lf.SESSION)) or _text(attrs.get(sc.CONVERSATION_ID))
    if session:
        out["session_id"] = session
    user = next((str(attrs[k]) for k in USER_IDS if _text(attrs.get(k))), None)
    if user:
        out["user_id"] = user
    tags = _tags(attrs)
    if tags:
        out["tags"] = tags
    metadata = parse_json(attrs.get(sc.METADATA))
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    for key, value in attrs.items():
        if key.startswith(lf.METADATA):
            metadata.setdefault(key.split(".", 3)[3], parse_json(value))
    if metadata:
        out["metadata"] = metadata
    return out


# -- the record ------------------------------------------------------------------------------------------


def _error(span: OTelSpan, events: list[dict[str, Any]]) -> dict[str, str]:
    """The record's error for a failed span, taking the last `exception` event out of `events`."""
    for i in range(len(events) - 1, -1, -1):
        if events[i]["name"] == "exception":
            attrs = events.pop(i)["attributes"]
            return {"type": str(attrs.get("exception.type") or "Exception"),
                    "message": str(attrs.get("exception.message") or span.status_message),
                    "stack": str(attrs.get("exception.stacktrace") or "")}
    kind = span.attributes.get(sc.ERROR_TYPE)
    return {"type": str(kind or "Error"), "message": span.status_message}


def to_record(span: OTelSpan, service: str | None = None) -> Record:
    """A record v1 for `span`; `service` stands in for a resource without a real `service.name`."""
    raw = dict(span.attributes)  # one copy: SDK attribute mappings are slow to read key by key
    attributes = clean_attributes(raw)
    if span.scope_name:
        attributes.setdefault(SCOPE_NAME, span.scope_name)
        if span.scope_version:
            attributes.setdefault(SCOPE_VERSION, span.scope_version)
    name = span.name[:1024] if span.name else "unnamed"
    record: Record = {"v": 1, "trace_id": span.trace_id, "span_id": span.span_id, "name": name,
                    "start_ns": span.start_ns, "end_ns": span.end_ns}
    if span.parent_id:
        record["parent_id"] = span.parent_id
    record.update(lift(raw, span.start_ns))
    record["otel_kind"] = span.otel_kind
    record["status"] = span.status
    events = [{"name": str(n), "time_ns": int(t), "attributes": clean_attributes(a)} for n, t, a in span.events]
    if span.status == "error":
        record["error"] = _error(span, events)
    if events:
        record["events"] = events
    if span.links:
        record["links"] = [{"trace_id": t, "span_id": s, "attributes": clean_attributes(a)} for t, s, a in span.links]
    resource = clean_attributes(span.resource)
    own = resource.pop(sc.SERVICE_NAME, None)
    if isinstance(own, str) and own and (not own.startswith("unknown_service") or not service):
        record["service"] = own
    elif service:
        record["service"] = service
    project = resource.pop(sc.PROJECT_NAME, None)
    if isinstance(project, str) and project:
        record["project"] = project
    if resource:
        record["resource"] = resource
    record["attributes"] = attributes
    return record


# -- OTLP protobuf ---------------------------------------------------------------------------------------


def any_value(value: Any) -> Any:
    """An OTLP `AnyValue` message as a Python value (arrays as lists, kvlists as dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


_SCALAR_FIELDS = frozenset({"string_value", "int_value", "double_value", "bool_value", "bytes_value"})


def key_values(items: Iterable[Any]) -> dict[str, Any]:
    """OTLP `KeyValue`s as a dict (scalars read inline: a dozen or more per span)."""
    out: dict[str, Any] = {}
    scalars = _SCALAR_FIELDS
    for kv in items:
        value = kv.value
        which = value.WhichOneof("value")
        out[kv.key] = getattr(value, which) if which in scalars else any_value(value)
    return out


def from_request(request: Any) -> Iterable[tuple[OTelSpan, Any]]:
    """Each span of an `ExportTraceServiceRequest` as an `OTelSpan`, with the protobuf span it came from."""
    for resource_spans in request.resource_spans:
        resource = key_values(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for pb in scope_spans.spans:
                code = pb.status.code
                yield OTelSpan(
                    trace_id=pb.trace_id.hex(),
                    span_id=pb.span_id.hex(),
                    parent_id=pb.parent_span_id.hex() or None,
                    name=pb.name,
                    start_ns=pb.start_time_unix_nano,
                    end_ns=pb.end_time_unix_nano,
                    otel_kind=OTEL_KINDS[pb.kind] if 0 <= pb.kind < len(OTEL_KINDS) else "internal",
                    status=STATUS_CODES[code] if 0 <= code < len(STATUS_CODES) else "unset",
                    status_message=pb.status.message,
                    attributes=key_values(pb.attributes),
                    events=[(e.name, e.time_unix_nano, key_values(e.attributes)) for e in pb.events],
                    links=[(lk.trace_id.hex(), lk.span_id.hex(), key_values(lk.attributes)) for lk in pb.links],
                    resource=resource,
                    scope_name=scope.name,
                    scope_version=scope.version,
                ), pb
