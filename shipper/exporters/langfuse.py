"""Exporter `langfuse`: Langfuse's OTLP endpoint (`{host}/api/public/otel/v1/traces`), ingestion v4.

Langfuse picks the project from the key pair, so spans are grouped by `project` and each group is sent
with `Authorization: Basic base64(public_key:secret_key)` of `projects[project]`, else of the default
keys; a project with no keys is a permanent error (the batch is dead-lettered, replay it once the keys
are configured). `x-langfuse-ingestion-version: 4` selects the real-time path.

Attributes: OTel GenAI (`gen_ai.*`) and Langfuse's own, which take precedence there:
`langfuse.trace.name` (the root span's name, on every span of the trace when the root is in the batch),
`langfuse.session.id`, `langfuse.user.id`, `langfuse.trace.tags`, `langfuse.observation.metadata.<k>`
(every span) and `langfuse.trace.metadata.<k>` (the root span only: Langfuse merges every span's trace
metadata into the one trace, so children's keys would collide), `langfuse.observation.type`
(`generation` for `llm`), `.input` / `.output` (JSON; the LLM messages when the record has no
input / output), `.model.name`, `.model.parameters`, `.usage_details` (Langfuse's usage keys: input,
output, total, input_cached_tokens, output_reasoning_tokens; input and output exclude the cached and
reasoning counts, as Langfuse's own SDK sends them), `.cost_details` (`{"total": cost}`, 0.0 included:
Langfuse ignores a zero `gen_ai.usage.cost`), `gen_ai.usage.cost` (for Langfuse versions that read
cost_details from their own SDK only), `.level` and `.status_message` on error, `.completion_start_time`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from shipper import security
from shipper.component import Context
from shipper.errors import PermanentExportError
from shipper.exporters.http import HTTPCommon, HTTPExporter
from shipper.otlp import langfuse as lf
from shipper.otlp import wire
from shipper.otlp.encode import Encoder
from shipper.otlp.semconv import Attributes, genai_attributes, io_values, json_text
from shipper.record import Record
from shipper.values import Secret

__all__ = ["LangfuseExporter", "langfuse_attributes", "observation_attributes", "usage_details"]


@dataclass(kw_only=True)
class Keys:
    """One Langfuse project's API key pair."""

    public_key: str
    secret_key: Secret


@dataclass(kw_only=True)
class Config(HTTPCommon):
    """Langfuse host and keys: the default pair, and/or one pair per project."""

    host: str = "https://cloud.langfuse.com"
    public_key: str = ""
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    projects: dict[str, Keys] = field(default_factory=dict)

    def check(self) -> list[str]:
        problems = self.check_url("host", self.host)
        if bool(self.public_key) != bool(self.secret_key):
            problems.append("public_key: public_key and secret_key go together; set both or neither")
        if not self.public_key and not self.projects:
            problems.append("public_key: set public_key and secret_key, or keys per project under projects")
        for name, keys in self.projects.items():
            if keys is not None and not (keys.public_key and keys.secret_key):
                problems.append(f"projects.{name}: both public_key and secret_key must be non-empty")
        return problems


def _flat(value: Any) -> Any:
    return value if isinstance(value, (str, bool, int, float)) else json_text(value)


def usage_details(usage: dict[str, Any]) -> dict[str, int]:
    """Record usage as Langfuse `usage_details`: its key names, input and output without their details.

    Langfuse prices `input` and `input_cached_tokens` (and `output` and `output_reasoning_tokens`)
    separately, so, as its SDK does, the detail counts are taken out of the counts that include them.
    """
    out = {lf.USAGE_DETAILS[k]: v for k, v in usage.items() if k in lf.USAGE_DETAILS and v is not None}
    for whole, part in (("input", "input_cached_tokens"), ("output", "output_reasoning_tokens")):
        if whole in out and part in out:
            out[whole] = max(0, out[whole] - out[part])
    return out


def langfuse_attributes(rec: Record, trace_name: str | None = None) -> Attributes:
    """The `langfuse.*` attributes of a record (plus `gen_ai.usage.cost`); `langfuse.trace.name` is the
    record's name on a root span, else `trace_name`."""
    out = observation_attributes(rec)
    name = rec["name"] if not rec.get("parent_id") else trace_name
    if name:
        out[lf.TRACE_NAME] = name
    return out


@wire.pure
def observation_attributes(rec: Record) -> Attributes:
    """`langfuse_attributes` but the trace name: a function of the record alone (shipper.otlp.wire
    encodes it once per span, for every exporter sending it)."""
    out: Attributes = {lf.TYPE: lf.OBSERVATION_TYPE.get(rec.get("kind", "span"), "span")}
    root = not rec.get("parent_id")
    if rec.get("session_id"):
        out[lf.SESSION] = rec["session_id"]
    if rec.get("user_id"):
        out[lf.USER] = rec["user_id"]
    if rec.get("tags"):
        out[lf.TAGS] = list(rec["tags"])
    for key, value in (rec.get("metadata") or {}).items():
        if value is not None:
            out[f"{lf.OBSERVATION_METADATA}{key}"] = _flat(value)
            if root:
                out[f"{lf.TRACE_METADATA}{key}"] = out[f"{lf.OBSERVATION_METADATA}{key}"]
    given, produced = io_values(rec)
    if given is not None:
        out[lf.INPUT] = json_text(given)
    if produced is not None:
        out[lf.OUTPUT] = json_text(produced)
    llm = rec.get("llm") or {}
    if llm.get("model"):
        out[lf.MODEL] = llm["model"]
    if llm.get("params"):
        out[lf.PARAMS] = json_text(llm["params"])
    usage = usage_details(llm.get("usage") or {})
    if usage:
        out[lf.USAGE] = json_text(usage)
    if llm.get("cost_usd") is not None:
        cost = float(llm["cost_usd"])
        out[lf.COST] = json_text({"total": cost})
        out["gen_ai.usage.cost"] = cost
    if llm.get("time_to_first_token_ns") is not None:
        first = (rec["start_ns"] + llm["time_to_first_token_ns"]) / 1e9
        out[lf.COMPLETION_START] = (
            datetime.fromtimestamp(first, timezone.utc).isoformat().replace("+00:00", "Z"))
    error = rec.get("error")
    if error or rec.get("status") == "error":
        out[lf.LEVEL] = "ERROR"
        if error:
            kind, message = error.get("type") or "", error.get("message") or ""
            out[lf.STATUS_MESSAGE] = f"{kind}: {message}" if kind and message else kind or message
    return out


class LangfuseExporter(HTTPExporter):
    """OTLP/HTTP protobuf to Langfuse, Basic auth per project."""

    Config = Config
    credentials = "the public_key/secret_key pair"

    def __init__(self, config: Config, ctx: Context) -> None:
        super().__init__(config, ctx)
        self.config: Config = config
        self.url = f"{config.host.rstrip('/')}/api/public/otel/v1/traces"
        self.encoder = Encoder((genai_attributes, observation_attributes, self._trace_name))
        self._trace_names: dict[str, str] = {}
        self._auth: dict[str | None, str] = {
            name: self._basic(keys.public_key, keys.secret_key) for name, keys in config.projects.items()}
        self._default_auth = self._basic(config.public_key, config.secret_key) if config.public_key else None

    @staticmethod
    def _basic(public_key: str, secret_key: Secret) -> str:
        token = base64.b64encode(f"{public_key}:{secret_key.reveal()}".encode()).decode()
        security.remember([token])  # the encoded pair is as secret as the key: never in logs or status
        return f"Basic {token}"

    def _trace_name(self, rec: Record) -> Attributes:
        """`langfuse.trace.name`: a root span's own name, else its trace's root name when the root is in
        the batch being sent (the one attribute encoded at every send)."""
        name = rec["name"] if not rec.get("parent_id") else self._trace_names.get(rec["trace_id"])
        return {lf.TRACE_NAME: name} if name else {}

    def headers(self, project: str | None) -> dict[str, str]:
        auth = self._auth.get(project, self._default_auth)
        if auth is None:
            raise PermanentExportError(
                f"Exporter {self.ctx.name}: no Langfuse keys for project {project!r}. Add them under "
                f"projects.{project} (or set the default public_key and secret_key), then replay the "
                "dead-lettered batch")
        return {"authorization": auth, "x-langfuse-ingestion-version": "4"}

    def secrets(self) -> list[str]:
        keys = [self.config.secret_key.reveal(), *(k.secret_key.reveal() for k in self.config.projects.values())]
        return keys + [a.split(" ", 1)[1] for a in self._auth.values()] + (
            [self._default_auth.split(" ", 1)[1]] if self._default_auth else [])

    async def export(self, batch: list[Record]) -> int | None:
        """Send `batch`; the root span's name becomes every span's `langfuse.trace.name`."""
        self._trace_names = {rec["trace_id"]: rec["name"] for rec in batch if not rec.get("parent_id")}
        try:
            return await super().export(batch)
        finally:
            self._trace_names = {}
