"""The public client API: its exact names, a light import, and configure()'s checks and sources."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import shipper
from shipper.client import transport
from shipper.client.config import default_service, load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_transport() -> Iterator[None]:
    """Each test starts and ends without an active transport."""
    transport.shutdown()
    yield
    transport.shutdown()


def test_all_is_exact_and_sorted() -> None:
    """shipper.__all__ lists the public API, sorted, and every name in it exists."""
    assert shipper.__all__ == sorted(shipper.__all__)
    assert set(shipper.__all__) == {
        "Span", "TracedThreadPoolExecutor", "configure", "current_span", "extract", "flush", "inject",
        "span", "statistics", "trace_context", "traced",
    }
    assert all(hasattr(shipper, name) for name in shipper.__all__)


def test_import_shipper_pulls_in_no_daemon_dependency() -> None:
    """`import shipper` in a fresh interpreter loads none of anyio, httpx, yaml, opentelemetry, tenacity."""
    heavy = ["anyio", "httpx", "yaml", "opentelemetry", "tenacity", "asyncio"]
    code = (
        "import sys, shipper\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_configure_collects_every_bad_argument() -> None:
    """Bad arguments raise one ValueError naming each key and what was expected."""
    with pytest.raises(ValueError) as raised:
        shipper.configure(mode="fast", max_value_bytes=0, socket="/tmp/" + "s" * 120, capture_input="yes")
    message = str(raised.value)
    for key in ("mode: expected one of auto, socket, spool", "max_value_bytes:", "socket:", "capture_input:"):
        assert key in message


def test_configure_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHIPPER_* variables fill in what configure() is not given; arguments win over them."""
    monkeypatch.setenv("SHIPPER_SERVICE", "from-env")
    monkeypatch.setenv("SHIPPER_SOCKET", "/tmp/env.sock")
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", "/tmp/env-spool")
    monkeypatch.setenv("SHIPPER_MODE", "SPOOL")
    monkeypatch.setenv("SHIPPER_DISABLED", "yes")
    settings = shipper.configure(spool_dir="/tmp/arg-spool")
    assert (settings.service, settings.socket_path) == ("from-env", "/tmp/env.sock")
    assert settings.spool_dir == "/tmp/arg-spool"
    assert settings.mode == "spool" and settings.disabled is True


def test_bad_environment_warns_and_falls_back_on_the_first_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad SHIPPER_* value never breaks the app: the lazy start warns and uses the default."""
    monkeypatch.setenv("SHIPPER_MODE", "sideways")
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", "/dev/null/spool")
    monkeypatch.setenv("SHIPPER_SOCKET", "/tmp/nobody-listens-here.sock")
    with pytest.warns(RuntimeWarning, match="SHIPPER_MODE|mode"), shipper.span("s"):
        pass
    assert shipper.statistics()["mode"] == "auto"


def test_configure_strict_on_the_same_bad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bad variable makes configure() raise: it is the app's own setup call."""
    monkeypatch.setenv("SHIPPER_DISABLED", "perhaps")
    with pytest.raises(ValueError, match="disabled"):
        shipper.configure()


def test_zero_configuration_uses_resolved_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without configure() or variables the shim resolves the shared default paths."""
    for name in ("SHIPPER_SOCKET", "SHIPPER_SPOOL_DIR", "SHIPPER_SERVICE", "SHIPPER_MODE",
                 "SHIPPER_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(strict=False)
    from shipper.client.paths import resolve_socket_path, resolve_spool_dir

    assert (settings.socket_path, settings.spool_dir) == (resolve_socket_path(), resolve_spool_dir())
    assert settings.service == default_service()


def test_default_service_is_the_script_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service defaults to the script's name without .py, or "python" for -c and -m runs."""
    monkeypatch.setattr(sys, "argv", ["/srv/app/answer_bot.py"])
    assert default_service() == "answer_bot"
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert default_service() == "python"
    monkeypatch.setattr(sys, "argv", [])
    assert default_service() == "python"


def test_flush_is_a_harmless_no_op() -> None:
    """flush() returns at once: records are already on the socket or in the spool when spans end."""
    assert shipper.flush() is None
