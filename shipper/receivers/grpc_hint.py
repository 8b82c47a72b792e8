"""A gRPC client that reached the OTLP/HTTP port: answer in HTTP/2 with a status that names the right port.

gRPC speaks HTTP/2 and opens with the connection preface (`PRI * HTTP/2.0...`); an HTTP/1.1 server can
only close on it, which the client reports as a bare "connection reset". Instead otlp_http hands such a
connection here: we send our SETTINGS, wait for the client's first HEADERS frame (its stream id), and
answer that stream trailers-only (`grpc-status: 12` UNIMPLEMENTED, `grpc-message` saying where OTLP/gRPC
is served), then GOAWAY and close. Hand-encoded HPACK literals (no Huffman, no table): a handful of
bytes is cheaper than a dependency for an error path.
"""

from __future__ import annotations

import struct
from urllib.parse import quote

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _SETTINGS, _GOAWAY = 0x1, 0x4, 0x7
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1
MAX_READ = 64 * 1024  # what we read before giving up on finding the client's HEADERS frame

__all__ = ["MAX_READ", "PREFACE", "answer", "first_stream", "greeting", "looks_like_http2"]


def looks_like_http2(data: bytes) -> bool:
    """Whether the first bytes of a connection are the HTTP/2 preface's request line."""
    return data.startswith(PREFACE[:14])


def first_stream(data: bytes) -> int | None:
    """The stream id of the first HEADERS frame after the preface in `data`, None until it has arrived."""
    pos = len(PREFACE)
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kind = data[pos + 3]
        stream = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        if kind == _HEADERS:
            return stream
        pos += 9 + length
    return None


def greeting() -> bytes:
    """Our SETTINGS (defaults) and the ack of the client's: a gRPC client sends its request only after these."""
    return _frame(_SETTINGS, 0, 0, b"") + _frame(_SETTINGS, _ACK, 0, b"")


def answer(stream: int, message: str, status: int = 12) -> bytes:
    """Bytes to send: a trailers-only response on `stream` with `status` and `message`, then GOAWAY."""
    block = b"".join(_literal(name, value) for name, value in (
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", str(status)),
        ("grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"))))
    goaway = struct.pack(">II", stream, 0)  # last stream id, NO_ERROR
    return (_frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, block) + _frame(_GOAWAY, 0, 0, goaway))


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + _string(raw_name) + _string(raw_value)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7) + data


def _integer(n: int, prefix: int) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 §5.1), the high bits (Huffman flag) zero."""
    top = (1 << prefix) - 1
    if n < top:
        return bytes((n,))
    out = bytearray((top,))
    n -= top
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)

