"""litellm's callback: one `llm` span per call, nested under your own spans, with Langfuse-style metadata.

litellm's `mock_response` keeps the example offline (no API key, no network); drop it to call a model.
Run with the daemon up (`shipper run`): python examples/litellm_callback.py
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price-list download

import litellm

import shipper
from shipper.integrations.litellm import ShipperCallback, aflush

litellm.callbacks = [ShipperCallback()]
MESSAGES = [{"role": "user", "content": "Name a colour."}]


@shipper.traced(kind="chain")
def ask_twice() -> None:
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Blue.",
                       metadata={"generation_name": "first-answer", "session_id": "litellm-session",
                                 "trace_user_id": "litellm-user", "tags": ["litellm-example"]})
    stream = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Green, probably.",
                                stream=True, metadata={"generation_name": "streamed-answer"})
    for _ in stream:
        pass
    try:
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError",
                           metadata={"generation_name": "rate-limited"})
    except litellm.RateLimitError:
        pass  # recorded as a failed llm span


@shipper.traced(kind="chain")
async def ask_async() -> None:
    await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Red.",
                              metadata={"generation_name": "async-answer"})


async def main() -> str:
    async with shipper.span("litellm-example", kind="chain") as root:
        await asyncio.to_thread(ask_twice)
        await ask_async()
    await aflush()  # litellm runs async callbacks after the call returns: let them run before the loop ends
    return root.trace_id


if __name__ == "__main__":
    print(f"trace_id={asyncio.run(main())}")
