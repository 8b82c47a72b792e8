"""Two LLM calls grouped under one trace: a traced function whose two steps are `llm` spans.

Run with the daemon up (`shipper run`): python examples/two_llm_calls.py
"""

from __future__ import annotations

import shipper


def fake_llm(prompt: str) -> tuple[str, dict[str, int]]:
    """Stands in for a model call, so the example needs no network and no API key."""
    answer = prompt.upper()
    return answer, {"input_tokens": len(prompt.split()), "output_tokens": len(answer.split())}


def call_llm(name: str, prompt: str) -> str:
    with shipper.span(name, kind="llm") as s:
        answer, usage = fake_llm(prompt)
        s.log(llm={"model": "fake-1", "provider": "example", "operation": "chat",
                   "input_messages": [{"role": "user", "content": prompt}],
                   "output_messages": [{"role": "assistant", "content": answer}],
                   "usage": {**usage, "total_tokens": sum(usage.values())}, "cost_usd": 0.0},
              output=answer)
        return answer


@shipper.traced(kind="chain")
def answer(question: str) -> str:
    draft = call_llm("draft", f"answer briefly: {question}")
    return call_llm("polish", f"polish: {draft}")


if __name__ == "__main__":
    with shipper.trace_context(session_id="example-session", user_id="example-user", tags=["example"]):
        with shipper.span("request", kind="chain") as root:
            answer("what does shipper do?")
    print(f"trace_id={root.trace_id}")
