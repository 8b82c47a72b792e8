"""Attribute names of OTel GenAI (`gen_ai.*`) and OpenInference, and a record's fields mapped onto them.

One module owns the names so that the exporters (record → attributes) and the OpenTelemetry receiver
(attributes → record) agree. Values are OTLP-ready: scalars, homogeneous lists of scalars, or JSON text
for anything structured. The mappers never raise on odd but valid records; a field that is absent yields
no attribute.

Record field           OTel GenAI                              OpenInference
kind                   gen_ai.operation.name (llm, embedding,  openinference.span.kind (upper case; task →
                       tool, agent)                            CHAIN, span → UNKNOWN)
llm.model              gen_ai.request.model                    llm.model_name
llm.response_model     gen_ai.response.model                   -
llm.provider           gen_ai.provider.name, gen_ai.system     llm.provider
llm.params             gen_ai.request.<name> (known scalars)   llm.invocation_parameters (JSON)
llm.input_messages     gen_ai.input.messages (JSON, parts)     llm.input_messages.N.message.role|content|...
llm.output_messages    gen_ai.output.messages (JSON, parts)    llm.output_messages.N.message.*
llm.usage              gen_ai.usage.input_tokens|output_tokens llm.token_count.prompt|completion|total
                       |total_tokens, cache_read.input_tokens,  .prompt_details.cache_read,
                       reasoning.output_tokens                 .completion_details.reasoning
llm.cost_usd           -                                       llm.cost.total
llm.time_to_first_     gen_ai.response.time_to_first_chunk (s) -
  token_ns
input / output         -                                       input.value|mime_type, output.value|mime_type
session_id             gen_ai.conversation.id                  session.id
user_id                -                                       user.id
tags                   -                                       tag.tags
metadata               -                                       metadata (JSON)
error.type             error.type                              (exception event, see shipper.otlp.encode)
"""

from __future__ import annotations

from typing import Any

import orjson

from shipper.record import Record

__all__ = [
    "AGENT_NAME",
    "Attributes",
    "CONVERSATION_ID",
    "COST_TOTAL",
    "EMBEDDING_MODEL_NAME",
    "ERROR_TYPE",
    "GENAI_OPERATION",
    "GENAI_PARAMS",
    "GENAI_USAGE",
    "INPUT_MESSAGES",
    "INPUT_MIME",
    "INPUT_VALUE",
    "INVOCATION_PARAMETERS",
    "JSON_MIME",
    "LLM_PROVIDER",
    "METADATA",
    "MODEL_NAME",
    "OI_INPUT_MESSAGES",
    "OI_OUTPUT_MESSAGES",
    "OI_TOKENS",
    "OPENINFERENCE_KIND",
    "OPERATION_NAME",
    "OUTPUT_MESSAGES",
    "OUTPUT_MIME",
    "OUTPUT_VALUE",
    "PROJECT_NAME",
    "PROVIDER_NAME",
    "REQUEST_MODEL",
    "RESPONSE_MODEL",
    "SERVICE_NAME",
    "SESSION_ID",
    "SPAN_KIND",
    "SYSTEM",
    "TAGS",
    "TEXT",
    "TIME_TO_FIRST_CHUNK",
    "TOOL_NAME",
    "USER_ID",
    "genai_attributes",
    "genai_messages",
    "json_text",
    "openinference_attributes",
    "value_and_mime",
]

Attributes = dict[str, Any]

SERVICE_NAME = "service.name"
PROJECT_NAME = "openinference.project.name"
"""Resource attribute Phoenix reads the project from."""

# OTel GenAI
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
CONVERSATION_ID = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
AGENT_NAME = "gen_ai.agent.name"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
ERROR_TYPE = "error.type"
GENAI_USAGE = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "total_tokens": "gen_ai.usage.total_tokens",
    "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
}
GENAI_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "stop": "gen_ai.request.stop_sequences",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
    "stream": "gen_ai.request.stream",
}
"""Record `llm.params` keys (OpenAI names) and the `gen_ai.request.*` attribute each becomes."""
GENAI_OPERATION = {"llm": "chat", "embedding": "embeddings", "tool": "execute_tool", "agent": "invoke_agent"}
"""Default `gen_ai.operation.name` per record kind when `llm.operation` does not say."""

# OpenInference
SPAN_KIND = "openinference.span.kind"
OPENINFERENCE_KIND = {
    "llm": "LLM", "chain": "CHAIN", "tool": "TOOL", "agent": "AGENT", "embedding": "EMBEDDING",
    "retriever": "RETRIEVER", "reranker": "RERANKER", "guardrail": "GUARDRAIL", "evaluator": "EVALUATOR",
    "prompt": "PROMPT", "task": "CHAIN", "span": "UNKNOWN",
}
"""Record kind → `openinference.span.kind`; `task` and `span` have no OpenInference kind of their own."""
MODEL_NAME = "llm.model_name"
LLM_PROVIDER = "llm.provider"
INVOCATION_PARAMETERS = "llm.invocation_parameters"
OI_INPUT_MESSAGES = "llm.input_messages"
OI_OUTPUT_MESSAGES = "llm.output_messages"
OI_TOKENS = {
    "input_tokens": "llm.token_count.prompt",
    "output_tokens": "llm.token_count.completion",
    "total_tokens": "llm.token_count.total",
    "cache_read_tokens": "llm.token_count.prompt_details.cache_read",
    "reasoning_tokens": "llm.token_count.completion_details.reasoning",
}
COST_TOTAL = "llm.cost.total"
INPUT_VALUE, INPUT_MIME = "input.value", "input.mime_type"
OUTPUT_VALUE, OUTPUT_MIME = "output.value", "output.mime_type"
SESSION_ID = "session.id"
USER_ID = "user.id"
TAGS = "tag.tags"
METADATA = "metadata"
EMBEDDING_MODEL_NAME = "embedding.model_name"
TEXT, JSON_MIME = "text/plain", "application/json"

_SCALARS = (str, bool, int, float)


def json_text(value: Any) -> str:
    """`value` as compact JSON text (non-JSON values are written with `str`)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def value_and_mime(value: Any) -> tuple[str, str]:
    """An input or output as OpenInference `*.value` text and its `*.mime_type`."""
    if isinstance(value, str):
        return value, TEXT
    return json_text(value), JSON_MIME


def _scalar_or_json(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return json_text(value)


def genai_messages(messages: list[Any], output: bool = False) -> str:
    """Record messages as the JSON text of `gen_ai.input.messages` / `gen_ai.output.messages` (parts form)."""
    converted = []
    for message in messages:
        if not isinstance(message, dict):
            converted.append({"role": "user", "parts": [{"type": "text", "content": str(message)}]})
            continue
        parts: list[dict[str, Any]] = []
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text", "content": content})
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    parts.append({"type": "text", "content": part.get("text", "")})
                else:
                    parts.append({"type": "generic", "content": part})
        elif content is not None:
            parts.append({"type": "text", "content": json_text(content)})
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                function = call.get("function") or {}
                parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                              "arguments": function.get("arguments")})
        entry: dict[str, Any] = {"role": message.get("role", "assistant" if output else "user"), "parts": parts}
        if message.get("tool_call_id"):
            entry["parts"] = [{"type": "tool_call_response", "id": message["tool_call_id"],
                               "response": content}]
        if output and message.get("finish_reason"):
            entry["finish_reason"] = message["finish_reason"]
        converted.append(entry)
    return json_text(converted)


def genai_attributes(rec: Record) -> Attributes:
    """The OTel GenAI (`gen_ai.*`) attributes of a record."""
    out: Attributes = {}
    kind = rec.get("kind", "span")
    llm = rec.get("llm") or {}
    operation = llm.get("operation") or GENAI_OPERATION.get(kind)
    if operation:
        out[OPERATION_NAME] = operation
    if kind == "tool":
        out[TOOL_NAME] = rec["name"]
    elif kind == "agent":
        out[AGENT_NAME] = rec["name"]
    if llm:
        if llm.get("provider"):
            out[PROVIDER_NAME] = out[SYSTEM] = llm["provider"]
        if llm.get("model"):
            out[REQUEST_MODEL] = llm["model"]
        if llm.get("response_model"):
            out[RESPONSE_MODEL] = llm["response_model"]
        for key, value in (llm.get("params") or {}).items():
            name = GENAI_PARAMS.get(key)
            if name and value is not None:
                out[name] = [value] if key == "stop" and isinstance(value, str) else _scalar_or_json(value)
        for key, value in (llm.get("usage") or {}).items():
            if key in GENAI_USAGE and value is not None:
                out[GENAI_USAGE[key]] = value
        if llm.get("input_messages"):
            out[INPUT_MESSAGES] = genai_messages(llm["input_messages"])
        if llm.get("output_messages"):
            out[OUTPUT_MESSAGES] = genai_messages(llm["output_messages"], output=True)
        if llm.get("time_to_first_token_ns") is not None:
            out[TIME_TO_FIRST_CHUNK] = llm["time_to_first_token_ns"] / 1e9
    if rec.get("session_id"):
        out[CONVERSATION_ID] = rec["session_id"]
    error = rec.get("error")
    if error and error.get("type"):
        out[ERROR_TYPE] = error["type"]
    return out


def _oi_messages(prefix: str, messages: list[Any], out: Attributes) -> None:
    for i, message in enumerate(messages):
        base = f"{prefix}.{i}.message"
        if not isinstance(message, dict):
            out[f"{base}.content"] = str(message)
            continue
        if message.get("role"):
            out[f"{base}.role"] = message["role"]
        content = message.get("content")
        if isinstance(content, str):
            out[f"{base}.content"] = content
        elif isinstance(content, list):
            for j, part in enumerate(content):
                where = f"{base}.contents.{j}.message_content"
                if isinstance(part, dict) and part.get("type") == "text":
                    out[f"{where}.type"] = "text"
                    out[f"{where}.text"] = part.get("text", "")
                elif isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url")
                    out[f"{where}.type"] = "image"
                    out[f"{where}.image.image.url"] = url.get("url", "") if isinstance(url, dict) else str(url)
                else:
                    out[f"{where}.type"] = "text"
                    out[f"{where}.text"] = json_text(part)
        elif content is not None:
            out[f"{base}.content"] = json_text(content)
        if message.get("name"):
            out[f"{base}.name"] = message["name"]
        if message.get("tool_call_id"):
            out[f"{base}.tool_call_id"] = message["tool_call_id"]
        for k, call in enumerate(message.get("tool_calls") or []):
            if not isinstance(call, dict):
                continue
            where = f"{base}.tool_calls.{k}.tool_call"
            function = call.get("function") or {}
            if call.get("id"):
                out[f"{where}.id"] = call["id"]
            if function.get("name"):
                out[f"{where}.function.name"] = function["name"]
            arguments = function.get("arguments")
            if arguments is not None:
                out[f"{where}.function.arguments"] = (
                    arguments if isinstance(arguments, str) else json_text(arguments))


def openinference_attributes(rec: Record) -> Attributes:
    """The OpenInference attributes of a record (what Phoenix reads)."""
    kind = rec.get("kind", "span")
    out: Attributes = {SPAN_KIND: OPENINFERENCE_KIND.get(kind, "UNKNOWN")}
    if "input" in rec and rec["input"] is not None:
        out[INPUT_VALUE], out[INPUT_MIME] = value_and_mime(rec["input"])
    if "output" in rec and rec["output"] is not None:
        out[OUTPUT_VALUE], out[OUTPUT_MIME] = value_and_mime(rec["output"])
    llm = rec.get("llm") or {}
    if llm:
        if llm.get("model"):
            out[EMBEDDING_MODEL_NAME if kind == "embedding" else MODEL_NAME] = llm["model"]
        if llm.get("provider"):
            out[LLM_PROVIDER] = llm["provider"]
        if llm.get("params"):
            out[INVOCATION_PARAMETERS] = json_text(llm["params"])
        _oi_messages(OI_INPUT_MESSAGES, llm.get("input_messages") or [], out)
        _oi_messages(OI_OUTPUT_MESSAGES, llm.get("output_messages") or [], out)
        for key, value in (llm.get("usage") or {}).items():
            if key in OI_TOKENS and value is not None:
                out[OI_TOKENS[key]] = value
        if llm.get("cost_usd") is not None:
            out[COST_TOTAL] = float(llm["cost_usd"])
    if rec.get("session_id"):
        out[SESSION_ID] = rec["session_id"]
    if rec.get("user_id"):
        out[USER_ID] = rec["user_id"]
    if rec.get("tags"):
        out[TAGS] = list(rec["tags"])
    if rec.get("metadata"):
        out[METADATA] = json_text(rec["metadata"])
    return out
