"""`@traced`: a span around each call of a function, coroutine, generator or async generator.

- `input` is the dict of the arguments as passed (by parameter name, defaults not filled in; a first
  parameter named `self` or `cls` is left out); `output` is the return value. None is not recorded.
- For a generator or an async generator the span covers the whole iteration, from the first `next()` to
  exhaustion, `close()` or an exception; the span is current only while the generator's own code runs,
  never in the consumer between items. `output` is what was yielded: the text joined when every item is
  a string (a streamed LLM answer), else the list of items; both stop after 1,000 items, noting the rest
  as `…[N more items]`. The items are kept (not copied) until the span ends.
- An exception is recorded (`status: error`, `error: {type, message, stack}`) and re-raised unchanged.
- The signature is read once, when decorating; a call costs a dict of its arguments and a span.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from . import transport
from .context import current_span_var
from .span import KINDS, Span, _new, _plain_span

__all__ = ["traced"]

F = TypeVar("F", bound=Callable[..., Any])
MAX_ITEMS = 1000  # yielded items kept as a generator's output
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def traced(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    kind: str = "span",
    capture_input: bool | None = None,
    capture_output: bool | None = None,
) -> Any:
    """Trace every call: `@traced`, `@traced("name")` or `@traced(name=..., kind="tool", ...)`.

    `capture_input` / `capture_output` default to the configured settings (both on unless configure()
    turned them off). An unknown `kind` raises ValueError here, at decoration time.
    """
    if isinstance(fn, str):
        fn, name = None, fn
    if kind not in KINDS:
        raise ValueError(f"@traced(kind={kind!r}): expected one of {', '.join(sorted(KINDS))}")

    def decorate(func: F) -> F:
        if isinstance(func, (classmethod, staticmethod)):
            return type(func)(decorate(func.__func__))
        wrapped: F = _wrap(func, name or getattr(func, "__qualname__", None) or repr(func), kind,
                           capture_input, capture_output)
        return wrapped

    return decorate(fn) if fn is not None else decorate


def _binder(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """A function from (args, kwargs) to {parameter: value}, built from the signature read once."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: keep the positional values as a list
        return lambda args, kwargs: {"args": list(args), **kwargs} if args else dict(kwargs)
    first = parameters[0] if parameters else None
    skip = 1 if first is not None and first.name in ("self", "cls") and first.kind in _POSITIONAL else 0
    names = tuple(p.name for p in parameters if p.kind in _POSITIONAL)
    rest = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    shown = names[skip:]
    count = len(names)
    # zip() stops at the shorter: arguments left to their defaults are simply not there (no strict=).

    def bind_plain(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        inputs = dict(zip(names, args))
        if kwargs:
            inputs.update(kwargs)
        return inputs

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        inputs = dict(zip(shown, args[skip:]))
        if rest is not None and len(args) > count:
            inputs[rest] = args[count:]
        if kwargs:
            inputs.update(kwargs)
        return inputs

    # One or two shown parameters (most traced functions and methods): a dict literal, a third of zip's cost.
    if rest is None and len(shown) == 1:
        (name_a,) = shown

        def bind_one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            inputs = {name_a: args[skip]} if len(args) > skip else {}
            if kwargs:
                inputs.update(kwargs)
            return inputs

        return bind_one
    if rest is None and len(shown) == 2:
        name_a, name_b = shown

        def bind_two(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            given = len(args) - skip
            inputs = ({name_a: args[skip], name_b: args[skip + 1]} if given >= 2 else
                      {name_a: args[skip]} if given == 1 else {})
            if kwargs:
                inputs.update(kwargs)
            return inputs

        return bind_two
    return bind_plain if not skip and rest is None else bind


def _output_of(items: list[Any], total: int) -> Any:
    more = f"…[{total - len(items)} more items]" if total > len(items) else None
    if items and all(type(item) is str for item in items):
        return "".join(items) + (more or "")
    return [*items, more] if more else items


def _wrap(fn: Any, name: str, kind: str, capture_input: bool | None, capture_output: bool | None) -> Any:
    bind = _binder(fn)
    name = name if type(name) is str and 0 < len(name) <= 1024 else (str(name)[:1024] or "unnamed")  # as span()'s

    def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Span, bool]:
        settings = (transport._active or transport.active()).settings
        span = _plain_span(name, kind)
        if capture_input if capture_input is not None else settings.capture_input:
            inputs = bind(args, kwargs)
            if inputs:
                span._fields = {"input": inputs}
        return span, capture_output if capture_output is not None else settings.capture_output

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def async_generator_wrapper(*args: Any, **kwargs: Any) -> Any:
            span, keep = start(args, kwargs)
            agen = fn(*args, **kwargs)
            span._start()
            items: list[Any] = []
            total = 0
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    token = current_span_var.set(span)
                    try:
                        item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
                    finally:
                        current_span_var.reset(token)
                    thrown = None
                    total += 1
                    if keep and total <= MAX_ITEMS:
                        items.append(item)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # thrown in by the consumer: hand it to the generator
                        thrown = exc
            except StopAsyncIteration:
                pass
            except GeneratorExit:
                token = current_span_var.set(span)
                try:
                    await agen.aclose()
                finally:
                    current_span_var.reset(token)
                    _finish(span, keep, items, total, None)
                raise
            except BaseException as exc:
                _finish(span, keep, items, total, exc)
                raise
            _finish(span, keep, items, total, None)

        return async_generator_wrapper

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
            span, keep = start(args, kwargs)
            gen = fn(*args, **kwargs)
            span._start()
            items: list[Any] = []
            total = 0
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    token = current_span_var.set(span)
                    try:
                        item = gen.send(sent) if thrown is None else gen.throw(thrown)
                    finally:
                        current_span_var.reset(token)
                    thrown = None
                    total += 1
                    if keep and total <= MAX_ITEMS:
                        items.append(item)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # thrown in by the consumer: hand it to the generator
                        thrown = exc
            except StopIteration as stop:
                _finish(span, keep, items, total, None)
                return stop.value
            except GeneratorExit:
                token = current_span_var.set(span)
                try:
                    gen.close()
                finally:
                    current_span_var.reset(token)
                    _finish(span, keep, items, total, None)
                raise
            except BaseException as exc:
                _finish(span, keep, items, total, exc)
                raise

        return generator_wrapper

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
            span, keep = start(args, kwargs)
            with span:
                result = await fn(*args, **kwargs)
                if keep and result is not None:
                    _set_output(span, result)
                return result

        return coroutine_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = (transport._active or transport.active()).settings  # start(), inline: the common case
        span = _new(Span)  # _plain_span(), inline
        span.name = name
        span.kind = kind
        span.trace_id = span.span_id = ""
        span.start_ns = 0
        span._parent = span._trace = span._wide = span._status = span._token = span._fields = None
        span._ended = False
        if capture_input if capture_input is not None else settings.capture_input:
            inputs = bind(args, kwargs)
            if inputs:
                span._fields = {"input": inputs}
        with span:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
            keep = capture_output if capture_output is not None else settings.capture_output
            if keep and result is not None:
                if span._fields is None:
                    span._fields = {"output": result}
                else:
                    span._fields["output"] = result
            return result

    return wrapper


def _finish(span: Span, keep: bool, items: list[Any], total: int, exc: BaseException | None) -> None:
    if keep and total:
        _set_output(span, _output_of(items, total))
    span._finish(exc)


def _set_output(span: Span, value: Any) -> None:
    if span._fields is None:
        span._fields = {"output": value}
    else:
        span._fields["output"] = value
