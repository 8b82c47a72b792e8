"""Settings shared by several components: delivery (queue, retry, batch), exporters' common keys, the top level.

Each default is written once, here or on the component's own `Config`, and mirrored in
config.example.yaml. The loader (`shipper.config`) builds these from YAML; the pipeline hands an
exporter's `DeliveryConfig` to its sink and delivery worker directly, so exporters never carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shipper.client.paths import resolve_state_dir
from shipper.record import MAX_RECORD_BYTES
from shipper.values import ByteSize, Duration, MiB

__all__ = [
    "BatchConfig",
    "DeliveryConfig",
    "ExporterCommon",
    "IntakeBatchConfig",
    "IntakeConfig",
    "MetricsConfig",
    "QueueConfig",
    "RetryConfig",
    "Settings",
]


@dataclass(kw_only=True)
class BatchConfig:
    """An exporter's batches: sent when full by span count, bytes or delay, whichever comes first.

    An exporter type may send larger batches by default (`default_batch_spans` on its `Config`: the HTTP
    exporters, see `shipper.exporters.http.HTTPCommon`)."""

    max_spans: int = field(default=512, metadata={"min": 1})
    max_bytes: ByteSize = field(default=4 * MiB, metadata={"min": 1024})
    max_delay: Duration = field(default=1.0, metadata={"min": 0})


@dataclass(kw_only=True)
class IntakeBatchConfig(BatchConfig):
    """The top-level `batch`: received records processed together. It waits less than an exporter's
    batch, since what it holds is not yet durable (the exporters' queues are)."""

    max_delay: Duration = field(default=0.2, metadata={"min": 0})


@dataclass(kw_only=True)
class IntakeConfig:
    """What the daemon may hold in memory between receipt and the exporters' queues (shipper.intake).

    The defaults keep the daemon well under the systemd unit's MemoryMax=512M: a record takes about
    3-4 times its NDJSON size once decoded, so 32 MiB of records is about 130 MiB of Python objects.
    """

    max_records: int = field(default=20_000, metadata={"min": 1})
    max_bytes: ByteSize = field(default=32 * MiB, metadata={"min": 64 * 1024})


@dataclass(kw_only=True)
class QueueConfig:
    """An exporter's durable on-disk queue."""

    max_bytes: ByteSize = field(default=256 * MiB, metadata={"min": 64 * 1024})
    when_full: Literal["drop_oldest", "drop_newest", "block"] = "drop_oldest"
    fsync: Literal["always", "interval", "never"] = "interval"


@dataclass(kw_only=True)
class RetryConfig:
    """Exponential backoff with jitter between attempts; `max_elapsed: 0` retries forever."""

    initial_interval: Duration = field(default=1.0, metadata={"min": 0})
    max_interval: Duration = field(default=30.0, metadata={"min": 0})
    max_elapsed: Duration = field(default=0.0, metadata={"min": 0})


@dataclass(kw_only=True)
class DeliveryConfig:
    """The delivery keys every exporter takes (config.example.yaml), read by its sink (queue) and worker (retry, batch)."""

    queue: QueueConfig = field(default_factory=QueueConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)


@dataclass(kw_only=True)
class ExporterCommon:
    """Keys every exporter itself takes besides the delivery ones; each exporter's `Config` subclasses this."""

    timeout: Duration = field(default=10.0, metadata={"min": 0.001})


@dataclass(kw_only=True)
class MetricsConfig:
    """The Prometheus endpoint: `host:port` on a loopback address; empty (the default) serves none."""

    endpoint: str = ""

    def check(self) -> list[str]:
        if not self.endpoint:
            return []
        host, sep, port = self.endpoint.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or int(port) > 65535:
            return [f"endpoint: expected host:port like 127.0.0.1:9464, got {self.endpoint!r}"]
        if host != "localhost" and not (host.startswith("127.") or host == "::1"):
            return [f"endpoint: metrics are served on a loopback address only (127.0.0.1, ::1, localhost), "
                    f"got {host!r}; put a proxy in front to expose them"]
        return []


@dataclass(kw_only=True)
class Settings:
    """The top-level keys besides receivers, processors and exporters."""

    state_dir: Path = field(default_factory=lambda: Path(resolve_state_dir()))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout: Duration = field(default=10.0, metadata={"min": 0})
    control_socket: str = ""
    max_record_bytes: ByteSize = field(default=MAX_RECORD_BYTES, metadata={"min": 1024})
    batch: IntakeBatchConfig = field(default_factory=IntakeBatchConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
