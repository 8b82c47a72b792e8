"""Chain, agent, tool and retriever spans: an agent that retrieves, calls a tool, and answers.

Run with the daemon up (`shipper run`): python examples/kinds.py
"""

from __future__ import annotations

import shipper


@shipper.traced(kind="retriever")
def retrieve(query: str) -> list[str]:
    return [f"doc about {query}", "another doc"]


@shipper.traced(kind="tool")
def calculator(expression: str) -> int:
    a, _, b = expression.partition("+")
    return int(a) + int(b)


@shipper.traced(kind="llm")
def decide(question: str, documents: list[str]) -> str:
    return "calculator" if "+" in question else "answer"


@shipper.traced(kind="agent")
def agent(question: str) -> str:
    documents = retrieve(question)
    if decide(question, documents) == "calculator":
        return str(calculator(question.rsplit(maxsplit=1)[-1]))
    return documents[0]


@shipper.traced(kind="chain")
def pipeline(question: str) -> str:
    return agent(question)


if __name__ == "__main__":
    with shipper.span("kinds-example", kind="chain") as root:
        pipeline("what is 2+3")
    print(f"trace_id={root.trace_id}")
