"""The Prometheus endpoint: scraped from a real daemon and parsed with prometheus-client's parser."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import Daemon, wait_for

from shipper.config import parse_config
from shipper.errors import ConfigError
from shipper.testing import send_seqpacket

ROOT = Path(__file__).resolve().parents[1]
REPO_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def record(i: int) -> bytes:
    return orjson.dumps({"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "name": f"span-{i}",
                         "start_ns": 1, "end_ns": 2})


def metrics_daemon(daemon_factory, endpoint: str = "127.0.0.1:0") -> Daemon:
    daemon: Daemon = daemon_factory(env=REPO_ENV)
    return daemon.set_config(metrics={"endpoint": endpoint})


def metrics_url(daemon: Daemon) -> str:
    found = re.search(r"Serving metrics on (http://\S+/metrics)\.", daemon.log())
    assert found, daemon.log()
    return found.group(1)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_endpoint_serves_counts_queues_latency_and_rss(daemon_factory) -> None:
    """/metrics parses, and shows received, exported, drops by reason, queue figures, latency and RSS."""
    daemon = metrics_daemon(daemon_factory).start()
    url = metrics_url(daemon)
    send_seqpacket(daemon.socket, [b"\n".join(record(i) for i in range(1, 4)), b'{"not": "a span"}'])
    wait_for(lambda: len(daemon.records()) == 3, message="three spans exported")
    wait_for(lambda: value(scrape(url), "shipper_exported_total", section="exporters", component="file") == 3,
             message="exported 3 in the metrics")
    samples = scrape(url)
    assert value(samples, "shipper_received_total", section="receivers", component="socket") == 3
    assert value(samples, "shipper_received_total", section="pipeline", component="intake") == 3
    assert value(samples, "shipper_dropped_total", section="pipeline", component="intake",
                 reason="malformed") == 1
    assert sum(v for (name, _), v in samples.items() if name == "shipper_malformed_total") == 1
    assert value(samples, "shipper_queue_items", section="exporters", component="file") == 0
    assert value(samples, "shipper_queue_bytes", section="exporters", component="file") is not None
    assert value(samples, "shipper_queue_oldest_age_seconds", section="exporters", component="file") == 0
    assert value(samples, "shipper_export_latency_seconds_count", exporter="file") >= 1
    assert value(samples, "process_resident_memory_bytes") > 1024 * 1024
    assert value(samples, "shipper_uptime_seconds") >= 0

    status = orjson.loads(subprocess.run(
        [sys.executable, "-m", "shipper", "status", "--json", "--control", daemon.control],
        capture_output=True, check=True, env=daemon.env, timeout=30).stdout)
    assert status["exporters"]["file"]["exported"] == 3
    assert status["receivers"]["socket"]["received"] == 3
    assert status["dropped"] == {"malformed": 1}
    assert status["rss_bytes"] > 1024 * 1024
    assert daemon.stop() == 0


def test_metrics_endpoint_answers_404_elsewhere_and_405_for_post(daemon_factory) -> None:
    """Only GET /metrics (and a pointer at /) is served."""
    daemon = metrics_daemon(daemon_factory).start()
    base = metrics_url(daemon).removesuffix("/metrics")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/secrets", timeout=10)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(urllib.request.Request(base + "/metrics", data=b"x"), timeout=10)
    assert post.value.code == 405
    assert daemon.stop() == 0


def test_metrics_port_in_use_stops_the_start_with_a_clear_error(daemon_factory) -> None:
    """A metrics endpoint that cannot be bound is a config error: exit 1, saying which key and why."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        daemon = metrics_daemon(daemon_factory, f"127.0.0.1:{taken.getsockname()[1]}").start(wait=False)
        assert daemon.proc is not None and daemon.proc.wait(30) == 1
        assert "metrics.endpoint: cannot listen on 127.0.0.1:" in daemon.log()
    finally:
        taken.close()


def test_metrics_are_off_by_default(daemon_factory) -> None:
    """Without `metrics.endpoint` no port is opened."""
    daemon: Daemon = daemon_factory(env=REPO_ENV).start()
    assert "Serving metrics" not in daemon.log()
    assert daemon.stop() == 0


@pytest.mark.parametrize("endpoint, problem", [
    ("0.0.0.0:9464", "loopback address only"),
    ("10.1.2.3:9464", "loopback address only"),
    ("127.0.0.1", "expected host:port"),
    ("127.0.0.1:http", "expected host:port"),
])
def test_metrics_endpoint_must_be_loopback_host_port(endpoint: str, problem: str) -> None:
    """`metrics.endpoint` is checked: host:port, on a loopback address."""
    text = f"metrics: {{endpoint: '{endpoint}'}}\nreceivers: {{s: {{type: spool, dir: /tmp/x}}}}\n" \
           "exporters: {f: {type: file}}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "t.yaml")
    assert any(p.startswith("t.yaml:1:11: metrics.endpoint: ") and problem in p for p in err.value.problems)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9464", "localhost:0", "[::1]:9464"])
def test_loopback_endpoints_are_accepted(endpoint: str) -> None:
    """127.x, ::1 and localhost are accepted."""
    text = f"metrics: {{endpoint: '{endpoint}'}}\nreceivers: {{s: {{type: spool, dir: /tmp/x}}}}\n" \
           "exporters: {f: {type: file}}\n"
    assert parse_config(text, "t.yaml").settings.metrics.endpoint == endpoint
