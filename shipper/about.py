"""What `shipper --version` says: the installed version, the Python running it, where the config is read from."""

from __future__ import annotations

import functools
import os
import platform
import sys

__all__ = ["config_location", "describe", "version"]


@functools.cache
def version() -> str:
    """The installed distribution's version (importlib.metadata), or `unknown` in a bare checkout; read
    once (every `status` answer carries it)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("shipper")
    except PackageNotFoundError:
        return "unknown (not installed)"


def config_location(explicit: str | None = None) -> str:
    """Where `shipper run` would read its config: -c FILE, else $SHIPPER_CONFIG, else the embedded default."""
    if explicit:
        return f"{explicit} (from -c)"
    env = os.environ.get("SHIPPER_CONFIG")
    if env:
        exists = "" if os.path.exists(env) else "; the file does not exist"
        return f"{env} (from $SHIPPER_CONFIG{exists})"
    from shipper.config import DEFAULT_CONFIG_NAME

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG_NAME)
    return f"the embedded default ({path}; set $SHIPPER_CONFIG or pass -c FILE to use another)"


def describe() -> str:
    """The lines of `shipper --version`."""
    return "\n".join([
        f"shipper {version()}",
        f"Python {platform.python_version()} ({sys.executable})",
        f"config: {config_location()}",
    ])
