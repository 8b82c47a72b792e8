"""A thread pool whose tasks run in a copy of the submitter's context, so their spans nest under its span."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["TracedThreadPoolExecutor"]

T = TypeVar("T")


class TracedThreadPoolExecutor(ThreadPoolExecutor):
    """`ThreadPoolExecutor` whose `submit` (and so `map`) carries the caller's current span and fields."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn(*args, **kwargs)` in a copy of the calling context, taken now."""
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
