"""The JSON Schema of record v1, shipped in the package: `record_schema()` reads it with importlib.resources.

The schema says what a record may look like on the wire (docs/record.md is the prose); the daemon's own
check (`shipper.record.validate`) enforces the same rules plus the limits of its config. Standard library
only, so an app's environment (the shim alone) can validate what it writes too.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_FILE", "record_schema"]

SCHEMA_FILE = "span-record.v1.schema.json"


def record_schema() -> dict[str, Any]:
    """The record v1 JSON Schema (draft 2020-12) as a dict, read from the installed package."""
    schema: dict[str, Any] = json.loads(resources.files("shipper").joinpath(SCHEMA_FILE).read_text("utf-8"))
    return schema
