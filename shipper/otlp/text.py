"""Structured values as attribute text, and back: the JSON both conventions carry in string attributes."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["json_text", "parse_json"]


def json_text(value: Any) -> str:
    """`value` as compact JSON text (non-JSON values are written with `str`)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def parse_json(value: Any) -> Any:
    """JSON text parsed, or the value itself when it is not JSON text."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value
