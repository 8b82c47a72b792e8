"""The kafka exporter and receiver in-process, against a real Tansu broker; config, check and secrets."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from shipper import registry
from shipper.component import Context, Intake
from shipper.config import parse_config
from shipper.stats import Counters
from shipper.testing import make_span

pytest.importorskip("aiokafka", reason="the kafka extra (aiokafka) is not installed: pip install -e '.[kafka]'")

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.kafka import partition_of
from shipper.receivers.kafka import decode_message

ROOT = Path(__file__).resolve().parents[1]


def build(section: str, type_name: str, settings: dict[str, Any], state_dir: Path, name: str = "bus") -> Any:
    """A component built from YAML settings exactly as the daemon builds it."""
    config = parse_config(orjson.dumps({
        "state_dir": str(state_dir),
        "receivers": {"r": {"type": "unix_socket", "path": str(state_dir / "s.sock")}} if section != "receivers"
        else {name: {"type": type_name, **settings}},
        "exporters": {name: {"type": type_name, **settings}} if section == "exporters" else {"f": {"type": "file"}},
    }).decode(), "<test>")
    spec = next(s for s in getattr(config, section) if s.name == name)
    counters = Counters()
    cls = registry.load(section, type_name)
    return cls(spec.config, Context(name=name, state_dir=state_dir, counters=counters)), counters


def traces(n_traces: int, spans_each: int, **fields: Any) -> list[dict[str, Any]]:
    base = uuid.uuid4().int >> 64
    return [make_span(trace=base + t, span=t * 100 + s + 1, **fields) for t in range(n_traces) for s in range(spans_each)]


async def consume_all(address: str, topic: str, expect_messages: int, timeout: float = 15.0) -> list[Any]:
    """Every message of `topic` (all partitions, from the start), once `expect_messages` have come."""
    consumer = AIOKafkaConsumer(bootstrap_servers=address, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        got: list[Any] = []
        with anyio.fail_after(timeout):
            while len(got) < expect_messages:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(batch)
        return got
    finally:
        await consumer.stop()


def test_exporter_keys_by_trace_and_splits_to_max_message_bytes(kafka_broker: Any, tmp_path: Path) -> None:
    topic = f"split-{uuid.uuid4().hex[:8]}"
    exporter, counters = build("exporters", "kafka", {"brokers": [kafka_broker.address], "topic": topic,
                                                      "max_message_bytes": 4096}, tmp_path)
    batch = traces(40, 5, input={"text": "x" * 200})

    async def go() -> list[Any]:
        await exporter.open()
        try:
            await exporter.export(batch)
            stats = exporter.statistics()
            assert stats["broker"] == "up" and stats["topic_partitions"] == 4
            return await consume_all(kafka_broker.address, topic, counters.counts["kafka_messages"])
        finally:
            await exporter.aclose()

    messages = anyio.run(go)
    assert len(messages) > 4  # split: more messages than partitions
    seen: dict[str, set[int]] = {}
    span_ids = []
    for message in messages:
        assert len(message.value) <= 4096
        request = ExportTraceServiceRequest.FromString(message.value)
        key_trace = message.key.decode()
        assert len(key_trace) == 32 and partition_of(message.key, 4) == message.partition
        ids = set()
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    trace_id = span.trace_id.hex()
                    ids.add(trace_id)
                    seen.setdefault(trace_id, set()).add(message.partition)
                    span_ids.append(span.span_id.hex())
                    assert partition_of(trace_id.encode(), 4) == message.partition
        assert key_trace in ids
    assert sorted(span_ids) == sorted(r["span_id"] for r in batch)
    assert all(len(parts) == 1 for parts in seen.values())  # a trace never spans two partitions


def test_one_oversize_record_is_dead_lettered_the_rest_sent(kafka_broker: Any, tmp_path: Path) -> None:
    topic = f"big-{uuid.uuid4().hex[:8]}"
    exporter, counters = build("exporters", "kafka", {"brokers": [kafka_broker.address], "topic": topic,
                                                      "max_message_bytes": 2048, "encoding": "record_v1"}, tmp_path)
    small = traces(3, 2)
    huge = make_span(trace=7, span=7, output="y" * 5000)

    async def go() -> list[Any]:
        try:
            await exporter.export([*small, huge])
            return await consume_all(kafka_broker.address, topic, counters.counts["kafka_messages"])
        finally:
            await exporter.aclose()

    messages = anyio.run(go)
    sent = [rec for m in messages for rec in decode_message(m.value, "auto", 1 << 20)[0]]
    assert sorted(r["span_id"] for r in sent) == sorted(r["span_id"] for r in small)
    lines = [orjson.loads(line) for line in (tmp_path / "deadletter" / "bus.ndjson").read_bytes().splitlines()]
    assert [(d["reason"], d["records"][0]["span_id"]) for d in lines] == [("too_large", huge["span_id"])]
    assert counters.dropped == {"too_large": 1}


@pytest.mark.parametrize("compression", ["none", "gzip", "lz4", "zstd"])
def test_record_v1_is_lossless_through_the_broker_with_each_compression(kafka_broker: Any, tmp_path: Path,
                                                                         compression: str) -> None:
    topic = f"v1-{compression}-{uuid.uuid4().hex[:8]}"
    exporter, counters = build("exporters", "kafka", {"brokers": [kafka_broker.address], "topic": topic,
                                                      "encoding": "record_v1", "compression": compression}, tmp_path)
    batch = traces(5, 3, kind="llm", llm={"model": "gpt-4o", "usage": {"input_tokens": 3, "output_tokens": 5}},
                   input={"messages": [{"role": "user", "content": "hi"}]}, output="hello", tags=["a"])

    async def go() -> list[Any]:
        try:
            await exporter.export(batch)
            return await consume_all(kafka_broker.address, topic, counters.counts["kafka_messages"])
        finally:
            await exporter.aclose()

    got = [rec for m in anyio.run(go) for rec in decode_message(m.value, "auto", 1 << 20)[0]]
    assert sorted(got, key=lambda r: r["span_id"]) == sorted(batch, key=lambda r: r["span_id"])


def test_otlp_proto_attributes_follow_the_conventions_key(kafka_broker: Any, tmp_path: Path) -> None:
    from shipper.testing import spans_of

    got = {}
    for conventions in (["openinference"], ["genai"]):
        topic = f"conv-{uuid.uuid4().hex[:8]}"
        exporter, counters = build("exporters", "kafka", {"brokers": [kafka_broker.address], "topic": topic,
                                                          "conventions": conventions}, tmp_path)

        async def go(exporter: Any, counters: Counters, topic: str) -> list[Any]:
            try:
                await exporter.export(traces(1, 1, kind="llm", llm={"model": "gpt-4o"}))
                return await consume_all(kafka_broker.address, topic, counters.counts["kafka_messages"])
            finally:
                await exporter.aclose()

        (message,) = anyio.run(go, exporter, counters, topic)
        (span,), _ = spans_of(ExportTraceServiceRequest.FromString(message.value))
        got[conventions[0]] = span["attributes"]
    assert got["openinference"]["llm.model_name"] == "gpt-4o" and "gen_ai.request.model" not in got["openinference"]
    assert got["genai"]["gen_ai.request.model"] == "gpt-4o" and "llm.model_name" not in got["genai"]


def test_decode_message_tells_encodings_apart_and_sets_aside_garbage() -> None:
    from shipper.otlp.encode import Encoder, to_json

    records = traces(1, 2)
    request = Encoder(()).request(records)
    assert [r["span_id"] for r in decode_message(request.SerializeToString(), "auto", 1 << 20)[0]] == \
        [r["span_id"] for r in records]
    assert len(decode_message(to_json(request), "auto", 1 << 20)[0]) == 2
    assert len(decode_message(b"\n".join(map(orjson.dumps, records)), "auto", 1 << 20)[0]) == 2
    for value, reason in ((b"\xff\x00garbage", "undecodable_otlp_proto"), (None, "empty_message"),
                          (b'{"resourceSpans": 3}', "undecodable_otlp_json")):
        got, rejects = decode_message(value, "auto", 1 << 20)
        assert got == [] and [r.reason for r in rejects] == [reason]


def test_receiver_commits_only_what_the_pipeline_marked_durable(kafka_broker: Any, tmp_path: Path) -> None:
    """In process: intakes come per partition; an offset reaches Kafka only after commit(mark)."""
    topic, group = f"commit-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    receiver, counters = build("receivers", "kafka", {"brokers": [kafka_broker.address], "topics": [topic],
                                                      "group": group, "commit_interval": "50ms"}, tmp_path)

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.address)
        await producer.start()
        for rec in traces(8, 1):
            await producer.send_and_wait(topic, orjson.dumps(rec), key=rec["trace_id"].encode())
        await producer.stop()
        intakes: list[Intake] = []

        async def deliver(intake: Intake) -> None:
            intakes.append(intake)

        async with anyio.create_task_group() as tg:
            await receiver.open()
            tg.start_soon(receiver.run, deliver)
            with anyio.fail_after(20):
                while sum(len(i.records) for i in intakes) < 8:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            stats = receiver.statistics()
            assert all(p["committed"] in (None, 0) for p in stats["partitions"].values())  # nothing durable yet
            for intake in intakes:
                await receiver.commit(intake.mark)
            with anyio.fail_after(10):
                while receiver.statistics()["lag"] != 0:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        await receiver.aclose()

    anyio.run(go)
    assert counters.counts["received"] == 8 and counters.counts["commits"] >= 1


def test_receiver_pauses_its_partitions_while_intake_is_full(kafka_broker: Any, tmp_path: Path) -> None:
    """A deliver() that does not return (the pipeline's intake full): partitions paused, then resumed."""
    topic, group = f"pause-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    receiver, counters = build("receivers", "kafka", {"brokers": [kafka_broker.address], "topics": [topic],
                                                      "group": group, "pause_after": "50ms"}, tmp_path)

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.address)
        await producer.start()
        for rec in traces(20, 1):
            await producer.send_and_wait(topic, orjson.dumps(rec), key=rec["trace_id"].encode())
        await producer.stop()
        full = anyio.Event()
        got: list[Intake] = []

        async def deliver(intake: Intake) -> None:
            await full.wait()
            got.append(intake)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.run, deliver)
            with anyio.fail_after(20):
                while not receiver.statistics()["paused"]:
                    await anyio.sleep(0.02)
            assert receiver._consumer.paused() == receiver._consumer.assignment()
            full.set()
            with anyio.fail_after(20):
                while sum(len(i.records) for i in got) < 20:
                    await anyio.sleep(0.05)
            assert not receiver.statistics()["paused"] and not receiver._consumer.paused()
            tg.cancel_scope.cancel()
        await receiver.aclose()

    anyio.run(go)
    assert counters.counts["paused"] >= 1


def run_check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(config)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_check_names_the_missing_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['aiokafka'] = None\n")
    config = tmp_path / "edge.yaml"
    config.write_text(textwrap.dedent(f"""\
        state_dir: {tmp_path}/state
        receivers: {{socket: {{type: unix_socket, path: {tmp_path}/s.sock}}}}
        exporters: {{bus: {{type: kafka, brokers: ["127.0.0.1:9092"]}}}}
    """))
    result = run_check(config, {"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert result.returncode == 1
    assert "exporters.bus.type: the kafka components need the aiokafka client" in result.stderr
    assert "pip install 'shipper[kafka]'" in result.stderr
    assert run_check(config).returncode == 0


def test_sasl_password_never_printed(tmp_path: Path) -> None:
    secret = "hunter2-kafka-password"
    config = tmp_path / "gw.yaml"
    config.write_text(textwrap.dedent(f"""\
        state_dir: {tmp_path}/state
        receivers:
          bus: {{type: kafka, brokers: ["b1:9093"], security_protocol: SASL_SSL,
                sasl: {{mechanism: SCRAM-SHA-512, username: gw, password: "{secret}"}}}}
        exporters:
          out: {{type: kafka, brokers: ["b1:9093"], security_protocol: SASL_SSL,
                sasl: {{mechanism: PLAIN, username: gw, password: "{secret}"}}}}
    """))
    result = run_check(config)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    exporter, _ = build("exporters", "kafka", {"brokers": ["b1:9093"], "security_protocol": "SASL_SSL",
                                               "sasl": {"username": "gw", "password": secret}}, tmp_path)
    assert secret not in repr(exporter.config) + str(exporter.statistics())
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("security_protocol: SASL_SSL,", "", 1))
    result = run_check(bad)
    assert result.returncode == 1 and "receivers.bus.sasl: set security_protocol" in result.stderr
    assert secret not in result.stderr


def test_scaling_examples_pass_check() -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 4
    for example in examples:
        result = run_check(example, {"SHIPPER_STATE_DIR": "/tmp/shipper-check-examples",
                                     "LANGFUSE_PUBLIC_KEY": "pk-lf-example0", "LANGFUSE_SECRET_KEY": "sk-lf-example0",
                                     "BRAINTRUST_API_KEY": "bt-example-key0"})
        assert result.returncode == 0, f"{example.name}: {result.stderr}"


def test_config_example_kafka_blocks_are_valid_and_document_every_key() -> None:
    """The commented kafka receiver and exporter of config.example.yaml, uncommented, pass and cover every key."""
    import dataclasses
    import re

    text = (ROOT / "config.example.yaml").read_text()
    blocks = re.findall(r"^  # bus:\n((?:  #   .*\n)+)", text, re.M)
    assert len(blocks) == 2
    receiver, exporter = ("\n".join("    " + line[6:] for line in block.splitlines()) for block in blocks)
    yaml_text = f"receivers:\n  bus:\n{receiver}\nexporters:\n  bus:\n{exporter}\n"
    yaml_text = yaml_text.replace("${KAFKA_PASSWORD}", "x").replace("security_protocol: PLAINTEXT", "security_protocol: SASL_SSL")
    config = parse_config(yaml_text, "config.example.yaml")
    for spec, block in ((config.receivers[0], receiver), (config.exporters[0], exporter)):
        assert spec.type == "kafka" and spec.config.sasl is not None
        for f in dataclasses.fields(type(spec.config)):
            if f.name not in ("queue", "retry", "batch", "timeout") or spec is config.receivers[0]:
                assert f"{f.name}:" in block, f"{spec.name}: key {f.name} is not documented"


def test_broker_state_in_status_when_unreachable(tmp_path: Path) -> None:
    from kafka_broker import free_port

    from shipper.errors import RetryableExportError

    exporter, _ = build("exporters", "kafka", {"brokers": [f"127.0.0.1:{free_port()}"], "timeout": "1s"}, tmp_path)

    async def go() -> None:
        with pytest.raises(RetryableExportError):
            await exporter.export(traces(1, 1))
        await exporter.aclose()

    anyio.run(go)
    stats = exporter.statistics()
    assert stats["broker"] == "down"
    # the client's text, cleaned for status: the class name once, the address as host:port, no Python reprs
    address = exporter.config.brokers[0]
    assert stats["broker_error"].startswith("KafkaConnectionError: ") and address in stats["broker_error"]
    assert "AddressFamily" not in stats["broker_error"] and "KafkaConnectionError: Kafka" not in stats["broker_error"]
    assert "('" not in stats["broker_error"]


def test_socket_errors_are_described_without_python_reprs() -> None:
    """A real refused connection's OSError, as the exporter puts it in status: host:port, not a tuple."""
    from kafka_broker import free_port

    from shipper.kafka import describe_error

    port = free_port()

    async def refused() -> BaseException:
        import asyncio

        try:
            await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            return exc
        raise AssertionError("something listens on a free port")

    exc = anyio.run(refused)
    assert f"('127.0.0.1', {port})" in str(exc)
    assert describe_error(exc) == f"ConnectionRefusedError: [Errno 111] Connect call failed 127.0.0.1:{port}"


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "sharing_parts"])
def test_otlp_proto_values_parse_to_the_request_the_old_encoder_builds(kafka_broker: Any, tmp_path: Path,
                                                                       shared: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The values shipper.otlp.wire writes, read back from the broker: each parses to exactly
    `Encoder.request(its records, its project)`, split or not, alone or sharing span parts with an open
    otlp_http exporter that sent the same spans first."""
    import copy

    from shipper.otlp import wire

    monkeypatch.setattr(wire, "SHARE_PARTS", shared)

    from test_exporters_contract import TRACE, make
    from test_otlp_wire import EXTRA

    from shipper.otlp import wire
    from shipper.otlp.encode import fill_trace_wide
    from shipper.testing import OTLPServer

    batch = [*copy.deepcopy(TRACE + EXTRA), *traces(12, 3, kind="llm", llm={"model": "gpt-4o"}, project="p3",
                                                    input={"text": "q" * 300}, output="a" * 300)]
    for max_bytes in (1_000_000, 4096):
        topic = f"wire-{uuid.uuid4().hex[:8]}"
        exporter, counters = build("exporters", "kafka", {"brokers": [kafka_broker.address], "topic": topic,
                                                          "max_message_bytes": max_bytes}, tmp_path)

        async def go(exporter: Any = exporter, counters: Counters = counters, topic: str = topic) -> list[Any]:
            with OTLPServer() as server:
                other = make("otlp_http", server.url)
                if shared:
                    await other.open()
                await exporter.open()
                try:
                    assert wire.shared() is shared
                    hits = wire.PARTS.hits
                    records = copy.deepcopy(batch)  # one decoded record per queued line, as each worker gets it
                    if shared:
                        await other.export(records)
                    assert await exporter.export(records) == 0
                    assert (wire.PARTS.hits > hits) is shared
                    return await consume_all(kafka_broker.address, topic, counters.counts["kafka_messages"])
                finally:
                    await exporter.aclose()
                    await other.aclose()

        messages = anyio.run(go)
        groups = {(partition_of(r["trace_id"].encode(), 4), r.get("project") or None) for r in batch}
        assert (len(messages) > len(groups)) is (max_bytes == 4096)  # split, or one per partition and project
        expected_order = sorted(fill_trace_wide(copy.deepcopy(batch)), key=lambda r: r["trace_id"])
        seen = []
        for message in messages:
            request = ExportTraceServiceRequest.FromString(message.value)
            ids = {(s.trace_id.hex(), s.span_id.hex()) for rs in request.resource_spans for ss in rs.scope_spans
                   for s in ss.spans}
            records = [r for r in expected_order if (r["trace_id"], r["span_id"]) in ids]
            assert len(records) == len(ids) and len({r.get("project") for r in records}) == 1
            assert request == exporter.encoder.request(records, records[0].get("project") or None)
            seen.extend(ids)
        assert sorted(seen) == sorted((r["trace_id"], r["span_id"]) for r in batch)
