"""Edge daemons -> a real Kafka-protocol broker (Tansu) -> gateway daemons, all real subprocesses.

Each test uses topics and consumer groups of its own on the session's shared broker (the outage test
runs its own broker, since it stops it).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from support import Daemon, wait_for

from shipper.testing import OTLPServer, make_span, read_ndjson, send_seqpacket

pytest.importorskip("aiokafka", reason="the kafka extra (aiokafka) is not installed: pip install -e '.[kafka]'")

from aiokafka import AIOKafkaProducer

FAST_RETRY = {"initial_interval": "100ms", "max_interval": "1s"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def edge(factory: Any, broker: Any, topic: str, processors: list[dict[str, Any]] | None = None,
         **exporter: Any) -> Daemon:
    """An edge daemon: the unix socket in, the kafka exporter out."""
    daemon = factory()
    daemon.set_config(
        receivers={"socket": {"type": "unix_socket", "path": daemon.socket}},
        processors=processors or [],
        exporters={"bus": {"type": "kafka", "brokers": [broker.address], "topic": topic, "timeout": "2s",
                           "retry": FAST_RETRY, "batch": {"max_delay": "20ms"}, **exporter}},
        batch={"max_delay": "20ms"}, control_socket=daemon.control)
    return daemon


def gateway(factory: Any, broker: Any, topic: str, group: str, sink: OTLPServer | None = None,
            processors: list[dict[str, Any]] | None = None) -> Daemon:
    """A gateway daemon: the kafka receiver in, a file exporter (and an OTLP/HTTP sink) out."""
    daemon = factory()
    exporters: dict[str, Any] = {"file": {"type": "file", "batch": {"max_delay": "20ms"}}}
    if sink is not None:
        exporters["otlp"] = {"type": "otlp_http", "endpoint": sink.url, "retry": FAST_RETRY,
                             "batch": {"max_delay": "20ms"}}
    daemon.set_config(
        receivers={"bus": {"type": "kafka", "brokers": [broker.address], "topics": [topic], "group": group,
                           "session_timeout": "6s", "heartbeat_interval": "1s", "commit_interval": "100ms"}},
        processors=processors or [], exporters=exporters, batch={"max_delay": "20ms"}, control_socket=daemon.control)
    return daemon


def bus(daemon: Daemon) -> dict[str, Any]:
    return daemon.status()["receivers"]["bus"]


def span_ids(records: list[dict[str, Any]]) -> set[str]:
    return {r["span_id"] for r in records}


def send(daemon: Daemon, records: list[dict[str, Any]], per_packet: int = 20) -> None:
    lines = [orjson.dumps(r) for r in records]
    send_seqpacket(daemon.socket, [b"\n".join(lines[i:i + per_packet]) + b"\n"
                                   for i in range(0, len(lines), per_packet)])


def spans(n_traces: int, per_trace: int, start: int | None = None, **fields: Any) -> list[dict[str, Any]]:
    base = start if start is not None else uuid.uuid4().int >> 72
    return [make_span(trace=base + t, span=(base + t) * 16 + s + 1, **fields)
            for t in range(n_traces) for s in range(per_trace)]


def wait_assigned(gateways: list[Daemon], partitions: int = 4, timeout: float = 40.0) -> None:
    """Until every gateway holds some partitions and together they hold all of them."""
    def done() -> bool:
        counts = [bus(g)["assigned"] for g in gateways]
        return all(counts) and sum(counts) == partitions
    wait_for(done, timeout, 0.2, "the consumer group to settle")


def test_edge_to_two_gateways_to_file_and_otlp_sink_every_record_once_at_least(
        daemon_factory: Any, kafka_broker: Any) -> None:
    topic, group = unique("spans"), unique("gw")
    with OTLPServer() as sink:
        gateways = [gateway(daemon_factory, kafka_broker, topic, group, sink).start() for _ in range(2)]
        wait_assigned(gateways)
        the_edge = edge(daemon_factory, kafka_broker, topic).start()
        sent = spans(100, 3)
        send(the_edge, sent)
        want = span_ids(sent)
        wait_for(lambda: want <= span_ids(gateways[0].records() + gateways[1].records()), 30, 0.1,
                 "every span in the gateways' files")
        wait_for(lambda: want <= {s["span_id"] for s in sink.spans()}, 30, 0.1, "every span at the OTLP sink")
        assert all(g.records() for g in gateways)  # both gateways took a share
        # the gateways' copies agree with what was sent (record_v1 fields through OTLP and back)
        by_id = {r["span_id"]: r for g in gateways for r in g.records()}
        assert all(by_id[s["span_id"]]["trace_id"] == s["trace_id"] for s in sent)
        edge_status = the_edge.status()["exporters"]["bus"]
        assert edge_status["broker"] == "up" and edge_status["topic_partitions"] == 4
        for g in gateways:
            wait_for(lambda g=g: bus(g)["lag"] == 0, 10, 0.1, "the committed offsets to reach the end")
            for figures in bus(g)["partitions"].values():
                assert figures["committed"] == figures["high_watermark"]


def test_kill9_of_one_gateway_mid_stream_the_other_takes_its_partitions_nothing_lost(
        daemon_factory: Any, kafka_broker: Any) -> None:
    topic, group = unique("spans"), unique("gw")
    victim, survivor = (gateway(daemon_factory, kafka_broker, topic, group).start() for _ in range(2))
    wait_assigned([victim, survivor])
    the_edge = edge(daemon_factory, kafka_broker, topic).start()
    sent = spans(200, 3)
    stream = threading.Thread(target=lambda: [(send(the_edge, sent[i:i + 30]), time.sleep(0.05))
                                              for i in range(0, len(sent), 30)])
    stream.start()
    wait_for(victim.records, 20, 0.05, "the victim to write some records")
    victim.kill()  # SIGKILL, mid-stream
    stream.join()
    wait_for(lambda: bus(survivor)["assigned"] == 4, 40, 0.2, "the survivor to take every partition")
    want = span_ids(sent)
    wait_for(lambda: want <= span_ids(survivor.records() + read_ndjson(victim.output)), 40, 0.2,
             "every span delivered by the survivor or before the kill")
    assert not survivor.status()["exporters"]["file"].get("dropped")


def produce(address: str, topic: str, values: list[bytes], partition: int | None = None) -> None:
    import anyio

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=address)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=b"k", partition=partition)
        finally:
            await producer.stop()

    anyio.run(go)


@pytest.fixture(scope="module")
def lone_gateway(kafka_broker: Any) -> Any:
    topic, group = unique("collector"), unique("gw")
    from kafka_broker import free_port

    daemon = Daemon()
    gateway(lambda: daemon, kafka_broker, topic, group)
    daemon.set_config(metrics={"endpoint": f"127.0.0.1:{free_port()}"}).start()
    wait_assigned([daemon])
    yield daemon, topic
    daemon.cleanup()


def test_a_message_written_as_the_collector_writes_it_is_consumed_right(lone_gateway: Any, kafka_broker: Any) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    daemon, topic = lone_gateway
    trace_id, span_id = uuid.uuid4().bytes, uuid.uuid4().bytes[:8]
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="checkout")))
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai"
    span = ss.spans.add(trace_id=trace_id, span_id=span_id, name="chat gpt-4o", kind=Span.SPAN_KIND_CLIENT,
                        start_time_unix_nano=1_763_683_200_000_000_000, end_time_unix_nano=1_763_683_201_000_000_000)
    for key, value in (("gen_ai.request.model", AnyValue(string_value="gpt-4o")),
                       ("gen_ai.usage.input_tokens", AnyValue(int_value=12)),
                       ("gen_ai.usage.output_tokens", AnyValue(int_value=34)),
                       ("user.tier", AnyValue(string_value="gold"))):
        span.attributes.append(KeyValue(key=key, value=value))
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="rate limited"))
    # The Collector's kafka exporter (otlp_proto, partition_traces_by_id): the request's bytes, hex key.
    produce(kafka_broker.address, topic, [request.SerializeToString()])
    (record,) = wait_for(lambda: [r for r in daemon.records() if r["span_id"] == span_id.hex()], 20, 0.1,
                         "the Collector-written span")
    assert record["trace_id"] == trace_id.hex() and record["name"] == "chat gpt-4o"
    assert record["service"] == "checkout" and record["otel_kind"] == "client"
    assert record["status"] == "error"
    assert record["llm"]["model"] == "gpt-4o"
    assert record["llm"]["usage"]["input_tokens"] == 12 and record["llm"]["usage"]["output_tokens"] == 34
    assert record["attributes"]["user.tier"] == "gold"


def test_a_big_message_is_read_in_a_worker_thread_every_span_arrives(lone_gateway: Any, kafka_broker: Any) -> None:
    """A poll over THREAD_BODY_BYTES (one 600 KB OTLP message) is decoded off the event loop."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from shipper.receivers.otlp_intake import THREAD_BODY_BYTES

    daemon, topic = lone_gateway
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    trace_id = uuid.uuid4().bytes
    for i in range(1000):
        span = scope.spans.add(trace_id=trace_id, span_id=(i + 1).to_bytes(8, "big"), name="op",
                               start_time_unix_nano=1_000, end_time_unix_nano=2_000)
        span.attributes.add(key="note", value={"string_value": "y" * 520})
    body = request.SerializeToString()
    assert THREAD_BODY_BYTES < len(body) < 1_000_000
    produce(kafka_broker.address, topic, [body], partition=1)

    def arrived() -> list[dict[str, Any]]:
        found = [r for r in daemon.records() if r["trace_id"] == trace_id.hex()]
        return found if len(found) >= 1000 else []

    got = wait_for(arrived, 30, 0.1, "the big message's 1000 spans")
    assert sorted(int(r["span_id"], 16) for r in got) == list(range(1, 1001))
    assert all(r["attributes"]["note"] == "y" * 520 for r in got)
    assert daemon.status()["receivers"]["bus"]["read_in_thread"] >= 1


def test_a_malformed_message_is_set_aside_without_stalling_its_partition(lone_gateway: Any,
                                                                         kafka_broker: Any) -> None:
    daemon, topic = lone_gateway
    good = spans(1, 2)
    produce(kafka_broker.address, topic, [b"\x0a\xff\xff\xff\xffnot protobuf", orjson.dumps(good[0]),
                                          b"", orjson.dumps(good[1])], partition=2)
    wait_for(lambda: span_ids(good) <= span_ids(daemon.records()), 20, 0.1, "the good records after the bad")
    status = daemon.status()
    malformed = status["pipeline"].get("malformed", {})
    assert malformed.get("undecodable_otlp_proto", 0) >= 1 and malformed.get("empty_message", 0) >= 1
    rejected = read_ndjson(Path(daemon.state) / "rejected" / "rejected.ndjson")
    assert any(r.get("reason") == "undecodable_otlp_proto" and "/2@" in r.get("detail", "") for r in rejected)
    wait_for(lambda: bus(daemon)["partitions"][f"{topic}/2"]["lag"] == 0, 10, 0.1, "partition 2 committed to its end")


def test_tail_sampler_on_the_gateway_keeps_or_drops_whole_traces_from_three_edges(
        daemon_factory: Any, kafka_broker: Any) -> None:
    topic, group = unique("tail"), unique("gw")
    tail = [{"type": "sample", "rate": 0.0, "tail": {"decision_wait": "20s", "keep_errors": True}}]
    the_gateway = gateway(daemon_factory, kafka_broker, topic, group, processors=tail).start()
    wait_assigned([the_gateway])
    edges = [edge(daemon_factory, kafka_broker, topic).start() for _ in range(3)]
    base = uuid.uuid4().int >> 72
    traces = {f"{base + t:032x}": t % 2 == 0 for t in range(20)}  # trace id -> has an error span
    roots, children = [], {1: [], 2: []}
    for t, (trace_id, failed) in enumerate(traces.items()):
        root_id = f"{(base + t) * 4 + 1:016x}"
        roots.append({**make_span(), "trace_id": trace_id, "span_id": root_id, "name": "request"})
        for e in (1, 2):
            child = {**make_span(), "trace_id": trace_id, "span_id": f"{(base + t) * 4 + 1 + e:016x}",
                     "parent_id": root_id, "name": f"step on edge {e}"}
            if failed and e == 2:
                child["status"] = "error"
                child["error"] = {"type": "Timeout", "message": "tool timed out"}
            children[e].append(child)
    send(edges[1], children[1])
    send(edges[2], children[2])
    wait_for(lambda: the_gateway.status()["pipeline"].get("received", 0) >= 40, 20, 0.1,
             "the children to reach the gateway")
    send(edges[0], roots)  # roots last: each trace is decided when its root arrives, whole
    kept = {t for t, failed in traces.items() if failed}
    wait_for(lambda: len(the_gateway.records()) >= 3 * len(kept), 30, 0.1, "the kept traces")
    time.sleep(0.5)
    got: dict[str, int] = {}
    for r in the_gateway.records():
        got[r["trace_id"]] = got.get(r["trace_id"], 0) + 1
    assert set(got) == kept and all(n == 3 for n in got.values())


def test_kill9_of_a_gateway_holding_traces_for_its_tail_sampler_loses_none(daemon_factory: Any,
                                                                            kafka_broker: Any) -> None:
    """Offsets of spans a tail sampler holds are not committed: after a kill -9 the next member reads them."""
    topic, group = unique("held"), unique("gw")
    tail = [{"type": "sample", "rate": 0.0, "tail": {"decision_wait": "5m", "keep_errors": True}}]
    first = gateway(daemon_factory, kafka_broker, topic, group, processors=tail).start()
    wait_assigned([first])
    the_edge = edge(daemon_factory, kafka_broker, topic).start()
    base = uuid.uuid4().int >> 72
    children = [{**make_span(trace=base + t, span=(base + t) * 4 + 2, parent=(base + t) * 4 + 1),
                 "status": "error", "error": {"type": "E", "message": "failed"}} for t in range(10)]
    roots = [make_span(trace=base + t, span=(base + t) * 4 + 1) for t in range(10)]
    send(the_edge, children)
    wait_for(lambda: any(p.get("held_traces", 0) >= 10 for p in first.status()["processors"].values()), 20, 0.1,
             "the gateway to hold the ten traces")
    time.sleep(1.0)  # several commit intervals: nothing may be committed while held
    held = bus(first)
    assert held["lag"] > 0 and all(p["committed"] in (None, 0) for p in held["partitions"].values())
    first.kill()
    second = gateway(daemon_factory, kafka_broker, topic, group, processors=tail).start()
    wait_assigned([second])
    send(the_edge, roots)
    wait_for(lambda: len(second.records()) >= 20, 60, 0.2, "the ten traces, whole, on the next member")
    assert span_ids(second.records()) == span_ids(children) | span_ids(roots)
    wait_for(lambda: bus(second)["lag"] == 0, 20, 0.1, "the offsets committed once the traces are queued")


def test_head_sampling_on_the_edges_agrees_across_edges(daemon_factory: Any, kafka_broker: Any) -> None:
    from shipper.processors.sample import trace_fraction

    topic, group = unique("head"), unique("gw")
    the_gateway = gateway(daemon_factory, kafka_broker, topic, group).start()
    wait_assigned([the_gateway])
    head = [{"type": "sample", "rate": 0.5, "seed": 11}]
    edges = [edge(daemon_factory, kafka_broker, topic, processors=head).start() for _ in range(3)]
    base = uuid.uuid4().int >> 72
    trace_ids = [f"{base + t:032x}" for t in range(60)]
    for e, daemon in enumerate(edges):
        send(daemon, [{**make_span(), "trace_id": tid, "span_id": f"{(base + t) * 4 + e + 1:016x}"}
                      for t, tid in enumerate(trace_ids)])
    kept = {tid for tid in trace_ids if trace_fraction(tid, 11) < 0.5}
    assert 0 < len(kept) < len(trace_ids)
    wait_for(lambda: len(the_gateway.records()) >= 3 * len(kept), 30, 0.1, "the head-sampled traces")
    wait_for(lambda: all(d.status()["pipeline"].get("processed", 0) >= len(kept) for d in edges), 10, 0.1,
             "the edges to finish")
    time.sleep(0.5)
    got: dict[str, int] = {}
    for r in the_gateway.records():
        got[r["trace_id"]] = got.get(r["trace_id"], 0) + 1
    assert set(got) == kept and all(n == 3 for n in got.values())


@pytest.mark.slow
def test_broker_stopped_30s_the_edge_queue_absorbs_nothing_lost(daemon_factory: Any) -> None:
    from kafka_broker import Broker

    broker = Broker().start()
    try:
        topic, group = unique("outage"), unique("gw")
        the_gateway = gateway(daemon_factory, broker, topic, group).start()
        wait_assigned([the_gateway])
        the_edge = edge(daemon_factory, broker, topic).start()
        before = spans(50, 2)
        send(the_edge, before)
        wait_for(lambda: span_ids(before) <= span_ids(the_gateway.records()), 20, 0.1, "the spans before")
        # Stopped with SIGSTOP: it answers nothing for 30 s and keeps its log, as a real broker's disk
        # would (Tansu's storage is memory, so a killed one would come back as an empty new cluster).
        broker.pause()
        during = spans(100, 2)
        send(the_edge, during)
        time.sleep(30)
        bus_out = the_edge.status()["exporters"]["bus"]
        assert bus_out["broker"] == "down" and bus_out["queue_items"] > 0 and bus_out["retried"] > 0
        assert bus_out.get("dropped", {}) == {}
        broker.resume()
        want = span_ids(before) | span_ids(during)
        wait_for(lambda: want <= span_ids(the_gateway.records()), 60, 0.2, "every span once the broker is back")
        # the client may deliver what it buffered during the pause before the edge's next attempt (up to
        # retry.max_interval away) sees the broker answer: the state follows that attempt
        wait_for(lambda: the_edge.status()["exporters"]["bus"]["broker"] == "up", 20, 0.1,
                 "the edge to see the broker up again")
    finally:
        broker.cleanup()


def test_status_and_metrics_show_partitions_and_broker_state(lone_gateway: Any, kafka_broker: Any,
                                                            daemon_factory: Any) -> None:
    import subprocess
    import sys
    import urllib.request

    daemon, topic = lone_gateway
    produce(kafka_broker.address, topic, [orjson.dumps(r) for r in spans(2, 1)], partition=1)
    wait_for(lambda: bus(daemon)["partitions"][f"{topic}/1"]["committed"], 20, 0.1, "a commit on partition 1")
    result = subprocess.run([sys.executable, "-m", "shipper", "status", "--control", daemon.control],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    text = result.stdout
    assert f"{topic}/1: committed " in text and "lag " in text
    metrics = urllib.request.urlopen(f"http://{daemon.config['metrics']['endpoint']}/metrics", timeout=10).read().decode()
    assert f'shipper_partition_lag{{component="bus",partition="1",topic="{topic}"}}' in metrics
    assert f'shipper_partition_committed_offset{{component="bus",partition="1",topic="{topic}"}}' in metrics
    the_edge = edge(daemon_factory, kafka_broker, unique("state")).start()
    send(the_edge, spans(1, 1))
    wait_for(lambda: the_edge.status()["exporters"]["bus"]["broker"] == "up", 20, 0.1, "the edge to reach the broker")
    for extra in ([], ["--json"]):  # the text table once crashed on the exporter's partition count
        result = subprocess.run([sys.executable, "-m", "shipper", "status", "--control", the_edge.control, *extra],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and not result.stderr, result.stderr
    assert orjson.loads(result.stdout)["exporters"]["bus"]["topic_partitions"] == 4
    text = subprocess.run([sys.executable, "-m", "shipper", "status", "--control", the_edge.control],
                          capture_output=True, text=True, timeout=30).stdout
    assert "broker up" in text and "broker_up 1" in text and "topic_partitions 4" in text


def test_a_record_too_large_for_any_message_is_counted_once_even_through_retries(daemon_factory: Any) -> None:
    """Each record is counted once, `exported` or `dead_lettered`: the broker is down at first (the batch
    is retried: nothing dead-lettered yet), then up: the small records go, the huge one is dead-lettered
    once as too_large and not counted exported."""
    from kafka_broker import Broker
    from test_kafka import consume_all

    from shipper.receivers.kafka import decode_message

    broker = Broker()  # its port chosen, not listening yet
    try:
        topic = unique("too-large")
        the_edge = edge(daemon_factory, broker, topic, encoding="record_v1", max_message_bytes=2048,
                        timeout="1s").start()
        small = spans(3, 2)
        huge = spans(1, 1, output="y" * 5000)
        send(the_edge, [*small, *huge])
        wait_for(lambda: the_edge.status()["exporters"]["bus"].get("retried", 0) >= 2, 30, 0.1,
                 "the batch to be retried while the broker is down")
        down = the_edge.status()["exporters"]["bus"]
        assert down["exported"] == 0 and down["dead_lettered"] == 0 and not down.get("dropped")
        broker.start()
        wait_for(lambda: the_edge.status()["exporters"]["bus"]["exported"] >= len(small), 30, 0.1,
                 "the small records to be exported")
        time.sleep(0.3)
        out = the_edge.status()["exporters"]["bus"]
        assert (out["exported"], out["dead_lettered"], out["dropped"]) == (len(small), 1, {"too_large": 1})
        assert the_edge.status()["dropped"] == {"too_large": 1}
        letters = read_ndjson(the_edge.state / "deadletter" / "bus.ndjson")
        assert [(d["reason"], [r["span_id"] for r in d["records"]]) for d in letters] == \
            [("too_large", [huge[0]["span_id"]])]
        messages = anyio.run(consume_all, broker.address, topic, out["kafka_messages"])
        got = [r["span_id"] for m in messages for r in decode_message(m.value, "auto", 1 << 20)[0]]
        assert sorted(got) == sorted(r["span_id"] for r in small)
    finally:
        broker.cleanup()


def test_a_forwarding_gateway_sends_the_edges_messages_on_as_they_came(daemon_factory: Any,
                                                                       kafka_broker: Any) -> None:
    """A gateway whose only exporter forwards (docs/forwarding.md) sends the edge's otlp_proto messages
    on unread: every span arrives once, as the edge encoded it (its OpenInference attributes, shipper's
    scope), counted as forwarded, and the offsets are committed."""
    topic, group = unique("fwd"), unique("gw")
    with OTLPServer() as sink:
        gw = gateway(daemon_factory, kafka_broker, topic, group)
        gw.config["exporters"] = {"otlp": {"type": "otlp_http", "endpoint": sink.url, "forward_otlp": True,
                                           "retry": FAST_RETRY, "batch": {"max_delay": "20ms"}}}
        gw.set_config().start()
        wait_assigned([gw])
        the_edge = edge(daemon_factory, kafka_broker, topic).start()
        sent = spans(20, 3, kind="llm", llm={"model": "m1"})
        send(the_edge, sent)
        want = span_ids(sent)
        wait_for(lambda: want <= {x["span_id"] for x in sink.spans()}, 30, 0.1, "every span at the OTLP sink")
        got = sink.spans()
        assert len(got) == len(sent)
        assert all(s["attributes"].get("llm.model_name") == "m1" for s in got)  # the edge's encoding
        assert gw.status()["pipeline"]["forwarded"] == len(sent)
        wait_for(lambda: bus(gw)["lag"] == 0, 10, 0.1, "the committed offsets to reach the end")
