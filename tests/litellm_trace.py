"""One real litellm trace (mock_response, no network) through ShipperCallback, for the backend mapping tests.

The trace: a `chain` root with trace metadata, and under it a completion with `user=` and call
metadata, a `tool` span with a description, and a completion on a local model whose cost is 0.0.
The records are what the shim put on a real Unix socket (`shipper.client.testing.capture`).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price-list download

from dataclasses import dataclass
from typing import Any

import litellm

import shipper
from shipper.client.testing import capture
from shipper.integrations.litellm import ShipperCallback
from shipper.record import validate

QUESTION = [{"role": "user", "content": "What's the capital of France? One word."}]
FOLLOW_UP = [{"role": "user", "content": "Is it free to visit? Yes or no."}]
TOOL_INPUT = {"city": "Paris"}
TOOL_OUTPUT = {"population": 2102650}
TOOL_DESCRIPTION = "Looks a city up in the gazetteer"
END_USER = "end-user-7"


@dataclass
class LitellmTrace:
    """The four records of the trace, by role."""

    root: dict[str, Any]
    paid: dict[str, Any]
    tool: dict[str, Any]
    free: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [self.root, self.paid, self.tool, self.free]


def make_trace(project: str | None = None) -> LitellmTrace:
    """Run the trace through litellm and ShipperCallback; return its records as the socket got them."""
    saved = list(litellm.callbacks)
    litellm.callbacks = [ShipperCallback()]
    wide: dict[str, Any] = {"session_id": "s-mapping", "tags": ["mapping"]}
    if project:
        wide["project"] = project
    try:
        with capture() as server:
            with shipper.span("answer", kind="chain", input="Tell me about Paris",
                              metadata={"release": "2026.12"}, **wide) as root:
                litellm.completion(model="gpt-4o-mini", messages=QUESTION, mock_response="Paris",
                                   user=END_USER, temperature=0.2,
                                   metadata={"generation_name": "capital", "prompt_version": "v3"})
                with shipper.span("gazetteer", kind="tool", input=TOOL_INPUT,
                                  attributes={"tool.description": TOOL_DESCRIPTION}) as tool:
                    tool.log(output=TOOL_OUTPUT)
                litellm.completion(model="ollama/llama3", messages=FOLLOW_UP, mock_response="Yes",
                                   metadata={"generation_name": "free-answer", "prompt_version": "v4"})
                root.log(output="Paris; free to visit")
            records = [validate(r) for r in server.wait_for(4, timeout=20)]
    finally:
        litellm.callbacks = saved
    by_name = {r["name"]: r for r in records}
    return LitellmTrace(root=by_name["answer"], paid=by_name["capital"], tool=by_name["gazetteer"],
                        free=by_name["free-answer"])
