"""The record size limit of docs/record.md holds end to end: a record up to `max_record_bytes` arrives
whole whichever transport carries it; a longer one is set aside as `too_large` and nothing else is lost."""

from __future__ import annotations

import orjson
from support import wait_for, wait_records

import shipper
from shipper.client import transport
from shipper.testing import make_span


def test_a_record_over_the_socket_cap_and_the_spool_read_size_arrives_whole(daemon_factory) -> None:
    """A 2.4 MB record from the shim (over its 1 MiB socket cap, so spooled; over the spool's 1 MiB read)
    reaches the exporter, and so does the small span after it."""
    daemon = daemon_factory().start()
    shipper.configure(service="big", socket=daemon.socket, spool_dir=daemon.spool)
    try:
        with shipper.span("big-one", input=["x" * 60_000] * 40) as big:
            pass
        with shipper.span("small-after"):
            pass
        assert shipper.statistics()["spooled_by_reason"].get("too_large") == 1
        (record,) = wait_records(daemon, 1, name="big-one")
        assert record["trace_id"] == big.trace_id and len(record["input"]) == 40
        assert wait_records(daemon, 1, name="small-after")
    finally:
        transport.shutdown()


def test_a_spool_line_over_max_record_bytes_is_too_large_and_the_next_lines_arrive(daemon_factory) -> None:
    """In a spool file: a line longer than a read but under the limit is taken; one over the limit is
    counted `too_large` and skipped; the lines around them arrive."""
    daemon = daemon_factory()
    daemon.config["max_record_bytes"] = 8192
    daemon.config["receivers"]["spool"]["max_read_bytes"] = 4096
    daemon.set_config().start()
    lines = [make_span(span=1, name="first"), make_span(span=2, name="long", input="y" * 6000),
             make_span(span=3, name="too-long", input="z" * 10_000), make_span(span=4, name="last")]
    (daemon.root / "spool").mkdir(exist_ok=True)
    path = daemon.root / "spool" / "app.1.1.ndjson"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    names = wait_for(lambda: {r["name"] for r in daemon.records()} >= {"first", "long", "last"} and
                     {r["name"] for r in daemon.records()})
    assert "too-long" not in names
    status = wait_for(lambda: daemon.status()["pipeline"].get("malformed", {}).get("too_large") and daemon.status())
    assert status["pipeline"]["malformed"] == {"too_large": 1}
