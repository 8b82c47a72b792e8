"""Exporter `phoenix`: Arize Phoenix's OTLP/HTTP endpoint, protobuf only, OpenInference attributes.

Phoenix picks the project from the `x-project-name` header, else the resource attribute
`openinference.project.name`: both are set, one request per project (a span's `project`, else the
configured `project`). `api_key`, when set, is sent as `Authorization: Bearer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipper.component import Context
from shipper.exporters.http import HTTPCommon, HTTPExporter
from shipper.exporters.otlp_http import traces_url
from shipper.otlp.encode import Encoder
from shipper.otlp.semconv import PROJECT_NAME, Attributes, openinference_attributes
from shipper.values import Secret

__all__ = ["PhoenixExporter"]


@dataclass(kw_only=True)
class Config(HTTPCommon):
    """Phoenix's base URL, optional API key, and the project for spans that name none."""

    endpoint: str = "http://127.0.0.1:6006"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    project: str = "default"

    def check(self) -> list[str]:
        return self.check_url("endpoint", self.endpoint) + ([] if self.project else ["project: must not be empty"])


class PhoenixExporter(HTTPExporter):
    """OTLP/HTTP protobuf to Phoenix, projects by header and resource."""

    Config = Config
    credentials = "the api_key"

    def __init__(self, config: Config, ctx: Context) -> None:
        super().__init__(config, ctx)
        self.config: Config = config
        self.url = traces_url(config.endpoint)
        self.default_project = config.project
        self.encoder = Encoder((openinference_attributes,), self._resource)
        self._auth = {"authorization": f"Bearer {config.api_key.reveal()}"} if config.api_key else {}

    @staticmethod
    def _resource(project: str | None) -> Attributes:
        return {PROJECT_NAME: project} if project else {}

    def headers(self, project: str | None) -> dict[str, str]:
        return {**self._auth, "x-project-name": project or self.config.project}

    def secrets(self) -> list[str]:
        return [self.config.api_key.reveal()]
