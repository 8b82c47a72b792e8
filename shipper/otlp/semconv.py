"""Attribute names of OTel GenAI (`gen_ai.*`) and OpenInference, and a record's fields mapped onto them.

One module owns the names so that the exporters (record → attributes) and the OpenTelemetry receiver
(attributes → record) agree. Values are OTLP-ready: scalars, homogeneous lists of scalars, or JSON text
for anything structured. The mappers never raise on odd but valid records; a field that is absent yields
no attribute. docs/mappings.md has the same table per backend, with the reasons.

Record field           OTel GenAI                              OpenInference
kind                   gen_ai.operation.name (llm, embedding,  openinference.span.kind (upper case; task →
                       tool, agent)                            CHAIN, span → UNKNOWN)
(span kind)            llm and embedding spans without an otel_kind go out as CLIENT (`otel_kind_of`)
name (tool spans)      gen_ai.tool.name                        tool.name
tool description       gen_ai.tool.description                 tool.description
  (attribute tool.description or gen_ai.tool.description)
input / output         gen_ai.tool.call.arguments / .result    input.value|mime_type, output.value|mime_type
  (tool spans)         (opt-in: `tool_content`)
llm.model              gen_ai.request.model                    llm.model_name
llm.response_model     gen_ai.response.model                   llm.response.model_name
llm.provider           gen_ai.provider.name (+ the deprecated  llm.provider
                       gen_ai.system with `legacy`)
llm.params             gen_ai.request.<name> (known scalars)   llm.invocation_parameters (JSON)
llm.input_messages     gen_ai.input.messages (JSON, parts)     llm.input_messages.N.message.role|content|...
llm.output_messages    gen_ai.output.messages (JSON, parts,    llm.output_messages.N.message.*
                       finish_reason on every message)
llm.usage              gen_ai.usage.input_tokens|output_tokens llm.token_count.prompt|completion|total
                       |total_tokens, cache_read.input_tokens,  .prompt_details.cache_read,
                       reasoning.output_tokens                 .completion_details.reasoning
llm.cost_usd           -                                       llm.cost.total
llm.time_to_first_     gen_ai.response.time_to_first_chunk (s) -
  token_ns
input / output         -                                       input.value|mime_type, output.value|mime_type
  (else the LLM                                                (`io_values`: the input / output messages
  messages)                                                    when the record has no input / output)
session_id             gen_ai.conversation.id                  session.id
user_id                -                                       user.id
tags                   -                                       tag.tags
metadata               -                                       metadata (JSON)
error.type             error.type                              (exception event, see shipper.otlp.encode)
"""

from __future__ import annotations

from typing import Any

from shipper.otlp.messages import FINISH_REASONS, genai_messages, genai_part, oi_message_attributes
from shipper.otlp.text import json_text
from shipper.record import Record

__all__ = [
    "AGENT_NAME",
    "CONVERSATION_ID",
    "COST_TOTAL",
    "DEFAULT_OTEL_KIND",
    "EMBEDDING_MODEL_NAME",
    "ERROR_TYPE",
    "FINISH_REASONS",
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
    "OI_TOOL_DESCRIPTION",
    "OI_TOOL_NAME",
    "OPENINFERENCE_KIND",
    "OPERATION_NAME",
    "OUTPUT_MESSAGES",
    "OUTPUT_MIME",
    "OUTPUT_VALUE",
    "PROJECT_NAME",
    "PROVIDER_NAME",
    "REQUEST_MODEL",
    "RESPONSE_MODEL",
    "RESPONSE_MODEL_NAME",
    "SERVICE_NAME",
    "SESSION_ID",
    "SPAN_KIND",
    "SYSTEM",
    "TAGS",
    "TEXT",
    "TIME_TO_FIRST_CHUNK",
    "TOOL_CALL_ARGUMENTS",
    "TOOL_CALL_RESULT",
    "TOOL_DESCRIPTION",
    "TOOL_NAME",
    "USER_ID",
    "Attributes",
    "genai_attributes",
    "genai_messages",
    "genai_part",
    "io_values",
    "json_text",
    "openinference_attributes",
    "otel_kind_of",
    "tool_description",
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
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
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
DEFAULT_OTEL_KIND = {"llm": "client", "embedding": "client"}
"""Record kind → OTLP span kind when the record names no `otel_kind` (GenAI: inference spans are CLIENT)."""

# OpenInference
SPAN_KIND = "openinference.span.kind"
OPENINFERENCE_KIND = {
    "llm": "LLM", "chain": "CHAIN", "tool": "TOOL", "agent": "AGENT", "embedding": "EMBEDDING",
    "retriever": "RETRIEVER", "reranker": "RERANKER", "guardrail": "GUARDRAIL", "evaluator": "EVALUATOR",
    "prompt": "PROMPT", "task": "CHAIN", "span": "UNKNOWN",
}
"""Record kind → `openinference.span.kind`; `task` and `span` have no OpenInference kind of their own."""
MODEL_NAME = "llm.model_name"
RESPONSE_MODEL_NAME = "llm.response.model_name"
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
OI_TOOL_NAME, OI_TOOL_DESCRIPTION = "tool.name", "tool.description"
TEXT, JSON_MIME = "text/plain", "application/json"

_SCALARS = (str, bool, int, float)


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


def io_values(rec: Record) -> tuple[Any, Any]:
    """A record's input and output; an LLM span without them falls back to its input / output messages.

    Every backend shows one Input and one Output per span (OpenInference `input.value`, Langfuse
    `.input`, Braintrust `input_json`), so all of them read these two values.
    """
    llm = rec.get("llm") or {}
    given, produced = rec.get("input"), rec.get("output")
    if given is None and llm.get("input_messages"):
        given = llm["input_messages"]
    if produced is None and llm.get("output_messages"):
        produced = llm["output_messages"]
    return given, produced


def tool_description(rec: Record) -> str | None:
    """What a tool span's tool does: its `tool.description` (OpenInference) or `gen_ai.tool.description`."""
    attributes = rec.get("attributes") or {}
    text = attributes.get(OI_TOOL_DESCRIPTION) or attributes.get(TOOL_DESCRIPTION)
    return text if isinstance(text, str) and text else None


def otel_kind_of(rec: Record) -> str:
    """The OTLP span kind of a record: its `otel_kind`, else CLIENT for llm / embedding spans, else internal."""
    return rec.get("otel_kind") or DEFAULT_OTEL_KIND.get(rec.get("kind", "span"), "internal")


def _failed(rec: Record) -> bool:
    return bool(rec.get("error")) or rec.get("status") == "error"


def genai_attributes(rec: Record, *, legacy: bool = False, tool_content: bool = False) -> Attributes:
    """The OTel GenAI (`gen_ai.*`) attributes of a record.

    `legacy` adds the deprecated `gen_ai.system` (for backends that read only that); `tool_content`
    adds a tool span's input and output as `gen_ai.tool.call.arguments` / `.result` (opt-in content in
    the conventions, like the messages).
    """
    out: Attributes = {}
    kind = rec.get("kind", "span")
    llm = rec.get("llm") or {}
    operation = llm.get("operation") or GENAI_OPERATION.get(kind)
    if operation:
        out[OPERATION_NAME] = operation
    if kind == "tool":
        out[TOOL_NAME] = rec["name"]
        description = tool_description(rec)
        if description:
            out[TOOL_DESCRIPTION] = description
        if tool_content:
            for key, value in ((TOOL_CALL_ARGUMENTS, rec.get("input")), (TOOL_CALL_RESULT, rec.get("output"))):
                if value is not None:
                    out[key] = value if isinstance(value, str) else json_text(value)
    elif kind == "agent":
        out[AGENT_NAME] = rec["name"]
    if llm:
        if llm.get("provider"):
            out[PROVIDER_NAME] = llm["provider"]
            if legacy:
                out[SYSTEM] = llm["provider"]
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
            out[OUTPUT_MESSAGES] = genai_messages(llm["output_messages"], output=True,
                                                  finish_reason="error" if _failed(rec) else "stop")
        if llm.get("time_to_first_token_ns") is not None:
            out[TIME_TO_FIRST_CHUNK] = llm["time_to_first_token_ns"] / 1e9
    if rec.get("session_id"):
        out[CONVERSATION_ID] = rec["session_id"]
    error = rec.get("error")
    if error and error.get("type"):
        out[ERROR_TYPE] = error["type"]
    return out


def openinference_attributes(rec: Record) -> Attributes:
    """The OpenInference attributes of a record (what Phoenix reads)."""
    kind = rec.get("kind", "span")
    out: Attributes = {SPAN_KIND: OPENINFERENCE_KIND.get(kind, "UNKNOWN")}
    given, produced = io_values(rec)
    if given is not None:
        out[INPUT_VALUE], out[INPUT_MIME] = value_and_mime(given)
    if produced is not None:
        out[OUTPUT_VALUE], out[OUTPUT_MIME] = value_and_mime(produced)
    if kind == "tool":
        out[OI_TOOL_NAME] = rec["name"]
        description = tool_description(rec)
        if description:
            out[OI_TOOL_DESCRIPTION] = description
    llm = rec.get("llm") or {}
    if llm:
        if llm.get("model"):
            out[EMBEDDING_MODEL_NAME if kind == "embedding" else MODEL_NAME] = llm["model"]
        if llm.get("response_model"):
            out[RESPONSE_MODEL_NAME] = llm["response_model"]
        if llm.get("provider"):
            out[LLM_PROVIDER] = llm["provider"]
        if llm.get("params"):
            out[INVOCATION_PARAMETERS] = json_text(llm["params"])
        if llm.get("input_messages"):
            oi_message_attributes(OI_INPUT_MESSAGES, llm["input_messages"], out)
        if llm.get("output_messages"):
            oi_message_attributes(OI_OUTPUT_MESSAGES, llm["output_messages"], out)
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
