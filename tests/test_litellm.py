"""ShipperCallback: real litellm calls (mock_response, no network) reach a daemon subprocess as llm spans."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price-list download

import asyncio
import uuid

import litellm
import pytest
from support import wait_records

import shipper
from shipper.integrations.litellm import ShipperCallback, aflush, install, trace_id_of
from shipper.record import validate

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def callback():
    """litellm.callbacks holds one ShipperCallback during each test."""
    saved = list(litellm.callbacks)
    litellm.callbacks = []
    handler = install()
    yield handler
    litellm.callbacks = saved


def _one(daemon, **match):
    (record,) = wait_records(daemon, 1, **match)
    return validate(record)


def test_success_records_model_messages_usage_cost_and_langfuse_metadata(shipped_daemon) -> None:
    """A completion gives one llm span with every field, and the Langfuse callback's metadata keys."""
    trace = str(uuid.uuid4())
    response = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="hello there", temperature=0.2,
        metadata={"trace_id": trace, "trace_name": "greeting", "session_id": "s-lite", "trace_user_id": "u-lite",
                  "tags": ["a", "b"], "generation_name": "say-hello", "team": "search"})
    record = _one(shipped_daemon, trace_id=trace.replace("-", ""))
    assert record["name"] == "say-hello" and record["kind"] == "llm" and record["otel_kind"] == "client"
    assert record["status"] == "ok" and "parent_id" not in record
    assert (record["session_id"], record["user_id"], record["tags"]) == ("s-lite", "u-lite", ["a", "b"])
    assert record["metadata"]["trace_name"] == "greeting" and record["metadata"]["team"] == "search"
    assert record["metadata"]["trace_id"] == trace and record["metadata"]["litellm_call_id"]
    assert "hidden_params" not in record["metadata"]
    llm = record["llm"]
    assert (llm["model"], llm["provider"], llm["operation"]) == ("gpt-4o-mini", "openai", "chat")
    assert llm["params"] == {"temperature": 0.2}
    assert llm["input_messages"] == MESSAGES
    assert llm["output_messages"] == [{"role": "assistant", "content": "hello there", "finish_reason": "stop"}]
    assert llm["usage"] == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    assert llm["cost_usd"] == pytest.approx(1.35e-05)
    assert llm["response_model"] == response.model
    assert "time_to_first_token_ns" not in llm
    assert record["input"] == MESSAGES and record["output"] == "hello there"
    assert 0 < record["end_ns"] - record["start_ns"] < 60e9


def test_call_user_is_the_user_unless_the_trace_names_one(shipped_daemon) -> None:
    """litellm's `user=` becomes user_id (sync, stream and failure alike); a trace's own user wins."""
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="a", user="end-user-1",
                       metadata={"session_id": "s-user"})
    stream = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="b", user="end-user-1",
                                stream=True, metadata={"session_id": "s-user"})
    for _ in stream:
        pass
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError",
                           user="end-user-1", metadata={"session_id": "s-user"})
    with shipper.trace_context(session_id="s-user-traced", user_id="trace-user"):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="c", user="end-user-2")
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="d", user="end-user-3",
                       metadata={"session_id": "s-user-meta", "trace_user_id": "meta-user"})
    records = wait_records(shipped_daemon, 3, session_id="s-user")
    assert sorted(r["status"] for r in records) == ["error", "ok", "ok"]
    assert all(r["user_id"] == "end-user-1" and r["input"] == MESSAGES for r in records)
    assert _one(shipped_daemon, session_id="s-user-traced")["user_id"] == "trace-user"
    assert _one(shipped_daemon, session_id="s-user-meta")["user_id"] == "meta-user"


def test_stream_records_time_to_first_token(shipped_daemon) -> None:
    """A streamed completion is one span, after the stream ends, with the whole answer and time to first token."""
    stream = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="streamed words here",
                                stream=True, metadata={"session_id": "s-stream"})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    record = _one(shipped_daemon, session_id="s-stream")
    assert record["output"] == text == "streamed words here"
    ttft = record["llm"]["time_to_first_token_ns"]
    assert 0 <= ttft <= record["end_ns"] - record["start_ns"]
    assert record["name"] == "litellm.completion"


def test_failure_records_the_error_and_the_app_still_gets_it(shipped_daemon) -> None:
    """mock_response="litellm.RateLimitError": the app gets the exception; the span has status error and it."""
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError",
                           metadata={"session_id": "s-fail"})
    record = _one(shipped_daemon, session_id="s-fail")
    assert record["status"] == "error" and "output" not in record
    assert record["error"]["type"].endswith("RateLimitError")
    assert "mock rate limit error" in record["error"]["message"]
    assert record["error"]["stack"]
    assert record["llm"]["input_messages"] == MESSAGES and "usage" not in record["llm"]


def test_traced_function_with_two_calls_is_one_trace_with_two_children(shipped_daemon) -> None:
    """Two litellm calls inside a @traced function nest under its span: one trace, two children."""

    @shipper.traced(name="ask", kind="chain")
    def ask() -> None:
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="one")
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="two")

    with shipper.trace_context(session_id="s-nested", user_id="u-nested", tags=["outer"]):
        with shipper.span("root", kind="chain") as root:
            ask()
    records = wait_records(shipped_daemon, 4, trace_id=root.trace_id)
    ask_span = next(r for r in records if r["name"] == "ask")
    calls = [r for r in records if r["kind"] == "llm"]
    assert ask_span["parent_id"] == root.span_id
    assert sorted(r["output"] for r in calls) == ["one", "two"]
    assert all(r["parent_id"] == ask_span["span_id"] for r in calls)
    assert all((r["session_id"], r["user_id"], r["tags"]) == ("s-nested", "u-nested", ["outer"]) for r in calls)


def test_async_calls_nest_and_fail_like_sync_ones(shipped_daemon) -> None:
    """acompletion (success, stream, failure) inside an async shipper span: three children of it."""

    async def main() -> str:
        async with shipper.span("async-root", kind="chain") as root:
            await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="async one")
            stream = await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="async two",
                                               stream=True)
            async for _ in stream:
                pass
            with pytest.raises(litellm.RateLimitError):
                await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES,
                                          mock_response="litellm.RateLimitError")
        await aflush()
        return root.span_id

    root_id = asyncio.run(main())
    records = wait_records(shipped_daemon, 3, parent_id=root_id)
    assert sorted(r["status"] for r in records) == ["error", "ok", "ok"]
    assert sorted(r.get("output", "") for r in records) == ["", "async one", "async two"]
    assert all(r["name"] == "litellm.acompletion" for r in records)


def test_same_trace_id_text_groups_calls_into_one_trace(shipped_daemon) -> None:
    """Calls given the same non-hex `trace_id` share one trace (the text is hashed into a W3C id)."""
    for answer in ("x", "y"):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=answer,
                           metadata={"trace_id": "conversation-42"})
    records = wait_records(shipped_daemon, 2, trace_id=trace_id_of("conversation-42"))
    assert sorted(r["output"] for r in records) == ["x", "y"]


def test_embedding_records_its_input_texts_not_the_vectors(shipped_daemon) -> None:
    """An embedding call is an `embedding` span whose input is the texts; the vectors are not recorded."""
    litellm.embedding(model="text-embedding-3-small", input=["alpha", "beta"], mock_response=[0.1, 0.2],
                      metadata={"session_id": "s-embed"})
    record = _one(shipped_daemon, session_id="s-embed")
    assert record["kind"] == "embedding" and record["llm"]["operation"] == "embeddings"
    assert record["input"] == ["alpha", "beta"] and "input_messages" not in record["llm"]
    assert "output" not in record and record["llm"]["model"] == "text-embedding-3-small"


def test_install_registers_once() -> None:
    """install() adds one ShipperCallback to litellm.callbacks and returns the existing one afterwards."""
    first = install()
    assert install() is first
    assert sum(isinstance(c, ShipperCallback) for c in litellm.callbacks) == 1


def test_trace_ids_from_metadata() -> None:
    """32-hex and UUID trace ids are kept, other text is hashed to 32 hex, empty gives None."""
    assert trace_id_of("AB" * 16) == "ab" * 16
    assert trace_id_of("12345678-1234-5678-1234-567812345678") == "12345678123456781234567812345678"
    assert len(trace_id_of("anything")) == 32 and trace_id_of("anything") == trace_id_of("anything")
    assert trace_id_of("") is None and trace_id_of(None) is None
