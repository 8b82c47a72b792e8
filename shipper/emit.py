"""`shipper emit`: send an example trace through the client shim and say where it went."""

from __future__ import annotations

import shipper

__all__ = ["emit_example"]


def emit_example(service: str) -> int:
    """Five spans shaped like the classic example: two LLM calls, a tool and a failed agent under a root."""
    shipper.configure(service=service)
    before = shipper.statistics()
    with shipper.trace_context(session_id="session-42", user_id="user-123", tags=["capitals"]):
        with shipper.span("my_llm_application", kind="chain", otel_kind="server") as root:
            answers = []
            for question, answer, model in (("China", "Beijing", "gpt-4o-mini"), ("Japan", "Tokyo", "gpt-4o-mini")):
                with shipper.span("query_llm", kind="llm") as llm:
                    messages = [{"role": "user", "content": f"What's the capital of {question}?"}]
                    llm.log(input=messages, output=answer, llm={
                        "model": model, "provider": "openai", "operation": "chat",
                        "input_messages": messages, "output_messages": [{"role": "assistant", "content": answer}],
                        "usage": {"input_tokens": 18, "output_tokens": 2, "total_tokens": 20}, "cost_usd": 3.9e-06,
                    })
                answers.append(answer)
            with shipper.span("query_embedding", kind="tool") as tool:
                tool.log(input="What's the capital of China?", output=[0.1, 0.2, 0.3],
                         attributes={"tool.description": "Query embedding"})
            try:
                with shipper.span("query_agent", kind="agent", input="Who are you?"):
                    raise RuntimeError("429 Too Many Requests (an example failure)")
            except RuntimeError:
                pass
            root.log(output=answers, metadata={"org_id": "org-456"})
    from shipper.client import transport

    transport.active().confirm()  # the daemon's verdict on a new connection: sent, or spooled if refused
    after = shipper.statistics()
    sent = after["sent"] - before["sent"]
    spooled = after["spooled"] - before["spooled"]
    dropped = sum(after["dropped"].values()) - sum(before["dropped"].values())
    print(f"trace {root.trace_id}: 5 spans")
    if sent:
        print(f"  {sent} sent to the daemon on {after['socket_path']}")
    if spooled:
        print(f"  {spooled} written to the spool {after.get('spool_file') or after['spool_dir']} "
              "(the daemon was not reachable; it reads them when it runs)")
    if dropped:
        print(f"  {dropped} dropped: {after['dropped']}")
        return 1
    return 0
