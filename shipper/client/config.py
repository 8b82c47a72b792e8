"""Client settings: defaults, environment variables and validation, in one place."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Any

from .paths import resolve_socket_path, resolve_spool_dir

__all__ = ["MODES", "Settings", "load_settings"]

MODES = ("auto", "socket", "spool")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_AF_UNIX_PATH_MAX = 107


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the shim needs to know, validated once; the per-span path reads it and never checks it."""

    service: str
    socket_path: str
    spool_dir: str
    mode: str = "auto"  # auto: socket, else spool; socket: socket, else drop; spool: always spool
    disabled: bool = False  # send and spool nothing (counted as dropped `disabled`); spans still nest
    capture_input: bool = True  # @traced records the bound arguments as `input`
    capture_output: bool = True  # @traced records the return value (or the yielded items) as `output`
    max_value_bytes: int = 64 * 1024  # a longer string value is cut and marked `…[truncated N bytes]`
    max_message_bytes: int = 1024 * 1024  # a larger record skips the socket and goes to the spool
    spool_max_bytes: int = 64 * 1024 * 1024  # a spool file is rotated past this size


def default_service() -> str:
    """The script's name (`app` for `python app.py`), else "python"."""
    argv0 = sys.argv[0] if getattr(sys, "argv", None) else ""
    name = os.path.basename(argv0)
    if name.endswith(".py"):
        name = name[:-3]
    return "python" if name in ("", "-c", "-m", "__main__") else name


def _env_bool(raw: str) -> bool | str:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return raw  # not a bool: reported by the check below


def _text(value: Any) -> str | None:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return value if isinstance(value, str) and value else None


def _problem(key: str, value: Any) -> str | None:
    """What is wrong with one setting, or None."""
    if key in ("service", "spool_dir"):
        return None if _text(value) else f"expected a non-empty string, got {value!r}"
    if key == "socket_path":
        if not _text(value):
            return f"expected a non-empty string, got {value!r}"
        size = len(os.fsencode(value))
        return None if size <= _AF_UNIX_PATH_MAX else (
            f"{value!r} is {size} bytes but AF_UNIX allows {_AF_UNIX_PATH_MAX}: choose a shorter path"
        )
    if key == "mode":
        return None if value in MODES else f"expected one of {', '.join(MODES)}, got {value!r}"
    if key in ("disabled", "capture_input", "capture_output"):
        return None if isinstance(value, bool) else f"expected True or False (1/0/true/false), got {value!r}"
    if key in ("max_value_bytes", "max_message_bytes", "spool_max_bytes"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return None if ok else f"expected a positive number of bytes, got {value!r}"
    return "unknown setting"


def load_settings(strict: bool = True, **overrides: Any) -> Settings:
    """Settings from keyword overrides (None = not given), then `SHIPPER_*` variables, then defaults.

    With `strict` (configure()), every problem is collected and raised as one ValueError, a line per
    key. Without it (the lazy start on the first span), a bad value falls back to its default with a
    warning: a tracing shim must not break the app it observes.
    """
    env = os.environ
    required = {
        "service": env.get("SHIPPER_SERVICE") or default_service(),
        "socket_path": resolve_socket_path(),
        "spool_dir": resolve_spool_dir(),
    }
    raw: dict[str, Any] = dict(required)
    if env.get("SHIPPER_MODE"):
        raw["mode"] = env["SHIPPER_MODE"].strip().lower()
    if "SHIPPER_DISABLED" in env:
        raw["disabled"] = _env_bool(env["SHIPPER_DISABLED"])
    renamed = {"socket": "socket_path"}
    raw.update({renamed.get(k, k): v for k, v in overrides.items() if v is not None})

    errors = []
    for key, value in list(raw.items()):
        problem = _problem(key, value)
        if problem is None:
            raw[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
            continue
        errors.append(f"{'socket' if key == 'socket_path' else key}: {problem}")
        if key in required:  # the resolved default, even if connecting to it will then fail
            raw[key] = required[key]
        else:
            del raw[key]
    if errors:
        listing = "\n  ".join(errors)
        if strict:
            raise ValueError(f"shipper.configure(): invalid settings (arguments or SHIPPER_*):\n  {listing}")
        message = f"shipper: invalid SHIPPER_* settings, defaults used instead:\n  {listing}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return Settings(**raw)
