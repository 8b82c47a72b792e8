"""The installed shipper's version, read once from the package metadata (pyproject.toml's `version`).

The user agent of the HTTP exporters, the instrumentation scope of encoded spans and the `shipper_info`
metric all say this; "unknown" when shipper runs from a checkout that was never installed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]


def _installed() -> str:
    try:
        return version("shipper")
    except PackageNotFoundError:
        return "unknown"


VERSION = _installed()
