"""A trace across two processes: the parent passes W3C `traceparent`/`baggage` headers to a child process.

The same two calls (`shipper.inject(headers)` before sending, `shipper.extract(headers)` on receipt) carry
a trace over HTTP or a queue. Run with the daemon up (`shipper run`): python examples/two_processes.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import shipper


def child(headers: dict[str, str]) -> None:
    with shipper.span("child-work", kind="task", parent=shipper.extract(headers)) as s:
        s.log(output=f"done in pid {os.getpid()}")


def parent() -> str:
    with shipper.trace_context(session_id="two-process-session", user_id="two-process-user"):
        with shipper.span("parent-work", kind="chain") as root:
            headers = shipper.inject({})
            subprocess.run([sys.executable, __file__, "--child", json.dumps(headers)], check=True)
    return root.trace_id


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]))
    else:
        print(f"trace_id={parent()}")
