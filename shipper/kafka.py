"""What the `kafka` exporter and receiver share: connection settings, the client library, trace keys.

The client is aiokafka (the `shipper[kafka]` extra), imported only here and only when a kafka component
is used, so the rest of shipper runs without it and `shipper check` names the missing extra instead of
failing with an ImportError. Settings map one to one onto the client's:

    brokers: [host:port, ...]            bootstrap_servers
    client_id                            client_id (shown in the broker's logs and quotas)
    security_protocol                    PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl: {mechanism, username, password}  PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512; password is a Secret
    tls: {ca_file, cert_file, key_file, insecure_skip_verify}

Messages are keyed by trace id (32 lowercase hex characters, as the OpenTelemetry Collector keys them
with `partition_traces_by_id`), and `partition_of` is the Java client's default partitioner (murmur2),
so shipper, the Collector and any other Kafka producer put a trace in the same partition.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from shipper.values import Secret

__all__ = ["EXTRA_HINT", "KafkaConnection", "SASLConfig", "TLSConfig", "client_settings", "describe_error",
           "library_problem", "partition_of"]

EXTRA_HINT = "pip install 'shipper[kafka]'"


def library_problem() -> str | None:
    """Why kafka components cannot run here (the client library is missing), or None."""
    try:
        import aiokafka  # type: ignore[import-untyped]  # noqa: F401 - only whether it imports
    except ImportError:
        return f"the kafka components need the aiokafka client, which is not installed: {EXTRA_HINT}"
    return None


@dataclass(kw_only=True)
class SASLConfig:
    """SASL credentials; the password never prints (status, logs, errors)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str
    password: Secret


@dataclass(kw_only=True)
class TLSConfig:
    """TLS to the brokers: a CA bundle to trust, and a client certificate when the brokers ask for one."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False

    def check(self) -> list[str]:
        if bool(self.cert_file) != bool(self.key_file):
            return ["cert_file and key_file go together: set both or neither"]
        return []


@dataclass(kw_only=True)
class KafkaConnection:
    """Where the brokers are and how to reach them."""

    brokers: list[str] = field(default_factory=lambda: ["127.0.0.1:9092"])
    client_id: str = "shipper"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl: SASLConfig | None = None
    tls: TLSConfig | None = None

    def connection_problems(self) -> list[str]:
        """Problems of these settings (each `key: what was expected`), the missing library first."""
        problems = []
        missing = library_problem()
        if missing:
            problems.append(f"type: {missing}")
        if not self.brokers:
            problems.append("brokers: expected at least one host:port")
        for i, broker in enumerate(self.brokers):
            host, sep, port = broker.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                problems.append(f"brokers[{i}]: expected host:port like 127.0.0.1:9092, got {broker!r}")
        uses_sasl = self.security_protocol.startswith("SASL")
        if uses_sasl and self.sasl is None:
            problems.append(f"sasl: security_protocol {self.security_protocol} needs sasl: {{mechanism, username, "
                            "password}}")
        if self.sasl is not None and not uses_sasl:
            problems.append("sasl: set security_protocol to SASL_SSL (or SASL_PLAINTEXT) to use it")
        if self.tls is not None and self.security_protocol not in ("SSL", "SASL_SSL"):
            problems.append("tls: set security_protocol to SSL or SASL_SSL to use it")
        return problems

    def describe(self) -> str:
        """The brokers and protocol, for logs and status (never a credential)."""
        who = f" as {self.sasl.username}" if self.sasl else ""
        return f"{','.join(self.brokers)} ({self.security_protocol}{who})"


def _ssl_context(tls: TLSConfig | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=(tls.ca_file or None) if tls else None)
    if tls is not None and tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls is not None and tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client_settings(conn: KafkaConnection, timeout: float) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer or consumer; the one place a password is revealed."""
    out: dict[str, Any] = {
        "bootstrap_servers": list(conn.brokers),
        "client_id": conn.client_id,
        "security_protocol": conn.security_protocol,
        "request_timeout_ms": max(1000, int(timeout * 1000)),
        "retry_backoff_ms": 200,
        "connections_max_idle_ms": 540_000,
    }
    if conn.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = _ssl_context(conn.tls)
    if conn.sasl is not None:
        out["sasl_mechanism"] = conn.sasl.mechanism
        out["sasl_plain_username"] = conn.sasl.username
        out["sasl_plain_password"] = conn.sasl.password.reveal()
    return out


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (and aiokafka's) picks for `key`."""
    from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


_ADDRESS = re.compile(r"\('([^']*)', (\d+)(?:, [^()]*)?\)")
"""A socket address as Python prints it: ('127.0.0.1', 9092), with <AddressFamily.AF_INET: 2> or IPv6's 0, 0."""
_ADDRESSES = re.compile(r"\[((?:\('[^']*', \d+(?:, [^()]*)?\)(?:, )?)+)\]")


def _address(match: re.Match[str]) -> str:
    host, port = match.group(1), match.group(2)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_error(exc: BaseException) -> str:
    """`Name: what happened` of a client or socket error, on one line, for status and logs: the class
    name once (aiokafka's texts start with it already) and addresses as host:port, not Python reprs
    such as `[('127.0.0.1', 9092, <AddressFamily.AF_INET: 2>)]`."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    while text.startswith(f"{name}:"):
        text = text[len(name) + 1:].lstrip()
    text = _ADDRESSES.sub(lambda m: ", ".join(_address(a) for a in _ADDRESS.finditer(m.group(1))), text)
    text = _ADDRESS.sub(_address, text)
    return f"{name}: {text}" if text and text != name else name
