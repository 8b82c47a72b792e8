"""Spans, @traced and trace-wide fields, received by a real socket listener standing in for the daemon."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest

import shipper
from shipper.client.testing import RecordingServer, capture
from shipper.record import validate
from shipper.schema import record_schema

VALIDATOR = jsonschema.Draft202012Validator(record_schema())


def check(record: dict[str, Any]) -> None:
    """A record the daemon accepts, and valid against the record v1 schema shipped in the package."""
    validate(record)
    VALIDATOR.validate(record)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    """The shim pointed at a fresh listener; every record it got is checked against the contract."""
    with capture() as server:
        yield server
        for record in server.records:
            check(record)


def by_name(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["name"]: record for record in records}


def test_nested_spans_share_the_trace_and_point_to_their_parent(server: RecordingServer) -> None:
    """A span opened inside another has the same trace_id and the outer span_id as parent_id."""
    with shipper.span("outer", kind="chain") as outer, shipper.span("inner", kind="tool") as inner:
        assert shipper.current_span() is inner
    spans = by_name(server.wait_for(2))
    assert spans["inner"]["trace_id"] == spans["outer"]["trace_id"] == outer.trace_id
    assert spans["inner"]["parent_id"] == outer.span_id == spans["outer"]["span_id"]
    assert "parent_id" not in spans["outer"]
    assert spans["inner"]["kind"] == "tool" and spans["outer"]["kind"] == "chain"


def test_record_has_the_v1_envelope(server: RecordingServer) -> None:
    """A record carries v, ids, name, times, service and the emitting pid, and no empty keys."""
    import os

    with shipper.span("step"):
        pass
    (record,) = server.wait_for(1)
    assert record["v"] == 1 and record["service"] == "test"
    assert record["resource"] == {"process.pid": os.getpid()}
    assert 0 < record["start_ns"] <= record["end_ns"]
    envelope = {"v", "trace_id", "span_id", "name", "kind", "start_ns", "end_ns", "service", "resource"}
    assert set(record) == envelope


def test_log_adds_fields_and_merges_metadata(server: RecordingServer) -> None:
    """log() sets input/output and merges metadata, llm and attributes without touching the caller's dicts."""
    given = {"a": 1}
    with shipper.span("llm call", kind="llm", metadata=given) as s:
        s.log(input="q", metadata={"b": 2}, llm={"model": "m"}, attributes={"x": 1, "nested": {"no": 1}})
        s.log(output="a", llm={"usage": {"input_tokens": 3}})
    (record,) = server.wait_for(1)
    assert given == {"a": 1}
    assert record["input"] == "q" and record["output"] == "a"
    assert record["metadata"] == {"a": 1, "b": 2}
    assert record["llm"] == {"model": "m", "usage": {"input_tokens": 3}}
    assert record["attributes"] == {"x": 1, "nested": "{'no': 1}"}


def test_exception_is_recorded_and_reraised_unchanged(server: RecordingServer) -> None:
    """An exception leaving a span marks it error (type, message, stack) and reaches the caller as is."""
    error = KeyError("missing")
    with pytest.raises(KeyError) as raised, shipper.span("lookup"):
        raise error
    assert raised.value is error
    (record,) = server.wait_for(1)
    assert record["status"] == "error"
    assert record["error"]["type"] == "KeyError"
    assert record["error"]["message"] == "'missing'"
    assert "raise error" in record["error"]["stack"]


def test_set_status_error_with_a_message(server: RecordingServer) -> None:
    """set_status("error", message) marks the span failed without an exception."""
    with shipper.span("validate") as s:
        s.set_status("error", "bad input")
        s.set_status("bogus")  # ignored
    (record,) = server.wait_for(1)
    assert record["status"] == "error" and record["error"]["message"] == "bad input"


def test_trace_context_fields_land_on_every_span(server: RecordingServer) -> None:
    """session_id, user_id, tags and project from trace_context() are on each span of the trace."""
    with shipper.trace_context(session_id="s-1", user_id="u-1", tags=["a"], project="p"):
        with shipper.span("root"), shipper.trace_context(tags=["b"]), shipper.span("child"):
            pass
    spans = by_name(server.wait_for(2))
    assert spans["child"]["tags"] == ["a", "b"]
    for record in spans.values():
        assert (record["session_id"], record["user_id"], record["project"]) == ("s-1", "u-1", "p")


def test_trace_context_inside_a_span_reaches_its_root(server: RecordingServer) -> None:
    """Fields set once the trace is running still land on the spans that end afterwards, the root too."""
    with shipper.span("root"):
        with shipper.span("early"):
            pass
        with shipper.trace_context(user_id="u-2"), shipper.span("late"):
            pass
    spans = by_name(server.wait_for(3))
    assert "user_id" not in spans["early"]
    assert spans["late"]["user_id"] == spans["root"]["user_id"] == "u-2"


def test_span_keywords_for_trace_wide_fields(server: RecordingServer) -> None:
    """span(session_id=...) sets the field on the whole trace, its parent included."""
    with shipper.span("root"), shipper.span("child", session_id="s-9"):
        pass
    spans = by_name(server.wait_for(2))
    assert spans["root"]["session_id"] == spans["child"]["session_id"] == "s-9"


def test_unknown_span_keyword_is_a_type_error() -> None:
    """A misspelt keyword fails like any Python call, at the call site."""
    with pytest.raises(TypeError, match="inptu"):
        shipper.span("x", inptu=1)


def test_traced_records_bound_arguments_and_return_value(server: RecordingServer) -> None:
    """@traced captures the arguments by name (self left out) and the return value."""

    class Tool:
        @shipper.traced(kind="tool")
        def run(self, query: str, limit: int = 3, *extra: Any, **options: Any) -> list[str]:
            return [query] * limit

    Tool().run("q", 2, "x", verbose=True)
    (record,) = server.wait_for(1)
    assert record["name"].endswith("Tool.run") and record["kind"] == "tool"
    assert record["input"] == {"query": "q", "limit": 2, "extra": ["x"], "verbose": True}
    assert record["output"] == ["q", "q"]


def test_traced_capture_can_be_turned_off(server: RecordingServer) -> None:
    """capture_input=False / capture_output=False keep arguments and results out of the record."""

    @shipper.traced(name="secret", capture_input=False, capture_output=False)
    def secret(password: str) -> str:
        return password

    assert secret("hunter2") == "hunter2"
    (record,) = server.wait_for(1)
    assert record["name"] == "secret" and "input" not in record and "output" not in record


def test_traced_rejects_an_unknown_kind_at_decoration() -> None:
    """A bad kind is a setup error, raised when decorating, not on each call."""
    with pytest.raises(ValueError, match="kind"):
        shipper.traced(kind="widget")


def test_traced_exception_is_recorded_and_reraised(server: RecordingServer) -> None:
    """A traced function that raises marks its span error; the caller gets the same exception object."""
    error = ValueError("nope")

    @shipper.traced
    def fail() -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        fail()
    assert raised.value is error
    (record,) = server.wait_for(1)
    assert record["status"] == "error" and record["error"]["type"] == "ValueError"


async def test_asyncio_tasks_inherit_the_current_span(server: RecordingServer) -> None:
    """Tasks gathered inside a span are its children, each with its own span id."""

    @shipper.traced
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    async with shipper.span("batch") as parent:
        assert await asyncio.gather(fetch(1), fetch(2)) == [2, 4]
    records = server.wait_for(3)
    children = [r for r in records if r["name"].endswith("fetch")]
    assert {r["parent_id"] for r in children} == {parent.span_id}
    assert {r["output"] for r in children} == {2, 4}
    assert len({r["span_id"] for r in records}) == 3


async def test_traced_coroutine_exception_is_recorded(server: RecordingServer) -> None:
    """An async traced function that raises marks its span error and re-raises."""

    @shipper.traced
    async def fail() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError, match="down"):
        await fail()
    (record,) = server.wait_for(1)
    assert record["error"]["type"] == "RuntimeError"


def test_generator_span_covers_the_iteration_without_leaking(server: RecordingServer) -> None:
    """A traced generator's span lasts the iteration, parents spans opened inside it, and is not current
    in the consumer between items; string items are joined as the output."""

    @shipper.traced
    def stream(n: int) -> Iterator[str]:
        for i in range(n):
            with shipper.span(f"token {i}"):
                yield str(i)

    with shipper.span("consumer") as consumer:
        seen = []
        for token in stream(3):
            seen.append((token, shipper.current_span()))
    assert all(current is consumer for _, current in seen)
    spans = by_name(server.wait_for(5))
    generator = next(r for name, r in spans.items() if name.endswith("stream"))
    assert generator["parent_id"] == consumer.span_id
    assert generator["output"] == "012" and generator["input"] == {"n": 3}
    assert spans["token 0"]["parent_id"] == generator["span_id"]
    assert generator["end_ns"] >= spans["token 2"]["end_ns"]


def test_generator_closed_early_ends_its_span_normally(server: RecordingServer) -> None:
    """Breaking out of a traced generator ends its span without an error, with what was yielded."""

    @shipper.traced
    def numbers() -> Iterator[int]:
        yield from range(100)

    for n in numbers():
        if n == 2:
            break
    (record,) = server.wait_for(1)
    assert record["output"] == [0, 1, 2] and "status" not in record


def test_generator_exception_is_recorded_and_reraised(server: RecordingServer) -> None:
    """An exception inside a traced generator marks its span error and reaches the consumer."""

    @shipper.traced
    def broken() -> Iterator[int]:
        yield 1
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        list(broken())
    (record,) = server.wait_for(1)
    assert record["status"] == "error" and record["output"] == [1]


def test_generator_send_and_return_value_pass_through() -> None:
    """send() reaches the traced generator and its return value reaches `yield from`."""

    @shipper.traced
    def echo() -> Iterator[Any]:
        got = yield "ready"
        yield got
        return "done"

    def outer() -> Iterator[Any]:
        result = yield from echo()
        yield result

    gen = outer()
    assert next(gen) == "ready"
    assert gen.send("hello") == "hello"
    assert next(gen) == "done"


async def test_async_generator_span_covers_the_iteration(server: RecordingServer) -> None:
    """A traced async generator's span parents the spans inside it and is not current in the consumer."""

    @shipper.traced(name="agen")
    async def stream() -> Any:
        for i in range(2):
            async with shipper.span(f"chunk {i}"):
                yield {"i": i}

    async with shipper.span("consumer") as consumer:
        items = []
        async for item in stream():
            items.append(item)
            assert shipper.current_span() is consumer
    spans = by_name(server.wait_for(4))
    assert spans["agen"]["parent_id"] == consumer.span_id
    assert spans["chunk 1"]["parent_id"] == spans["agen"]["span_id"]
    assert spans["agen"]["output"] == [{"i": 0}, {"i": 1}] == items


async def test_async_generator_exception_is_recorded(server: RecordingServer) -> None:
    """An exception inside a traced async generator marks its span error and reaches the consumer."""

    @shipper.traced(name="agen")
    async def broken() -> Any:
        yield 1
        raise LookupError("gone")

    with pytest.raises(LookupError):
        async for _ in broken():
            pass
    (record,) = server.wait_for(1)
    assert record["status"] == "error" and record["error"]["message"] == "gone"


def test_traced_thread_pool_runs_work_under_the_submitter(server: RecordingServer) -> None:
    """Work submitted to TracedThreadPoolExecutor nests under the submitting span; a plain pool does not."""

    @shipper.traced(name="work")
    def work(n: int) -> int:
        return threading.get_ident()

    with shipper.trace_context(user_id="u"), shipper.span("submit") as parent:
        with shipper.TracedThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(work, range(4)))
        with ThreadPoolExecutor(max_workers=1) as plain:
            plain.submit(work, 9).result()
    records = server.wait_for(6)
    traced = [r for r in records if r["name"] == "work" and r["input"]["n"] < 4]
    assert len(traced) == 4
    assert all(r["parent_id"] == parent.span_id and r["user_id"] == "u" for r in traced)
    (orphan,) = [r for r in records if r["name"] == "work" and r["input"]["n"] == 9]
    assert "parent_id" not in orphan and orphan["trace_id"] != parent.trace_id


def test_current_span_outside_any_span_is_a_no_op() -> None:
    """Outside spans current_span() gives a span that records nothing and accepts log() calls."""
    s = shipper.current_span()
    assert not s.is_recording()
    s.log(output="ignored", metadata={"a": 1})
    with shipper.span("root", parent=s) as root:  # the no-op span as a parent starts a new trace
        assert root.trace_id != "0" * 32


def test_unencodable_values_are_converted_not_lost(server: RecordingServer) -> None:
    """Objects JSON cannot hold become their repr; non-string keys and huge ints are kept as strings."""

    class Thing:
        def __repr__(self) -> str:
            return "<Thing>"

    with shipper.span("odd") as s:
        s.log(input={"obj": Thing(), 1: "int key", (1, 2): "tuple key"}, output=2**80)
    (record,) = server.wait_for(1)
    assert record["input"] == {"obj": "<Thing>", "1": "int key", "(1, 2)": "tuple key"}
    assert record["output"] == str(2**80)


def test_huge_string_values_are_capped_with_the_marker() -> None:
    """A string past max_value_bytes is cut to fit and marked with how many bytes were cut."""
    with capture(max_value_bytes=1024) as server:
        with shipper.span("big") as s:
            s.log(input="é" * 5000, output="small")
        (record,) = server.wait_for(1)
        check(record)
    assert record["output"] == "small"
    text = record["input"]
    assert len(text.encode()) <= 1024
    head, marker = text.split("…[truncated ")
    assert set(head) == {"é"} and marker == f"{10000 - len(head.encode())} bytes]"


def test_inject_extract_round_trip_continues_the_trace(server: RecordingServer) -> None:
    """inject() writes traceparent and baggage; a span with parent=extract() continues that trace."""
    fields = shipper.trace_context(session_id="s 1", user_id="u,1", tags=["x,y", "z"])
    with fields, shipper.span("client") as client:
        headers = shipper.inject({"baggage": "other=1"})
    assert headers["traceparent"] == f"00-{client.trace_id}-{client.span_id}-01"
    assert headers["baggage"].startswith("other=1,")
    remote = shipper.extract({"TraceParent": headers["traceparent"], "Baggage": headers["baggage"]})
    assert remote is not None and remote.trace_id == client.trace_id and remote.sampled
    with shipper.span("server", parent=remote):
        pass
    spans = by_name(server.wait_for(2))
    assert spans["server"]["trace_id"] == client.trace_id
    assert spans["server"]["parent_id"] == client.span_id
    assert (spans["server"]["session_id"], spans["server"]["user_id"]) == ("s 1", "u,1")
    assert spans["server"]["tags"] == ["x,y", "z"]


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ],
)
def test_extract_ignores_an_invalid_traceparent(traceparent: str) -> None:
    """A malformed, zero or unknown-format traceparent gives no parent, never an error."""
    assert shipper.extract({"traceparent": traceparent}) is None


def test_extract_accepts_a_future_version_and_no_header() -> None:
    """A higher version with extra fields is read (W3C); missing headers give None."""
    remote = shipper.extract({"traceparent": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"})
    assert remote is not None and not remote.sampled
    assert shipper.extract({}) is None


def test_traced_takes_a_name_and_wraps_classmethods(server: RecordingServer) -> None:
    """@traced("name") names the span; above @classmethod it traces the method, leaving `cls` out."""

    class Repo:
        @shipper.traced("repo.load")
        @classmethod
        def load(cls, key: str) -> str:
            return key.upper()

    assert Repo.load("k") == "K"
    (record,) = server.wait_for(1)
    assert record["name"] == "repo.load" and record["input"] == {"key": "k"} and record["output"] == "K"


def test_log_after_the_span_ended_is_ignored(server: RecordingServer) -> None:
    """A span's record is written once, when it ends; later log() calls change nothing."""
    with shipper.span("done") as s:
        s.log(output=1)
    s.log(output=2)
    assert not s.is_recording()
    (record,) = server.wait_for(1)
    assert record["output"] == 1


async def test_trace_context_follows_asyncio_tasks(server: RecordingServer) -> None:
    """Tasks created inside trace_context() keep its fields even after the block has been left."""

    async def later() -> None:
        await asyncio.sleep(0)
        with shipper.span("in task"):
            pass

    with shipper.trace_context(session_id="s-task"):
        task = asyncio.ensure_future(later())
    with shipper.span("outside"):
        pass
    await task
    spans = by_name(server.wait_for(2))
    assert spans["in task"]["session_id"] == "s-task"
    assert "session_id" not in spans["outside"]


def test_values_without_a_truth_value_are_recorded(server: RecordingServer) -> None:
    """Values that refuse == and bool() (numpy-array-like) pass through span(), log() and @traced intact."""

    class Ambiguous:
        def __eq__(self, other: object) -> bool:
            raise ValueError("ambiguous")

        def __bool__(self) -> bool:
            raise ValueError("ambiguous")

        __hash__ = object.__hash__

        def __repr__(self) -> str:
            return "Ambiguous()"

    @shipper.traced
    def identity(value: Any) -> Any:
        return value

    with shipper.span("a", input=Ambiguous(), output=Ambiguous()) as s:
        s.log(metadata={"v": Ambiguous()})
        identity(Ambiguous())
    spans = by_name(server.wait_for(2))
    assert spans["a"]["input"] == "Ambiguous()" and spans["a"]["metadata"] == {"v": "Ambiguous()"}
    traced = next(r for name, r in spans.items() if name.endswith("identity"))
    assert traced["input"] == {"value": "Ambiguous()"} and traced["output"] == "Ambiguous()"


def test_finished_spans_leave_no_cyclic_garbage(server: RecordingServer) -> None:
    """Spans and their trace state are freed by reference counting: no work for the cycle collector."""
    import gc

    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            with shipper.trace_context(session_id="s-1"), shipper.span("root", kind="chain") as root:
                root.log(input="q")
                with shipper.span("child", kind="llm"):
                    pass
        assert gc.collect() == 0
    finally:
        gc.enable()
    server.wait_for(400)
    assert by_name(server.records[-2:])["root"]["session_id"] == "s-1"
