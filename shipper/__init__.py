"""shipper: a local trace shipper for Python LLM apps; this package's top level is the client API.

`import shipper` stays light: the standard library and orjson when installed, nothing of the daemon's.

    import shipper

    @shipper.traced(kind="tool")
    def search(query: str) -> list[str]: ...

    with shipper.trace_context(session_id="s-42", user_id="u-7"):
        with shipper.span("answer", kind="chain") as s:
            s.log(input=question, output=search(question))

Spans go to the local daemon's socket, or to the spool directory when it cannot take them; see
`shipper.statistics()` for what happened to them.
"""

from __future__ import annotations

from .client.context import trace_context
from .client.executor import TracedThreadPoolExecutor
from .client.propagation import extract, inject
from .client.span import Span, current_span, span
from .client.traced import traced
from .client.transport import configure, flush, statistics

__all__ = [
    "Span",
    "TracedThreadPoolExecutor",
    "configure",
    "current_span",
    "extract",
    "flush",
    "inject",
    "span",
    "statistics",
    "trace_context",
    "traced",
]
