"""Processor `rate_limit`: at most `spans_per_second` per service (token bucket), the excess counted `rate_limited`.

Each service (the record's `service`, or the empty name) has a bucket holding up to `burst` spans
(default: one second's worth), refilled continuously at `spans_per_second`. A span takes one token or
is dropped. The limit is per span, not per trace: under a burst a trace can lose some spans; use
`sample` to thin whole traces, and this as a safety valve. At most `max_services` buckets are kept;
past that, full (idle) buckets are forgotten first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shipper.component import Context
from shipper.record import Record

__all__ = ["RateLimitConfig", "RateLimitProcessor"]


@dataclass(kw_only=True)
class RateLimitConfig:
    """Spans per second per service, and the burst a bucket holds."""

    spans_per_second: float = field(default=1000.0, metadata={"min": 0.0})
    burst: int | None = field(default=None, metadata={"min": 1})
    max_services: int = field(default=1000, metadata={"min": 1})

    def check(self) -> list[str]:
        rate = self.spans_per_second
        if self.burst is None and isinstance(rate, (int, float)) and 0 <= rate < 1:
            return ["burst: required when spans_per_second is below 1 (a bucket must hold at least one span)"]
        return []


class RateLimitProcessor:
    """Token buckets by service."""

    Config = RateLimitConfig

    def __init__(self, config: RateLimitConfig, ctx: Context) -> None:
        self.counters = ctx.counters
        self.rate = config.spans_per_second
        self.burst = float(config.burst if config.burst is not None else max(1, int(config.spans_per_second)))
        self.max_services = config.max_services
        self.buckets: dict[str, list[float]] = {}
        self.clock = time.monotonic

    def _bucket(self, service: str, now: float) -> list[float]:
        bucket = self.buckets.get(service)
        if bucket is None:
            if len(self.buckets) >= self.max_services:
                self._forget_idle(now)
            bucket = self.buckets[service] = [self.burst, now]
        return bucket

    def _forget_idle(self, now: float) -> None:
        for name, (tokens, last) in list(self.buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self.buckets[name]
        while len(self.buckets) >= self.max_services:
            del self.buckets[next(iter(self.buckets))]

    def __call__(self, batch: list[Record]) -> list[Record]:
        now = self.clock()
        kept = []
        for span in batch:
            bucket = self._bucket(span.get("service") or "", now)
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                kept.append(span)
            else:
                bucket[0] = tokens
        self.counters.drop("rate_limited", len(batch) - len(kept))
        return kept

    def explain(self, span: Record, trace: list[Record]) -> str:
        """The bucket this record draws from."""
        service = span.get("service") or "(no service)"
        return (f"kept while service {service!r} sends under {self.rate:g} spans/s (bursts of {self.burst:g}); "
                "spans beyond that are dropped (rate_limited)")
