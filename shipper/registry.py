"""Component types by the name YAML gives them: one line per component, imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["REGISTRY", "load"]

REGISTRY: dict[str, dict[str, str]] = {
    "receivers": {
        "unix_socket": "shipper.receivers.unix_socket:UnixSocketReceiver",
        "spool": "shipper.receivers.spool:SpoolReceiver",
        "otlp_http": "shipper.receivers.otlp_http:OTLPHTTPReceiver",
        "otlp_grpc": "shipper.receivers.otlp_grpc:OTLPGRPCReceiver",  # extra: shipper[grpc]
        "kafka": "shipper.receivers.kafka:KafkaReceiver",  # extra: shipper[kafka]
    },
    "processors": {
        "sample": "shipper.processors.sample:sample_processor",
        "filter": "shipper.processors.filter:FilterProcessor",
        "redact": "shipper.processors.redact:RedactProcessor",
        "truncate": "shipper.processors.truncate:TruncateProcessor",
        "rate_limit": "shipper.processors.rate_limit:RateLimitProcessor",
    },
    "exporters": {
        "file": "shipper.exporters.file:FileExporter",
        "otlp_http": "shipper.exporters.otlp_http:OTLPHTTPExporter",
        "phoenix": "shipper.exporters.phoenix:PhoenixExporter",
        "langfuse": "shipper.exporters.langfuse:LangfuseExporter",
        "braintrust": "shipper.exporters.braintrust:BraintrustExporter",
        "kafka": "shipper.exporters.kafka:KafkaExporter",  # extra: shipper[kafka]
    },
}


def load(section: str, type_name: str) -> Any:
    """The class registered under `type_name` in `section` (receivers, processors, exporters)."""
    module_name, _, attr = REGISTRY[section][type_name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
