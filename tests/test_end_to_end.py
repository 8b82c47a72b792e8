"""The first working path, whole: an app traced with the shim → socket or spool → daemon → file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from support import wait_for

APP = textwrap.dedent('''
    import asyncio, os, sys
    import shipper

    @shipper.traced(kind="tool")
    def lookup(city):
        return {"city": city}

    @shipper.traced(kind="agent")
    async def agent():
        raise ValueError("the agent failed")

    async def main():
        with shipper.trace_context(session_id="s-1", user_id="u-1", tags=["e2e"], project="proj"):
            with shipper.span("root", kind="chain") as root:
                lookup("Paris")
                with shipper.span("ask", kind="llm") as llm:
                    llm.log(llm={"model": "gpt-4o-mini", "usage": {"input_tokens": 3, "output_tokens": 1}})
                try:
                    await agent()
                except ValueError:
                    pass
                pid = os.fork()
                if pid == 0:
                    with shipper.span("in_child"):
                        pass
                    os._exit(0)
                os.waitpid(pid, 0)
        print(root.trace_id, root.span_id, os.getpid(), pid)
        print(shipper.statistics())

    asyncio.run(main())
''')


def run_app(daemon) -> tuple[str, str, int, int]:
    out = subprocess.run([sys.executable, "-c", APP], capture_output=True, text=True, env=daemon.env, timeout=60)
    assert out.returncode == 0, out.stderr
    trace_id, root_id, pid, child = out.stdout.split("\n")[0].split()
    return trace_id, root_id, int(pid), int(child)


def check_trace(records: list[dict], trace_id: str, root_id: str, pid: int, child: int) -> None:
    by_name = {r["name"]: r for r in records if r["trace_id"] == trace_id}
    assert set(by_name) == {"root", "lookup", "ask", "agent", "in_child"}
    assert by_name["root"].get("parent_id") is None and by_name["root"]["span_id"] == root_id
    for name in ("lookup", "ask", "agent", "in_child"):
        assert by_name[name]["parent_id"] == root_id
    assert by_name["agent"]["status"] == "error"
    assert by_name["agent"]["error"]["message"] == "the agent failed"
    assert by_name["lookup"]["output"] == {"city": "Paris"}
    assert all(r["session_id"] == "s-1" and r["user_id"] == "u-1" and r["tags"] == ["e2e"] and r["project"] == "proj"
               for r in by_name.values())
    assert by_name["in_child"]["resource"]["process.pid"] == child
    assert by_name["root"]["resource"]["process.pid"] == pid


def test_traced_app_reaches_the_file_through_the_socket(daemon_factory) -> None:
    """Root, children, an error and a forked child's span land with ids, parents and pids intact."""
    daemon = daemon_factory().start()
    trace_id, root_id, pid, child = run_app(daemon)
    wait_for(lambda: len(daemon.records()) == 5, message="5 spans")
    check_trace(daemon.records(), trace_id, root_id, pid, child)
    assert not os.listdir(daemon.spool) if os.path.exists(daemon.spool) else True
    assert daemon.stop() == 0


def test_spans_spooled_while_daemon_down_arrive_when_it_starts(daemon_factory) -> None:
    """With no daemon the shim spools; the daemon started later delivers the trace and empties the spool."""
    daemon = daemon_factory()
    trace_id, root_id, pid, child = run_app(daemon)
    spooled = os.listdir(daemon.spool)
    assert len(spooled) == 2, spooled  # parent's file and the forked child's own
    daemon.start()
    wait_for(lambda: len(daemon.records()) == 5, message="5 spans from the spool")
    check_trace(daemon.records(), trace_id, root_id, pid, child)
    wait_for(lambda: not os.listdir(daemon.spool), message="the spool to be emptied")
    assert daemon.stop() == 0


def test_emit_command_says_where_spans_went(daemon_factory) -> None:
    """`shipper emit` sends the example trace and says so; without a daemon it says it spooled."""
    daemon = daemon_factory()
    down = subprocess.run([sys.executable, "-m", "shipper", "emit"], capture_output=True, text=True, env=daemon.env)
    assert down.returncode == 0 and "5 written to the spool" in down.stdout
    daemon.start()
    up = subprocess.run([sys.executable, "-m", "shipper", "emit"], capture_output=True, text=True, env=daemon.env)
    assert up.returncode == 0 and f"5 sent to the daemon on {daemon.socket}" in up.stdout
    wait_for(lambda: len(daemon.records()) == 10, message="both example traces")
    assert daemon.stop() == 0


def test_embedded_default_masks_secrets_and_caps_values(daemon_factory) -> None:
    """`shipper run` with no -c: paths from the environment, secrets masked, huge values cut and marked."""
    daemon = daemon_factory("embedded").start()
    app = textwrap.dedent('''
        import shipper
        shipper.configure(max_value_bytes=10_000_000)
        with shipper.span("call", kind="llm") as s:
            s.log(input="key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789 " + "x" * 200_000)
        print(shipper.statistics())
    ''')
    out = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, env=daemon.env, timeout=60)
    assert out.returncode == 0, out.stderr
    (record,) = wait_for(daemon.records, message="the span")
    assert "sk-proj-abcdefghij" not in record["input"] and "[REDACTED:" in record["input"]
    assert record["input"].endswith("bytes]") and "…[truncated " in record["input"]
    assert len(record["input"].encode()) <= 64 * 1024
    assert daemon.stop() == 0


def test_readme_tracing_example_runs_and_arrives(daemon_factory) -> None:
    """The README's ten-line example, run as written, gives one trace: a chain root and its llm child."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"## Tracing an app\n\n```python\n(.*?)```", readme, re.S).group(1)
    daemon = daemon_factory().start()
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, env=daemon.env, timeout=60)
    assert out.returncode == 0, out.stderr
    records = wait_for(lambda: len(daemon.records()) == 2 and daemon.records(), message="the example's two spans")
    child, root = records
    assert (root["name"], root["kind"], child["name"], child["kind"]) == ("my_llm_application", "chain",
                                                                         "query_llm", "llm")
    assert child["parent_id"] == root["span_id"] and child["trace_id"] == root["trace_id"]
    assert root["session_id"] == "session-42" and root["metadata"] == {"org_id": "org-456"}
    assert child["output"] == "Beijing" and root["service"] == "hinbox"
    assert daemon.stop() == 0
