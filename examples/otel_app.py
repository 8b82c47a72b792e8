"""An app instrumented with OpenTelemetry and OpenInference, shipping through shipper with one line.

`shipper.otel.install()` sets up a TracerProvider whose spans go to the local daemon (no network in the
app, nothing to flush). The OpenInference litellm instrumentor adds an `llm` span per call; litellm's
`mock_response` keeps the example offline. Run with the daemon up: python examples/otel_app.py
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price-list download

import litellm
from openinference.instrumentation import using_attributes
from openinference.instrumentation.litellm import LiteLLMInstrumentor

import shipper.otel

provider = shipper.otel.install(service="otel-example")
LiteLLMInstrumentor().instrument(tracer_provider=provider)
tracer = provider.get_tracer("examples.otel_app")


def main() -> str:
    with using_attributes(session_id="otel-session", user_id="otel-user", tags=["otel-example"]):
        with tracer.start_as_current_span("handle_question", attributes={"openinference.span.kind": "CHAIN",
                                                                         "input.value": "say hello"}) as span:
            response = litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "say hello"}],
                                          mock_response="hello from a mock")
            span.set_attribute("output.value", response.choices[0].message.content)
            return format(span.get_span_context().trace_id, "032x")


if __name__ == "__main__":
    print(f"trace_id={main()}")
