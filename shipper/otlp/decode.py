"""OpenTelemetry spans → record v1: the reverse of `shipper.otlp.semconv`, shared by every OTel intake.

`shipper.otel` (spans of the app's own OpenTelemetry SDK) and the `otlp_http` receiver (OTLP protobuf or
JSON from any process) both describe a span as an `OTelSpan` and call `to_record`, so the same span gives
the same record whichever way it came. Nothing here imports protobuf or the OpenTelemetry SDK:
`from_request` reads an `ExportTraceServiceRequest` by field name.

What `to_record` does:
- every attribute is kept in `attributes`, made valid for a record (docs/record.md): a scalar or a list of
  scalars stays; a map, a nested or null-holding list, bytes, a non-finite float become text; keys are
  cut to 256 characters. Event and link attributes are treated the same way;
- OpenInference, OTel GenAI (`gen_ai.*`) and Langfuse (`langfuse.*`) attributes are *also* lifted into the
  record's fields: `kind`, `llm` (model, provider, operation, params, messages, usage, cost, response
  model, time to first token), `input`, `output` (for tool spans also from `gen_ai.tool.call.arguments` /
  `.result`), `session_id`, `user_id`, `tags`, `metadata`. Where conventions disagree, OpenInference
  wins, then Langfuse, then OTel GenAI; GenAI `uri` / `blob` / `file` message parts become OpenAI-style
  content parts (images as URLs or data URLs);
- the resource's `service.name` becomes `service` and `openinference.project.name` becomes `project`;
  the rest of the resource is `resource`; the instrumentation scope is kept as the attributes
  `otel.scope.name` / `otel.scope.version` (as OTLP-to-Zipkin exporters do);
- status: `OK` → `ok`, `ERROR` → `error` with `error` {type, message, stack} taken from the last
  `exception` event (which then leaves `events`: exporters re-create it from `error`), else from the
  status description and `error.type`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.errors import RecordError
from shipper.otlp import langfuse as lf
from shipper.otlp import semconv as sc
from shipper.otlp.messages import genai_messages_from, oi_messages_from
from shipper.otlp.text import parse_json
from shipper.record import KINDS, MAX_KEY_CHARS, Record, Reject, validate

__all__ = ["MAX_GROUPS", "OTelSpan", "check_groups", "clean_attributes", "clean_value", "decode_spans", "excerpt", "from_request", "lift", "to_record"]

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
#
# `lift` reads a few dozen fixed attribute names and a few name prefixes. Which of those names a span has
# (`_present`: one C-level set intersection) and whether a key has one of the prefixes depend on its
# attribute names only, so they are worked out once per list of names (`_plan`, kept in a bounded dict:
# spans of one instrumentation repeat theirs), with, for each lookup in several names, the ones there.
# Only the parts whose attributes are there run; a span without GenAI / OpenInference / Langfuse attributes
# costs a tuple of its names and a dict lookup. A name absent from the span reads as None, as `.get` would.

_MODEL_NAMES = (sc.MODEL_NAME, sc.EMBEDDING_MODEL_NAME, lf.MODEL, sc.REQUEST_MODEL)
_RESPONSE_MODEL_NAMES = (sc.RESPONSE_MODEL, "llm.response.model_name")
_PROVIDER_NAMES = (sc.LLM_PROVIDER, sc.PROVIDER_NAME, sc.SYSTEM, "llm.system")
_PARAMS_JSON_NAMES = (sc.INVOCATION_PARAMETERS, lf.PARAMS)
_COST_NAMES = (sc.COST_TOTAL, "gen_ai.usage.cost")
_SESSION_NAMES = (sc.SESSION_ID, lf.SESSION, sc.CONVERSATION_ID)
_TAG_NAMES = (sc.TAGS, lf.TAGS)
_SIDES = (("input", sc.INPUT_VALUE, sc.INPUT_MIME, lf.INPUT, sc.TOOL_CALL_ARGUMENTS, sc.INPUT_MESSAGES),
          ("output", sc.OUTPUT_VALUE, sc.OUTPUT_MIME, lf.OUTPUT, sc.TOOL_CALL_RESULT, sc.OUTPUT_MESSAGES))
_MESSAGE_NAMES = (("input", sc.INPUT_MESSAGES), ("output", sc.OUTPUT_MESSAGES))
_OI_MESSAGES = ("llm.input_messages.", "llm.output_messages.")
_PREFIXES = (*_OI_MESSAGES, *lf.METADATA)
"""Name prefixes `lift` reads: OpenInference's flattened messages and Langfuse's metadata entries."""


def _kind(attrs: Mapping[str, Any]) -> str:
    oi = attrs.get(sc.SPAN_KIND)
    if isinstance(oi, str) and oi.lower() in KINDS:
        return oi.lower()
    # Only text can name a kind; an array or kvlist value (unhashable) is no kind, not an error.
    observation = attrs.get(lf.TYPE)
    langfuse_kind = lf.KINDS.get(observation) if isinstance(observation, str) else None
    if langfuse_kind:
        return langfuse_kind
    operation = attrs.get(sc.OPERATION_NAME)
    return GENAI_KINDS.get(operation, "span") if isinstance(operation, str) else "span"


_USAGE_ORDER = (*GENAI_USAGE_OLD.items(), *((k, v) for k, v in _USAGE_OF.items() if k.startswith("gen_ai.")),
                *((k, v) for k, v in _USAGE_OF.items() if k.startswith("llm.")))
"""Token-count attributes, weakest first: a later (OpenInference) one overrides an earlier one."""
_USAGE_NAMES = frozenset(name for name, _ in _USAGE_ORDER)
_PARAM_NAMES = frozenset(_PARAM_OF)
_KIND_NAMES = frozenset({sc.SPAN_KIND, lf.TYPE, sc.OPERATION_NAME})
_TTFT_NAMES = frozenset({sc.TIME_TO_FIRST_CHUNK, lf.COMPLETION_START})
_LIFT_NAMES = frozenset({*_KIND_NAMES, *_MODEL_NAMES, *_RESPONSE_MODEL_NAMES, *_PROVIDER_NAMES, *_PARAMS_JSON_NAMES,
                         *_PARAM_NAMES, *_USAGE_NAMES, lf.USAGE, *_COST_NAMES, lf.COST, *_TTFT_NAMES,
                         *(name for side in _SIDES for name in side[1:]), *_SESSION_NAMES, *USER_IDS, *_TAG_NAMES,
                         sc.METADATA})
"""Every attribute name `lift` reads by name."""


def _present(attrs: Mapping[str, Any]) -> frozenset[str]:
    """The names of `_LIFT_NAMES` that `attrs` has."""
    return _LIFT_NAMES.intersection(attrs)


def _prefixed(attrs: Mapping[str, Any]) -> bool:
    """Whether some key of `attrs` starts with one of `_PREFIXES`."""
    try:
        joined = "".join(attrs)
    except TypeError:  # a key that is not text: let the exact loops decide
        return True
    if "_messages." not in joined and "metadata." not in joined:  # each prefix holds one of the two
        return False
    return any(key.startswith(_PREFIXES) for key in attrs)


def _usage(attrs: Mapping[str, Any], plan: _Plan) -> dict[str, int]:
    usage: dict[str, int] = {}
    for name, key in plan.usage:
        value = attrs[name]
        count = value if type(value) is int and value >= 0 else _count(value)
        if count is not None:
            usage[key] = count
    if not plan.langfuse_usage:
        return usage
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


def _params(attrs: Mapping[str, Any], plan: _Plan) -> dict[str, Any] | None:
    for name in plan.params_json:
        params = parse_json(attrs[name])
        if isinstance(params, dict) and params:
            return params
    if not plan.params:
        return None
    return {key: attrs[name] for name, key in plan.params}


def _ttft_ns(attrs: Mapping[str, Any], start_ns: int) -> int | None:
    seconds = attrs.get(sc.TIME_TO_FIRST_CHUNK)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        try:
            ns = seconds * 1e9
        except OverflowError:  # an int too large for a float
            return None
        return round(ns) if math.isfinite(ns) else None  # inf (or a double near its limit) is no duration
    stamp = attrs.get(lf.COMPLETION_START)
    if isinstance(stamp, str) and stamp:
        try:
            first = datetime.fromisoformat(stamp.replace("Z", "+00:00").strip('"')).timestamp()
        except ValueError:
            return None
        delta = round(first * 1e9) - start_ns
        return delta if delta >= 0 else None
    return None


def _first_text(attrs: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    """The first of `names` (all in attrs) holding a non-empty string: what `_text(a) or _text(b) or ...` gives."""
    for name in names:
        value = attrs[name]
        if isinstance(value, str) and value:
            return value
    return None


class _Plan:
    """What lift needs to know of one span's attribute names: `present` (the `_LIFT_NAMES` there), `prefixed`
    (whether one starts with one of `_PREFIXES`), and of each lookup in several names the ones there, in order."""

    __slots__ = ("cost", "kind", "langfuse_usage", "messages", "model", "params", "params_json", "prefixed",
                 "present", "provider", "response_model", "session", "tags", "ttft", "usage", "user")

    def __init__(self, attrs: Mapping[str, Any]) -> None:
        self.present = present = _present(attrs)
        self.prefixed = _prefixed(attrs)

        def there(names: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(name for name in names if name in present)

        self.kind = not _KIND_NAMES.isdisjoint(present)
        self.messages = sc.INPUT_MESSAGES in present or sc.OUTPUT_MESSAGES in present
        self.model, self.response_model = there(_MODEL_NAMES), there(_RESPONSE_MODEL_NAMES)
        self.provider, self.params_json = there(_PROVIDER_NAMES), there(_PARAMS_JSON_NAMES)
        self.params = tuple((name, key) for name, key in _PARAM_OF.items() if name in present)
        self.usage = tuple((name, key) for name, key in _USAGE_ORDER if name in present)
        self.langfuse_usage = lf.USAGE in present
        self.cost, self.ttft = there(_COST_NAMES), not _TTFT_NAMES.isdisjoint(present)
        self.session, self.user, self.tags = there(_SESSION_NAMES), there(USER_IDS), there(_TAG_NAMES)


_PLANS_MAX, _PLAN_KEYS_MAX = 1024, 64
_plans: dict[tuple[str, ...], _Plan] = {}
"""Plans by the span's attribute names as they come (spans of one instrumentation repeat theirs); bounded."""


def _plan(attrs: Mapping[str, Any]) -> _Plan:
    names = tuple(attrs)
    plan = _plans.get(names)
    if plan is None:
        plan = _Plan(attrs)
        if len(names) <= _PLAN_KEYS_MAX:
            if len(_plans) >= _PLANS_MAX:
                _plans.clear()
            _plans[names] = plan
    return plan


def _llm(attrs: Mapping[str, Any], start_ns: int, present: frozenset[str], plan: _Plan,
         prefixed: bool) -> dict[str, Any]:
    """`present`: the `_LIFT_NAMES` attrs has; `prefixed`: whether a key may have one of `_PREFIXES`."""
    llm: dict[str, Any] = {}
    model = _first_text(attrs, plan.model)
    if model:
        llm["model"] = model
    response_model = _first_text(attrs, plan.response_model)
    if response_model:
        llm["response_model"] = response_model
    provider = _first_text(attrs, plan.provider)
    if provider:
        llm["provider"] = provider
    if sc.OPERATION_NAME in present:
        operation = _text(attrs[sc.OPERATION_NAME])
        if operation:
            llm["operation"] = operation
    params = _params(attrs, plan)
    if params:
        llm["params"] = params
    if prefixed or plan.messages:
        oi = oi_messages_from(attrs) if prefixed else {}
        for side, name in _MESSAGE_NAMES:
            messages = oi.get(side) or (genai_messages_from(attrs[name], side == "output") if name in present
                                        else None)
            if messages:
                llm[f"{side}_messages"] = messages
    usage = _usage(attrs, plan)
    if usage:
        llm["usage"] = usage
    cost = None
    for name in plan.cost:
        cost = _cost(attrs[name])
        if cost is not None:
            break
    if cost is None and lf.COST in present:
        details = parse_json(attrs[lf.COST])
        cost = _cost(details.get("total")) if isinstance(details, dict) else None
    if cost is not None:
        llm["cost_usd"] = cost
    if plan.ttft:
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


def _tags(attrs: Mapping[str, Any], plan: _Plan) -> list[str] | None:
    for name in plan.tags:
        tags = parse_json(attrs[name])
        if isinstance(tags, str) and tags:
            return [tags]
        if isinstance(tags, (list, tuple)) and tags:
            return [str(t) for t in tags]
    return None


def lift(attrs: Mapping[str, Any], start_ns: int = 0) -> dict[str, Any]:
    """The record fields the known conventions' attributes say: kind, llm, input, output, trace-wide ones."""
    out: dict[str, Any] = {}
    _lift_into(out, attrs, start_ns)
    return out


def _lift_into(out: dict[str, Any], attrs: Mapping[str, Any], start_ns: int) -> None:
    """`lift(attrs, start_ns)`'s fields, set in `out` in the same order."""
    plan = _plan(attrs)
    present, prefixed = plan.present, plan.prefixed
    out["kind"] = _kind(attrs) if plan.kind else "span"
    if not present and not prefixed:
        return
    llm = _llm(attrs, start_ns, present, plan, prefixed)
    if llm:
        out["llm"] = llm
    for side, value_key, mime_key, langfuse_key, tool_key, _ in _SIDES:
        value = _value(attrs, value_key, mime_key, langfuse_key) if (
            value_key in present or langfuse_key in present) else None
        if value is None and tool_key in present:
            value = parse_json(attrs[tool_key])
        if value is not None:
            out[side] = value
    session = _first_text(attrs, plan.session)
    if session:
        out["session_id"] = session
    for name in plan.user:
        if _text(attrs[name]):
            out["user_id"] = str(attrs[name])
            break
    tags = _tags(attrs, plan)
    if tags:
        out["tags"] = tags
    metadata = parse_json(attrs[sc.METADATA]) if sc.METADATA in present else None
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    if prefixed:
        for key, value in attrs.items():
            if key.startswith(lf.METADATA):
                metadata.setdefault(key.split(".", 3)[3], parse_json(value))
    if metadata:
        out["metadata"] = metadata


# -- the record ------------------------------------------------------------------------------------------


def _error(status_message: str, attributes: Mapping[str, Any], events: list[dict[str, Any]]) -> dict[str, str]:
    """The record's error for a failed span, taking the last `exception` event out of `events`."""
    for i in range(len(events) - 1, -1, -1):
        if events[i]["name"] == "exception":
            attrs = events.pop(i)["attributes"]
            return {"type": str(attrs.get("exception.type") or "Exception"),
                    "message": str(attrs.get("exception.message") or status_message),
                    "stack": str(attrs.get("exception.stacktrace") or "")}
    kind = attributes.get(sc.ERROR_TYPE)
    return {"type": str(kind or "Error"), "message": status_message}


class ResourceFields:
    """A span's resource as the record's `service`, `project` and `resource`, worked out once per resource.

    Every span of one OTLP `ResourceSpans` shares its resource: made with `shared=True`, `fields_into` gives
    each record a copy of `resource` (so a processor changing one record's never changes another's); else
    the one record takes the dict itself.
    """

    __slots__ = ("_lists", "own", "project", "raw", "rest", "shared")

    def __init__(self, raw: Mapping[str, Any], shared: bool = False) -> None:
        self.raw = raw
        self.shared = shared
        rest = clean_attributes(raw)
        self.own = rest.pop(sc.SERVICE_NAME, None)
        project = rest.pop(sc.PROJECT_NAME, None)
        self.project = project if isinstance(project, str) and project else None
        self.rest = rest
        self._lists = any(type(v) is list for v in rest.values())
        """Lists are the only mutable values a cleaned resource holds: with some, each copy is cleaned anew."""

    def fields_into(self, record: Record, service: str | None) -> None:
        """Set `service`, `project` and `resource` in `record` as the resource says (`service`: the fallback)."""
        own = self.own
        if isinstance(own, str) and own and (not own.startswith("unknown_service") or not service):
            record["service"] = own
        elif service:
            record["service"] = service
        if self.project is not None:
            record["project"] = self.project
        rest = self.rest
        if rest:
            if self.shared:
                rest = ResourceFields(self.raw).rest if self._lists else rest.copy()
            record["resource"] = rest


def build_record(trace_id: str, span_id: str, parent_id: str | None, name: str, start_ns: int, end_ns: int,
                 otel_kind: str, status: str, status_message: str, raw: Mapping[str, Any],
                 attributes: dict[str, Any], events: Iterable[tuple[str, int, Mapping[str, Any]]],
                 links: Iterable[tuple[str, str, Mapping[str, Any]]], resource: ResourceFields, scope_name: str,
                 scope_version: str, service: str | None = None) -> Record:
    """The record v1 of one span (what `to_record` gives): `raw` its attributes as given, `attributes` the
    same made valid (`clean_attributes(raw)`, or `raw` itself when that changes nothing; never shared with
    another record), `resource` its resource's `ResourceFields`."""
    record: Record = {"v": 1, "trace_id": trace_id, "span_id": span_id, "name": name[:1024] if name else "unnamed",
                      "start_ns": start_ns, "end_ns": end_ns}
    if parent_id:
        record["parent_id"] = parent_id
    _lift_into(record, raw, start_ns)
    if scope_name:  # after lift: `attributes` may be `raw`, and the scope is no attribute of the span's own
        attributes.setdefault(SCOPE_NAME, scope_name)
        if scope_version:
            attributes.setdefault(SCOPE_VERSION, scope_version)
    record["otel_kind"] = otel_kind
    record["status"] = status
    event_list = [{"name": str(n), "time_ns": int(t), "attributes": clean_attributes(a)}
                  for n, t, a in events] if events else []
    if status == "error":
        record["error"] = _error(status_message, raw, event_list)
    if event_list:
        record["events"] = event_list
    if links:
        record["links"] = [{"trace_id": t, "span_id": s, "attributes": clean_attributes(a)} for t, s, a in links]
    resource.fields_into(record, service)
    record["attributes"] = attributes
    return record


def to_record(span: OTelSpan, service: str | None = None) -> Record:
    """A record v1 for `span`; `service` stands in for a resource without a real `service.name`."""
    raw = dict(span.attributes)  # one copy: SDK attribute mappings are slow to read key by key
    return build_record(span.trace_id, span.span_id, span.parent_id, span.name, span.start_ns, span.end_ns,
                        span.otel_kind, span.status, span.status_message, raw, clean_attributes(raw), span.events,
                        span.links, ResourceFields(span.resource), span.scope_name, span.scope_version, service)


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


MAX_GROUPS = 10_000
"""ResourceSpans and ScopeSpans one request may hold together (an SDK sends one of each; a collector one
per service it batches)."""


def check_groups(request: Any) -> None:
    """Raise protobuf's `DecodeError` when `request` holds more than `MAX_GROUPS` ResourceSpans and
    ScopeSpans: each costs Python time to visit even when empty, and 16 MiB of empty ones held the event
    loop for 15.7 s with nothing to decode."""
    groups = len(request.resource_spans)
    if groups <= MAX_GROUPS:
        for resource_spans in request.resource_spans:
            groups += len(resource_spans.scope_spans)
            if groups > MAX_GROUPS:
                break
    if groups > MAX_GROUPS:
        raise DecodeError(f"it holds more than {MAX_GROUPS} ResourceSpans and ScopeSpans together; send "
                          "the spans of one resource and scope in one of each")


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


def decode_spans(message: ExportTraceServiceRequest, max_record_bytes: int) -> tuple[list[dict[str, Any]],
                                                                                     list[Reject]]:
    """The request's spans as valid records, and a `Reject` for each span that is not one."""
    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for otel, pb in from_request(message):
        try:
            records.append(validate(to_record(otel)))
        except RecordError as exc:
            rejects.append(Reject(exc.reason, exc.detail, excerpt(pb, max_record_bytes)))
    return records, rejects


def excerpt(pb: Any, limit: int) -> bytes:
    """The rejected span as it came (JSON text), capped, for the rejected-records log."""
    try:
        text: bytes = json_format.MessageToJson(pb, indent=None).encode()
    except Exception:
        text = b""
    return text[: min(limit, 65536)]
