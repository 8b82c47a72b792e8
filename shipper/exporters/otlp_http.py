"""Exporter `otlp_http`: OTLP/HTTP to any collector or backend, protobuf or JSON, gzip by default.

Spans carry OTel GenAI (`gen_ai.*`) and OpenInference attributes (`conventions`; each costs about half
of the encoding, so a backend that reads only one is cheaper to feed with only that one) plus their raw
`attributes`. `gen_ai_legacy` in `conventions` adds the deprecated `gen_ai.system` next to
`gen_ai.provider.name` (for backends still on the old name; it implies `genai`); `tool_content: true`
adds a tool span's input and output as `gen_ai.tool.call.arguments` / `gen_ai.tool.call.result`
(opt-in in the conventions, as they may hold user data). The resource gets `service.name`, the record's `resource`, and `openinference.project.name` for spans with a
`project` (one request per project). `headers` are sent as configured and never printed.

`forward_otlp: true` sends spans that came in over OTLP on as they came, byte for byte, when nothing
needs to see them (no processors, every exporter forwarding: docs/forwarding.md): no conventions are
added to them and their resource and scope are the sender's. Spans from the shim, and OTLP spans while
a processor is configured, are converted as above.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.component import Context
from shipper.exporters.http import JSON, PROTOBUF, HTTPCommon, HTTPExporter
from shipper.otlp.encode import AttributeMapper, Encoder, to_json
from shipper.otlp.semconv import PROJECT_NAME, Attributes, genai_attributes, openinference_attributes
from shipper.values import Secret

__all__ = ["OTLPHTTPExporter", "mappers", "traces_url"]


def traces_url(endpoint: str) -> str:
    """`{endpoint}/v1/traces`, unless the endpoint already names that path."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


@dataclass(kw_only=True)
class Config(HTTPCommon):
    """Where to send and how; `endpoint` is the base URL (`/v1/traces` is appended)."""

    endpoint: str = "http://127.0.0.1:4318"
    headers: dict[str, Secret] = field(default_factory=dict)
    encoding: Literal["protobuf", "json"] = "protobuf"
    conventions: list[Literal["genai", "openinference", "gen_ai_legacy"]] = field(
        default_factory=lambda: ["genai", "openinference"])
    tool_content: bool = False
    forward_otlp: bool = False

    def check(self) -> list[str]:
        problems = self.check_url("endpoint", self.endpoint)
        if self.forward_otlp and self.encoding != "protobuf":
            problems.append(f"forward_otlp: sends OTLP requests on as they came, in protobuf; it needs "
                            f"encoding: protobuf, not {self.encoding}")
        return problems


def mappers(config: Config) -> tuple[AttributeMapper, ...]:
    """The attribute mappers `conventions` and `tool_content` ask for, in the order given."""
    wanted = dict.fromkeys("genai" if name == "gen_ai_legacy" else name for name in config.conventions)
    legacy = "gen_ai_legacy" in config.conventions
    genai: AttributeMapper = (functools.partial(genai_attributes, legacy=legacy, tool_content=config.tool_content)
                              if legacy or config.tool_content else genai_attributes)  # a plain call is cheaper
    return tuple(genai if name == "genai" else openinference_attributes for name in wanted)


def _project_resource(project: str | None) -> Attributes:
    return {PROJECT_NAME: project} if project else {}


class OTLPHTTPExporter(HTTPExporter):
    """OTLP/HTTP with OTel GenAI and OpenInference attributes."""

    Config = Config
    credentials = "the configured headers"

    def __init__(self, config: Config, ctx: Context) -> None:
        super().__init__(config, ctx)
        self.config: Config = config
        self.url = traces_url(config.endpoint)
        self.encoder = Encoder(mappers(config), _project_resource)
        self.content_type = JSON if config.encoding == "json" else PROTOBUF
        self._headers = {name.lower(): value.reveal() for name, value in config.headers.items()}
        self.forwards_otlp = config.forward_otlp and config.encoding == "protobuf"

    def headers(self, project: str | None) -> dict[str, str]:
        return self._headers

    def secrets(self) -> list[str]:
        return list(self._headers.values())

    def encode(self, message: ExportTraceServiceRequest) -> bytes:
        return to_json(message) if self.config.encoding == "json" else message.SerializeToString()
