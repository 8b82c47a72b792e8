"""The app-side install: a fresh virtualenv with `pip install shipper` (the base distribution) holds the shim
and orjson only, emits spans to a daemon, and `shipper run` there names the extra it needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import Daemon, wait_records

REPO = Path(__file__).resolve().parents[1]
APP = """
import sys, shipper
shipper.configure(service="small-app")
with shipper.span("app-root", kind="chain") as root:
    with shipper.span("app-llm", kind="llm") as llm:
        llm.log(input="hi", output="hello", llm={"model": "m"})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               {"anyio", "yaml", "httpx", "tenacity", "opentelemetry", "google", "prometheus_client", "h11"})
from shipper.schema import record_schema  # the record's JSON Schema ships in the installed package
assert record_schema()["title"] == "shipper span record, version 1"
print(root.trace_id, shipper.statistics()["sent"], ",".join(heavy) or "-")
"""


@pytest.fixture(scope="module")
def app_venv():
    """A fresh virtualenv with this checkout installed as an app installs it: `pip install .`, no extras."""
    root = Path(tempfile.mkdtemp(prefix="shp-app-", dir="/tmp"))
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "benchmarks", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
                   check=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    yield python
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_app_install_holds_only_the_shim_and_orjson(app_venv: Path) -> None:
    """`importlib.metadata` of the app's venv lists shipper and orjson, besides what venv itself ships."""
    code = ("import importlib.metadata as m, json\n"
            "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))\n")
    names = set(__import__("json").loads(subprocess.run([str(app_venv), "-c", code], capture_output=True,
                                                         text=True, check=True, timeout=60).stdout))
    assert names - {"pip", "setuptools", "wheel"} == {"shipper", "orjson"}


@pytest.mark.slow
def test_app_install_emits_spans_to_a_daemon(app_venv: Path, daemon_factory) -> None:
    """The shim in the small venv sends to a daemon (run from the full install) without importing any daemon
    dependency, and reads the record schema from its installed package; the daemon writes both spans."""
    daemon: Daemon = daemon_factory().start()
    env = {"PATH": "/usr/bin:/bin", "SHIPPER_SOCKET": daemon.socket, "SHIPPER_SPOOL_DIR": daemon.spool}
    out = subprocess.run([str(app_venv), "-c", APP], capture_output=True, text=True, check=True, timeout=60,
                         env=env, cwd="/tmp").stdout.split()
    trace_id, sent, heavy = out
    assert sent == "2" and heavy == "-"
    records = wait_records(daemon, 2, trace_id=trace_id)
    assert {r["name"] for r in records} == {"app-root", "app-llm"}
    assert all(r["service"] == "small-app" for r in records)


@pytest.mark.slow
def test_shipper_run_in_the_app_install_names_the_daemon_extra(app_venv: Path) -> None:
    """`shipper run` where only the shim is installed exits 1 saying to install shipper[daemon]."""
    done = subprocess.run([str(app_venv.parent / "shipper"), "run"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, cwd="/tmp")
    assert done.returncode == 1
    assert "pip install 'shipper[daemon]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_shipper_emit_in_the_app_install_reaches_the_daemon_and_waits(app_venv: Path, daemon_factory) -> None:
    """`shipper emit` where only the shim is installed asks the daemon on the shim's socket where the spans go,
    sends them and waits until they are delivered (no config loader there, so it reads nothing but the answer)."""
    daemon: Daemon = daemon_factory().start()
    env = {"PATH": "/usr/bin:/bin", "SHIPPER_SOCKET": daemon.socket, "SHIPPER_SPOOL_DIR": daemon.spool}
    done = subprocess.run([str(app_venv.parent / "shipper"), "emit", "--service", "app-side"], capture_output=True,
                          text=True, timeout=60, env=env, cwd="/tmp")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "delivered" in done.stdout and "Traceback" not in done.stderr
    assert len(wait_records(daemon, 5, service="app-side")) == 5
