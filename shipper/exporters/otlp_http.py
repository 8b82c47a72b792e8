"""Exporter `otlp_http`: OTLP/HTTP to any collector or backend, protobuf or JSON, gzip by default.

Spans carry OTel GenAI (`gen_ai.*`) and OpenInference attributes (`conventions`; each costs about half
of the encoding, so a backend that reads only one is cheaper to feed with only that one) plus their raw
`attributes`; the
resource gets `service.name`, the record's `resource`, and `openinference.project.name` for spans with a
`project` (one request per project). `headers` are sent as configured and never printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.component import Context
from shipper.exporters.http import JSON, PROTOBUF, HTTPCommon, HTTPExporter
from shipper.otlp.encode import Encoder, to_json
from shipper.otlp.semconv import PROJECT_NAME, Attributes, genai_attributes, openinference_attributes
from shipper.values import Secret

__all__ = ["OTLPHTTPExporter", "traces_url"]


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
    conventions: list[Literal["genai", "openinference"]] = field(default_factory=lambda: ["genai", "openinference"])

    def check(self) -> list[str]:
        return self.check_url("endpoint", self.endpoint)


_MAPPERS = {"genai": genai_attributes, "openinference": openinference_attributes}


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
        mappers = tuple(_MAPPERS[name] for name in dict.fromkeys(config.conventions))
        self.encoder = Encoder(mappers, _project_resource)
        self.content_type = JSON if config.encoding == "json" else PROTOBUF
        self._headers = {name.lower(): value.reveal() for name, value in config.headers.items()}

    def headers(self, project: str | None) -> dict[str, str]:
        return self._headers

    def secrets(self) -> list[str]:
        return list(self._headers.values())

    def encode(self, message: ExportTraceServiceRequest) -> bytes:
        return to_json(message) if self.config.encoding == "json" else message.SerializeToString()
