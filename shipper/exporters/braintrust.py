"""Exporter `braintrust`: Braintrust's OTLP endpoint (`{api_url}/otel/v1/traces`), Bearer key.

Braintrust picks the project from the `x-bt-parent: project_name:<project>` header: one request per
project (a span's `project`, else the configured `project`). Attributes: OTel GenAI (`gen_ai.*`) and
Braintrust's own: `braintrust.input_json`, `braintrust.output_json` (the record's input and output, or
its LLM messages), `braintrust.metadata` (JSON: the record's metadata plus model, provider, params,
session and user), `braintrust.metrics` (JSON: prompt_tokens, completion_tokens, tokens,
prompt_cached_tokens, completion_reasoning_tokens, time_to_first_token in seconds, estimated_cost: the
record's cost in USD, 0.0 included; without it Braintrust estimates one from its model registry),
`braintrust.span_attributes` (JSON: type and name), and `braintrust.tags` on root spans (Braintrust
reads tags there only).
"""

from __future__ import annotations

from dataclasses import dataclass

from shipper.component import Context
from shipper.exporters.http import HTTPCommon, HTTPExporter
from shipper.otlp.encode import Encoder
from shipper.otlp.semconv import Attributes, genai_attributes, io_values, json_text
from shipper.record import Record
from shipper.values import Secret

__all__ = ["BraintrustExporter", "braintrust_attributes"]

SPAN_TYPE = {"llm": "llm", "embedding": "llm", "tool": "tool", "evaluator": "score"}
"""Record kind → Braintrust span type (llm, task, tool, eval, score, function); others are `task`."""
METRICS = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens", "total_tokens": "tokens",
           "cache_read_tokens": "prompt_cached_tokens", "reasoning_tokens": "completion_reasoning_tokens"}


@dataclass(kw_only=True)
class Config(HTTPCommon):
    """Braintrust API URL, API key, and the project for spans that name none."""

    api_url: str = "https://api.braintrust.dev"
    api_key: Secret
    project: str = "default-otel-project"

    def check(self) -> list[str]:
        problems = self.check_url("api_url", self.api_url)
        if not self.api_key:
            problems.append("api_key: must not be empty (a Braintrust API key, e.g. ${BRAINTRUST_API_KEY})")
        if not self.project:
            problems.append("project: must not be empty")
        return problems


def braintrust_attributes(rec: Record) -> Attributes:
    """The `braintrust.*` attributes of a record."""
    llm = rec.get("llm") or {}
    kind = rec.get("kind", "span")
    out: Attributes = {"braintrust.span_attributes": json_text({"type": SPAN_TYPE.get(kind, "task"),
                                                                 "name": rec["name"]})}
    given, produced = io_values(rec)
    if given is not None:
        out["braintrust.input_json"] = json_text(given)
    if produced is not None:
        out["braintrust.output_json"] = json_text(produced)
    metadata = dict(rec.get("metadata") or {})
    for key in ("model", "provider", "response_model"):
        if llm.get(key):
            metadata.setdefault(key, llm[key])
    for key, value in (llm.get("params") or {}).items():
        metadata.setdefault(key, value)
    if rec.get("session_id"):
        metadata.setdefault("session_id", rec["session_id"])
    if rec.get("user_id"):
        metadata.setdefault("user_id", rec["user_id"])
    if metadata:
        out["braintrust.metadata"] = json_text(metadata)
    metrics = {METRICS[k]: v for k, v in (llm.get("usage") or {}).items() if k in METRICS and v is not None}
    if llm.get("time_to_first_token_ns") is not None:
        metrics["time_to_first_token"] = llm["time_to_first_token_ns"] / 1e9
    if llm.get("cost_usd") is not None:
        metrics["estimated_cost"] = float(llm["cost_usd"])
    if metrics:
        out["braintrust.metrics"] = json_text(metrics)
    if rec.get("tags") and not rec.get("parent_id"):
        out["braintrust.tags"] = list(rec["tags"])
    return out


class BraintrustExporter(HTTPExporter):
    """OTLP/HTTP protobuf to Braintrust, project by `x-bt-parent`."""

    Config = Config
    credentials = "the api_key"

    def __init__(self, config: Config, ctx: Context) -> None:
        super().__init__(config, ctx)
        self.config: Config = config
        self.url = f"{config.api_url.rstrip('/')}/otel/v1/traces"
        self.default_project = config.project
        self.encoder = Encoder((genai_attributes, braintrust_attributes))
        self._auth = f"Bearer {config.api_key.reveal()}"

    def headers(self, project: str | None) -> dict[str, str]:
        return {"authorization": self._auth, "x-bt-parent": f"project_name:{project or self.config.project}"}

    def secrets(self) -> list[str]:
        return [self.config.api_key.reveal()]
