"""Processor `rate_limit`: a token bucket per service, the excess counted `rate_limited`."""

from __future__ import annotations

import pytest

from shipper.errors import ConfigError
from shipper.testing import build_processor, make_span


class _Clock:
    """A clock the test moves by hand, so no test waits on real time."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _limiter(settings: dict) -> tuple:
    limiter, counters = build_processor("rate_limit", settings)
    clock = limiter.clock = _Clock()
    return limiter, counters, clock


def test_a_burst_passes_then_the_excess_is_dropped_and_counted() -> None:
    """With 10 spans/s and burst 10, 25 spans at once let 10 through and count 15 as rate_limited."""
    limiter, counters, _ = _limiter({"spans_per_second": 10})
    assert len(limiter([make_span(1, i + 1, service="api") for i in range(25)])) == 10
    assert counters.dropped["rate_limited"] == 15


def test_tokens_refill_at_the_rate() -> None:
    """Half a second later, 5 more spans of that service pass."""
    limiter, _, clock = _limiter({"spans_per_second": 10})
    limiter([make_span(1, i + 1, service="api") for i in range(10)])
    clock.now += 0.5
    assert len(limiter([make_span(2, i + 1, service="api") for i in range(10)])) == 5


def test_each_service_has_its_own_bucket() -> None:
    """One noisy service does not use up another's allowance."""
    limiter, _, _ = _limiter({"spans_per_second": 5})
    noisy = [make_span(1, i + 1, service="noisy") for i in range(50)]
    quiet = [make_span(2, i + 1, service="quiet") for i in range(3)]
    kept = limiter(noisy + quiet)
    assert sum(s["service"] == "quiet" for s in kept) == 3
    assert sum(s["service"] == "noisy" for s in kept) == 5


def test_burst_is_configurable() -> None:
    """`burst` sets how many spans pass at once, independently of the rate."""
    limiter, _, _ = _limiter({"spans_per_second": 1, "burst": 3})
    assert len(limiter([make_span(1, i + 1) for i in range(10)])) == 3


def test_buckets_are_bounded() -> None:
    """Past `max_services` buckets, idle ones are forgotten; the map never grows past the bound."""
    limiter, _, clock = _limiter({"spans_per_second": 100, "max_services": 10})
    for i in range(100):
        clock.now += 1
        limiter([make_span(1, 1, service=f"svc{i}")])
        assert len(limiter.buckets) <= 10


CONFIG_ERRORS = [
    ({"spans_per_second": -1}, "spans_per_second: expected at least 0.0, got -1.0"),
    ({"spans_per_second": 0.5}, "burst: required when spans_per_second is below 1"),
    ({"burst": 0}, "burst: expected at least 1, got 0"),
    ({"max_services": 0}, "max_services: expected at least 1, got 0"),
    ({"rate": 5}, "rate: unknown key; expected one of"),
]


@pytest.mark.parametrize(("settings", "message"), CONFIG_ERRORS, ids=[m.split(":")[0] for _, m in CONFIG_ERRORS])
def test_config_errors(settings, message) -> None:
    """Each invalid rate_limit setting is refused with its key path and what was expected."""
    with pytest.raises(ConfigError) as caught:
        build_processor("rate_limit", settings)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
