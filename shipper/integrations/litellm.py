"""litellm → shipper: `ShipperCallback`, a litellm `CustomLogger` that records one `llm` span per call.

    import litellm
    from shipper.integrations.litellm import ShipperCallback
    litellm.callbacks = [ShipperCallback()]

Each completion (sync or async, streamed or not, succeeded or failed) becomes one record: model,
provider, parameters, input and output messages (the input messages are also the record's `input`, the
answer its `output`), usage, cost (litellm's `response_cost`), latency (start and end), time to first
token for streams, the error for failures. Metadata keys work as with litellm's
Langfuse callback (`metadata={...}` on the call):

    trace_id         calls with the same value share one trace (a 32-hex or UUID value is used as is,
                     any other text is hashed); `existing_trace_id` likewise
    trace_name       the span's name when it is a trace's root (kept in metadata too)
    generation_name  the span's name (default `litellm.<call_type>`, e.g. `litellm.completion`)
    session_id, trace_user_id (else the current trace's user, else the call's `user=`), tags
                     the trace-wide fields
    trace_metadata   a dict merged into the record's metadata; other keys are kept in metadata as given

Nesting: a call made inside a shipper span (`@shipper.traced`, `shipper.span`) becomes that span's child,
so a traced function that makes two calls gives one trace with two children. litellm may run success
callbacks on its logging thread pool or event-loop worker, so the current span is taken when the call
starts (`log_pre_api_call`, keyed by `litellm_call_id`), not when the callback runs.
"""

from __future__ import annotations

import hashlib
import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from shipper.client import transport
from shipper.client.context import current_fields
from shipper.client.ids import new_span_id, new_trace_id
from shipper.client.propagation import extract, inject

__all__ = ["ShipperCallback", "aflush", "install"]

_HEX32 = re.compile(r"[0-9a-f]{32}")
_KEPT = 10_000
_TRACE_KEYS = frozenset({"trace_id", "existing_trace_id", "trace_name", "generation_name", "session_id",
                         "trace_user_id", "tags", "trace_metadata", "hidden_params"})
_STRIPPED = frozenset({"headers", "endpoint", "caching_groups", "previous_models"})
"""Metadata keys litellm's Langfuse callback leaves out; shipper does too."""
_OPERATIONS = {"completion": "chat", "acompletion": "chat", "text_completion": "text_completion",
               "atext_completion": "text_completion", "embedding": "embeddings", "aembedding": "embeddings",
               "responses": "chat", "aresponses": "chat"}


def trace_id_of(value: Any) -> str | None:
    """A W3C trace id for a litellm/Langfuse `trace_id`: 32-hex and UUIDs as they are, other text hashed."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    bare = text.replace("-", "")
    if _HEX32.fullmatch(bare) and bare != "0" * 32:
        return bare
    return hashlib.sha256(str(value).encode()).hexdigest()[:32]


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _dump(obj: Any) -> Any:
    """A litellm/pydantic object as plain data."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_dump(v) for v in obj]
    for method in ("model_dump", "dict"):
        fn = getattr(obj, method, None)
        if callable(fn):
            try:
                return _dump(fn())
            except Exception:
                continue
    return repr(obj)


def _ns(seconds: Any) -> int | None:
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return round(seconds * 1e9)
    timestamp = getattr(seconds, "timestamp", None)  # a datetime
    return round(timestamp() * 1e9) if callable(timestamp) else None


def _messages(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list) or not value:
        return None
    out = []
    for message in value:
        message = _dump(message)
        if not isinstance(message, dict):
            return None
        out.append({k: v for k, v in message.items() if v is not None} | {"role": message.get("role") or "user"})
    return out


def _output_messages(response: Any) -> list[dict[str, Any]]:
    out = []
    for choice in _get(response, "choices") or ():
        message = _dump(_get(choice, "message"))
        if not isinstance(message, dict):
            continue
        entry = {k: v for k, v in message.items() if v is not None and k != "function_call"}
        entry.setdefault("role", "assistant")
        if _get(choice, "finish_reason"):
            entry["finish_reason"] = _get(choice, "finish_reason")
        out.append(entry)
    return out


def _usage(response: Any, slo: Mapping[str, Any]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for key, name in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens"),
                      ("total_tokens", "total_tokens")):
        value = slo.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            value = _get(_get(response, "usage"), name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            usage[key] = value
    raw = _get(response, "usage")
    cached = _get(_get(raw, "prompt_tokens_details"), "cached_tokens")
    if isinstance(cached, int) and cached > 0:
        usage["cache_read_tokens"] = cached
    reasoning = _get(_get(raw, "completion_tokens_details"), "reasoning_tokens")
    if isinstance(reasoning, int) and reasoning > 0:
        usage["reasoning_tokens"] = reasoning
    return usage


def _end_user(kwargs: Mapping[str, Any]) -> str | None:
    """The call's `user=` (OpenAI's end-user id), wherever this litellm version passes it."""
    slo = kwargs.get("standard_logging_object") or {}
    for where in (kwargs, kwargs.get("optional_params"), slo.get("model_parameters")):
        user = where.get("user") if isinstance(where, Mapping) else None
        if isinstance(user, str) and user:
            return user
    user = slo.get("end_user")
    return user if isinstance(user, str) and user else None


class ShipperCallback(CustomLogger):
    """One shipper `llm` span per litellm call; register with `litellm.callbacks = [ShipperCallback()]`."""

    def __init__(self, service: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self._parents: OrderedDict[str, tuple[str | None, str | None, Any]] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    # litellm's hooks: the parameter names are litellm's (it passes them by keyword).

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self._remember(kwargs)

    async def async_log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self._remember(kwargs)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    # What the call runs in, taken when it starts.

    def _remember(self, kwargs: Mapping[str, Any]) -> None:
        try:
            call_id = kwargs.get("litellm_call_id")
            if not call_id:
                return
            context = self._current()
            if context == (None, None, None):
                return
            with self._lock:
                self._parents[call_id] = context
                while len(self._parents) > _KEPT:
                    self._parents.popitem(last=False)
        except Exception:  # nothing of ours may reach the app
            pass

    @staticmethod
    def _current() -> tuple[str | None, str | None, Any]:
        """(trace id, span id, trace-wide fields) of the current shipper span, through the public W3C
        round trip (`inject` then `extract`), so no private state of the client is read."""
        remote = extract(inject({}))
        if remote is not None:
            return remote.trace_id, remote.span_id, remote.fields
        return None, None, current_fields()

    def _record(self, kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any,
                failed: bool) -> None:
        try:
            call_id = kwargs.get("litellm_call_id") or ""
            with self._lock:
                if call_id:
                    if call_id in self._done:
                        return
                    self._done[call_id] = None
                    while len(self._done) > _KEPT:
                        self._done.popitem(last=False)
                context = self._parents.pop(call_id, None)
            if context is None:
                context = self._current()
            transport.emit_record(self.build(kwargs, response, start_time, end_time, failed, context))
        except Exception:  # a callback error must never reach litellm or the app
            pass

    def build(self, kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any, failed: bool,
              context: tuple[str | None, str | None, Any] = (None, None, None)) -> dict[str, Any]:
        """The record v1 of one call, from litellm's callback arguments."""
        slo: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
        params = kwargs.get("litellm_params") or {}
        metadata: Mapping[str, Any] = params.get("metadata") or {}
        call_type = str(slo.get("call_type") or kwargs.get("call_type") or "completion")
        parent_trace, parent_span, fields = context
        trace_id = (parent_trace or trace_id_of(metadata.get("existing_trace_id"))
                    or trace_id_of(metadata.get("trace_id")) or new_trace_id())
        start_ns = _ns(slo.get("startTime")) or _ns(start_time) or 0
        end_ns = max(_ns(slo.get("endTime")) or _ns(end_time) or start_ns, start_ns)
        name = metadata.get("generation_name") or (metadata.get("trace_name") if parent_span is None else None)
        record: dict[str, Any] = {
            "v": 1, "trace_id": trace_id, "span_id": new_span_id(),
            "name": str(name or f"litellm.{call_type}")[:1024],
            "kind": "embedding" if "embedding" in call_type else "llm",
            "otel_kind": "client", "start_ns": start_ns, "end_ns": end_ns,
            "service": self.service or transport.active().service,
        }
        if parent_span:
            record["parent_id"] = parent_span
        llm = self._llm(kwargs, slo, response, call_type, start_ns, failed)
        record["llm"] = llm
        if "input_messages" in llm:  # the span's Input, as on every other LLM span
            record["input"] = llm["input_messages"]
        elif kwargs.get("input") is not None:  # embeddings: the texts
            record["input"] = _dump(kwargs.get("input"))
        if not failed:
            outputs = llm.get("output_messages") or []
            contents = [m.get("content") for m in outputs]
            if len(outputs) == 1 and isinstance(contents[0], str) and not outputs[0].get("tool_calls"):
                record["output"] = contents[0]
            elif outputs:
                record["output"] = outputs
            record["status"] = "ok"
        else:
            record["status"] = "error"
            record["error"] = self._error(kwargs, slo)
        self._trace_wide(record, kwargs, metadata, fields)
        extra = self._metadata(kwargs, slo, metadata)
        if extra:
            record["metadata"] = extra
        return record

    @staticmethod
    def _llm(kwargs: Mapping[str, Any], slo: Mapping[str, Any], response: Any, call_type: str, start_ns: int,
             failed: bool) -> dict[str, Any]:
        llm: dict[str, Any] = {"operation": _OPERATIONS.get(call_type, call_type)}
        model = slo.get("model") or kwargs.get("model")
        if model:
            llm["model"] = str(model)
        provider = slo.get("custom_llm_provider") or kwargs.get("custom_llm_provider")
        if provider:
            llm["provider"] = str(provider)
        params = slo.get("model_parameters")
        if not isinstance(params, dict):
            params = {k: v for k, v in (kwargs.get("optional_params") or {}).items() if k != "extra_body"}
        if params:
            llm["params"] = _dump(params)
        messages = None if "embedding" in call_type else (
            _messages(slo.get("messages")) or _messages(kwargs.get("messages")))
        if messages is not None:
            llm["input_messages"] = messages
        if failed:
            return llm
        if response is None or isinstance(response, (str, bytes)):
            response = slo.get("response")
        outputs = _output_messages(response)
        if outputs:
            llm["output_messages"] = outputs
        response_model = _get(response, "model")
        if isinstance(response_model, str) and response_model:
            llm["response_model"] = response_model
        usage = _usage(response, slo)
        if usage:
            llm["usage"] = usage
        cost = kwargs.get("response_cost")
        if not isinstance(cost, (int, float)) or isinstance(cost, bool):
            cost = slo.get("response_cost")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
            llm["cost_usd"] = float(cost)
        if slo.get("stream") or kwargs.get("stream"):
            first = _ns(slo.get("completionStartTime")) or _ns(kwargs.get("completion_start_time"))
            if first is not None and first >= start_ns:
                llm["time_to_first_token_ns"] = first - start_ns
        return llm

    @staticmethod
    def _error(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> dict[str, str]:
        info = slo.get("error_information") or {}
        exc = kwargs.get("exception")
        kind = info.get("error_class") or (type(exc).__name__ if exc is not None else "Error")
        if exc is not None and type(exc).__name__ == kind:
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        message = slo.get("error_str") or info.get("error_message") or (str(exc) if exc is not None else "")
        stack = kwargs.get("traceback_exception") or info.get("traceback") or ""
        if not stack and isinstance(exc, BaseException):
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return {"type": str(kind), "message": str(message), "stack": str(stack)}

    @staticmethod
    def _trace_wide(record: dict[str, Any], kwargs: Mapping[str, Any], metadata: Mapping[str, Any],
                    fields: Any) -> None:
        session = metadata.get("session_id") or (fields.session_id if fields else None)
        user = metadata.get("trace_user_id") or (fields.user_id if fields else None) or _end_user(kwargs)
        tags = list(fields.tags) if fields and fields.tags else []
        given = metadata.get("tags")
        if isinstance(given, str):
            given = [given]
        for tag in given or ():
            if str(tag) not in tags:
                tags.append(str(tag))
        if session:
            record["session_id"] = str(session)
        if user:
            record["user_id"] = str(user)
        if tags:
            record["tags"] = tags
        if fields is not None and fields.project:
            record["project"] = fields.project

    @staticmethod
    def _metadata(kwargs: Mapping[str, Any], slo: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        trace_metadata = metadata.get("trace_metadata")
        if isinstance(trace_metadata, Mapping):
            out.update(_dump(trace_metadata))
        for key, value in metadata.items():
            if key not in _TRACE_KEYS and key not in _STRIPPED and value is not None:
                out[str(key)] = _dump(value)
        for key in ("trace_name", "trace_id"):
            if metadata.get(key):
                out[key] = str(metadata[key])
        call_id = kwargs.get("litellm_call_id")
        if call_id:
            out["litellm_call_id"] = str(call_id)
        if slo.get("cache_hit"):
            out["cache_hit"] = True
        return out


def install(**kwargs: Any) -> ShipperCallback:
    """Add a `ShipperCallback` to `litellm.callbacks` (once) and return it."""
    import litellm

    for callback in litellm.callbacks:
        if isinstance(callback, ShipperCallback):
            return callback
    callback = ShipperCallback(**kwargs)
    litellm.callbacks.append(callback)
    return callback


async def aflush() -> None:
    """Wait until litellm has run the async callbacks it queued; await it before an event loop ends.

    litellm runs `async_log_success_event` on a worker of the running event loop, after the call has
    returned: `asyncio.run(main())` may end before it ran, and the span would never be sent.
    """
    import asyncio

    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # an older litellm without the worker: callbacks ran inline
        return
    for _ in range(3):  # let the tasks litellm created at the end of the call queue their callbacks
        await asyncio.sleep(0)
    await GLOBAL_LOGGING_WORKER.flush()

