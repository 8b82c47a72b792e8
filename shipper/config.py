"""Configuration: YAML with `${VAR}` substitution, built into dataclasses, every problem collected.

The loader alone: value types are in `shipper.values`, shared settings in `shipper.settings`. Each
component declares its settings as a `@dataclass(kw_only=True)` named `Config` on its class; the
defaults there are the only defaults (mirrored in config.example.yaml). `load_config` reads the file,
substitutes environment variables in string values (`${VAR}`, `${VAR:-default}`; a value that is only a
reference is re-read as YAML, so `${PORT}` can fill an integer), and builds the dataclasses. Problems are
collected, not raised one by one: `ConfigError.problems` lists each as `FILE:LINE:COLUMN: key.path: what
was expected` (positions and duplicated keys: config_yaml.py).
Unknown keys are rejected with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from shipper import registry
from shipper.config_yaml import locate, read_yaml
from shipper.errors import ConfigError
from shipper.settings import DeliveryConfig, Settings
from shipper.values import Secret

__all__ = [
    "ComponentSpec",
    "Config",
    "build_dataclass",
    "build_exporter_config",
    "load_config",
    "parse_config",
]

@dataclass
class ComponentSpec:
    """One configured component: its name, registered type, built config and own processors.

    An exporter's `delivery` (its `queue`, `retry` and `batch` keys) is kept apart from its `config`: the
    sink and the delivery worker read it, the exporter never sees it.
    """

    name: str
    type: str
    config: Any
    processors: list[ComponentSpec] = field(default_factory=list)
    delivery: DeliveryConfig | None = None


@dataclass
class Config:
    """A whole, valid configuration."""

    source: str
    settings: Settings
    receivers: list[ComponentSpec]
    processors: list[ComponentSpec]
    exporters: list[ComponentSpec]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    marks: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # key path -> line, column

    def locate(self, problem: str) -> str:
        """`FILE:LINE:COLUMN: problem` for a problem that starts with a key path of this config."""
        if problem.startswith(self.source):
            return problem
        return locate(problem, self.marks, self.source)


_SECTIONS = ("receivers", "processors", "exporters")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WHOLE_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ns|us|ms|s|m|h)?\s*")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]i?[bB]?|[bB])?\s*")
_SIZE_UNITS = {"k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(sorted(known))}"


def _substitute(value: Any, path: str, problems: list[str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; a lone reference is re-read as YAML."""
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                problems.append(f"{path}: environment variable {name} is not set (write ${{{name}:-default}} "
                                "to give a default)")
                return ""
            return default
        return found

    substituted = _ENV_REF.sub(replace, value)
    if _WHOLE_REF.fullmatch(value.strip()):
        try:
            reread = yaml.safe_load(substituted) if substituted.strip() else substituted
        except yaml.YAMLError:
            return substituted
        return reread if isinstance(reread, (int, float, bool)) else substituted
    return substituted


def _convert(tp: Any, value: Any, path: str, meta: typing.Mapping[str, Any], problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the converted value or append a problem."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *marks = get_args(tp)
        if "duration" in marks:
            return _check_range(_duration(value, path, problems), path, meta, problems)
        if "bytes" in marks:
            return _check_range(_bytesize(value, path, problems), path, meta, problems)
        return _convert(base, value, path, meta, problems)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        first: list[str] = []
        for option in options:
            attempt: list[str] = []
            converted = _convert(option, value, path, meta, attempt)
            if not attempt:
                return converted
            first = first or attempt
        problems.extend(first)
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{path}: expected one of {', '.join(map(str, choices))}, got {_describe(value)}{hint}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp) or (Any,)
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_describe(value)}")
            return []
        return [_convert(item_tp, v, f"{path}[{i}]", {}, problems) for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_describe(value)}")
            return {}
        return {str(k): _convert(val_tp, v, f"{path}.{k}", {}, problems) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_dataclass(typing.cast(type, tp), value, path, problems)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {_describe(value)}")
            return value
        return _check_range(value, path, meta, problems)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {_describe(value)}")
            return value
        return _check_range(float(value), path, meta, problems)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_describe(value)}")
        return value
    if tp is Secret:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string (a secret), got a {type(value).__name__}")
            return Secret("")
        return Secret(value)
    if tp is Path:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a path, got {_describe(value)}")
            return Path()
        return Path(os.path.expanduser(value))
    return value


def _check_range(value: Any, path: str, meta: typing.Mapping[str, Any], problems: list[str]) -> Any:
    if not isinstance(value, (int, float)):
        return value
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        problems.append(f"{path}: expected at least {low}, got {value}")
    if high is not None and value > high:
        problems.append(f"{path}: expected at most {high}, got {value}")
    return value


def _duration(value: Any, path: str, problems: list[str]) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        problems.append(f"{path}: expected a duration like 250ms, 5s, 2m or a number of seconds, "
                        f"got {_describe(value)}")
        return None
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _bytesize(value: Any, path: str, problems: list[str]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        problems.append(f"{path}: expected a size like 512KiB, 16MiB or a number of bytes, got {_describe(value)}")
        return None
    unit = (match.group(2) or "b").lower().rstrip("b")
    return int(float(match.group(1)) * _SIZE_UNITS.get(unit, 1))


def build_dataclass(cls: type, data: Any, path: str, problems: list[str], also_known: typing.Iterable[str] = ()) -> Any:
    """Build dataclass `cls` from mapping `data`, appending every problem found (with its key path).

    `also_known` are keys another dataclass takes from the same mapping, offered in "did you mean".
    """
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path or 'top level'}: expected a mapping, got {_describe(data)}")
        data = {}
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key{_did_you_mean(str(key), [*fields, *also_known])}")
            continue
        kwargs[key] = _convert(hints[key], value, f"{prefix}{key}", fields[key].metadata, problems)
    missing = [name for name, f in fields.items()
               if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    problems.extend(f"{prefix}{name}: required key is missing" for name in missing)
    if missing:
        return None
    try:
        instance = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{path or 'top level'}: {exc}")
        return None
    check = getattr(instance, "check", None)
    if callable(check):
        problems.extend(f"{prefix}{message}" for message in check())
    return instance


def _component(section: str, name: str, data: Any, path: str, problems: list[str]) -> ComponentSpec | None:
    kinds = registry.REGISTRY[section]
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping with a `type`, got {_describe(data)}")
        return None
    data = dict(data)
    type_name = data.pop("type", None)
    if type_name is None:
        problems.append(f"{path}.type: required key is missing; expected one of {', '.join(sorted(kinds))}")
        return None
    if type_name not in kinds:
        problems.append(f"{path}.type: unknown {section[:-1]} type {_describe(type_name)}"
                        f"{_did_you_mean(str(type_name), kinds)}")
        return None
    own_processors: list[ComponentSpec] = []
    if section == "exporters" and "processors" in data:
        own_processors = _processor_list(data.pop("processors"), f"{path}.processors", problems)
    try:
        cls = registry.load(section, type_name)
    except ImportError as exc:  # a component behind an extra that is not installed; its message names it
        problems.append(f"{path}.type: {exc}")
        return None
    if section == "exporters":
        config, delivery = build_exporter_config(cls.Config, data, path, problems)
        return ComponentSpec(name=name, type=type_name, config=config, processors=own_processors,
                             delivery=delivery)
    config = build_dataclass(cls.Config, data, path, problems)
    return ComponentSpec(name=name, type=type_name, config=config, processors=own_processors)


_DELIVERY_KEYS = tuple(f.name for f in dataclasses.fields(DeliveryConfig))


def build_exporter_config(cls: type, data: Any, path: str, problems: list[str]) -> tuple[Any, DeliveryConfig]:
    """An exporter's own `Config` and its `DeliveryConfig`, from the one mapping YAML gives for it."""
    data = dict(data) if isinstance(data, dict) else data
    delivery_data = {key: data.pop(key) for key in _DELIVERY_KEYS if key in data} if isinstance(data, dict) else {}
    delivery = build_dataclass(DeliveryConfig, delivery_data, path, problems) or DeliveryConfig()
    spans = getattr(cls, "default_batch_spans", None)
    batch = delivery_data.get("batch")
    if spans is not None and not (isinstance(batch, dict) and "max_spans" in batch):
        delivery.batch.max_spans = spans  # this exporter type's own default
    return build_dataclass(cls, data, path, problems, also_known=_DELIVERY_KEYS), delivery


def _processor_list(data: Any, path: str, problems: list[str]) -> list[ComponentSpec]:
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(f"{path}: expected a list of processors, each a mapping with a `type`")
        return []
    specs = []
    for i, item in enumerate(data):
        spec = _component("processors", f"{item.get('type', i) if isinstance(item, dict) else i}",
                          item, f"{path}[{i}]", problems)
        if spec is not None:
            specs.append(spec)
    return specs


def _named(section: str, data: Any, problems: list[str]) -> list[ComponentSpec]:
    if data is None:
        return []
    if not isinstance(data, dict):
        problems.append(f"{section}: expected a mapping of names to components, got {_describe(data)}")
        return []
    specs = []
    for name, item in data.items():
        spec = _component(section, str(name), item, f"{section}.{name}", problems)
        if spec is not None:
            specs.append(spec)
    return specs


def parse_config(text: str, source: str) -> Config:
    """Build a `Config` from YAML `text`; `source` names the file in every error."""
    raw, marks = read_yaml(text, source)  # positions of every key; duplicated keys refused
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: top level: expected a mapping of keys, got {_describe(raw)}"])
    problems: list[str] = []
    raw = _substitute(raw, "", problems)
    sections = {key: raw.pop(key) for key in _SECTIONS if key in raw}
    settings = build_dataclass(Settings, raw, "", problems)
    receivers = _named("receivers", sections.get("receivers"), problems)
    processors = _processor_list(sections.get("processors"), "processors", problems)
    exporters = _named("exporters", sections.get("exporters"), problems)
    if not problems and not receivers:
        problems.append("receivers: at least one receiver is required")
    if not problems and not exporters:
        problems.append("exporters: at least one exporter is required")
    if problems:
        raise ConfigError([locate(p, marks, source) for p in problems])
    return Config(source=source, settings=settings, receivers=receivers, processors=processors,
                  exporters=exporters, raw={**raw, **sections}, marks=marks)


DEFAULT_CONFIG_NAME = "default_config.yaml"


def default_config_text() -> str:
    """The embedded default configuration (config.example.yaml), shipped inside the package."""
    return Path(__file__).with_name(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and build the configuration at `path`, or the embedded default when `path` is None."""
    if path is None:
        return parse_config(default_config_text(), "<embedded default config>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from exc
    return parse_config(text, str(path))
