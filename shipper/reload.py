"""Reload (SIGHUP, `shipper reload`): apply every change of the config to the running daemon, losing nothing.

What a reload does, in order, once the new file is read and valid (an invalid one changes nothing):
1. builds every new component (processor chains, changed or added exporters and receivers) first, so a
   component that refuses its settings refuses the whole reload before anything is swapped;
2. with the pipeline between two batches (`Pipeline.swapping()`):
   - processors: the chains swap; what the old ones held (tail sampling) is released through the new;
   - exporters: an added one opens and starts; a removed one stops, and its durable queue stays on disk
     (named in the report) for when an exporter of that name comes back; a changed one stops and the new
     settings open the same queue, so what was queued drains into them;
   - receivers: a changed one closes and binds again with its new settings (a socket's senders use their
     spool for that moment; a spool receiver resumes at its saved offsets), added ones bind, removed ones
     close;
3. settings: `log_level`/`log_format` and `shutdown_timeout` apply at once, `batch` between two batches,
   `metrics` rebinds its endpoint; `state_dir` and `control_socket` need a restart, which the report says
   (and the reload does not count as fully applied).
A component that fails to open with its new settings is reported and, where it existed before, reopened
with its old ones. The reload is fully applied only when the report has no problems.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from shipper.config import ComponentSpec, Config
from shipper.errors import ConfigError
from shipper.sink import QueuedSink

if TYPE_CHECKING:
    from shipper.pipeline import Pipeline

__all__ = ["ReloadReport", "apply"]

log = logging.getLogger("shipper.pipeline")

RESTART_ONLY = ("state_dir", "control_socket")


@dataclass
class ReloadReport:
    """What a reload changed, and what it could not apply."""

    source: str
    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    kept_old: set[tuple[str, str]] = field(default_factory=set)  # (section, name) still on its old settings

    @property
    def ok(self) -> bool:
        """True when everything that changed was applied."""
        return not self.problems


def _spec_raw(config: Config, section: str, name: str, own_processors: bool = False) -> Any:
    raw = (config.raw.get(section) or {}).get(name)
    if section == "exporters" and isinstance(raw, dict) and not own_processors:
        raw = {k: v for k, v in raw.items() if k != "processors"}
    return raw


def _diff(old: Config, new: Config, section: str) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed) component names of `section`, in config order."""
    before = {spec.name for spec in getattr(old, section)}
    after = [spec.name for spec in getattr(new, section)]
    added = [name for name in after if name not in before]
    removed = [spec.name for spec in getattr(old, section) if spec.name not in set(after)]
    changed = [name for name in after if name in before
               and _spec_raw(old, section, name) != _spec_raw(new, section, name)]
    return added, removed, changed


def _spec(config: Config, section: str, name: str) -> ComponentSpec:
    specs: list[ComponentSpec] = config.exporters if section == "exporters" else config.receivers
    return next(spec for spec in specs if spec.name == name)


async def apply(pipeline: Pipeline, new: Config) -> ReloadReport:
    """Apply `new` to the running `pipeline` (see the module docstring); returns the report."""
    old = pipeline.config
    report = ReloadReport(new.source)
    try:
        shared, own = pipeline._chains(new)
    except Exception as exc:  # a processor refused its settings at construction
        report.problems.append(f"{new.source}: {exc}")
        return report
    exp_added, exp_removed, exp_changed = _diff(old, new, "exporters")
    rec_added, rec_removed, rec_changed = _diff(old, new, "receivers")
    if new.settings.max_record_bytes != old.settings.max_record_bytes:  # receivers check it as they read
        rec_changed += [s.name for s in new.receivers if s.name not in rec_added and s.name not in rec_changed]
    for name in [n for n in rec_changed + rec_removed if getattr(pipeline.receivers.get(n), "_inherited", False)]:
        # systemd owns that socket (socket activation): rebinding it here would take it from systemd
        report.problems.append(f"receiver {name}: its socket is handed over by systemd (socket activation), "
                               "so its change takes a restart of the service")
        report.kept_old.add(("receivers", name))
        rec_changed = [n for n in rec_changed if n != name]
        rec_removed = [n for n in rec_removed if n != name]
    built: dict[tuple[str, str], Any] = {}
    try:
        for name in exp_added + exp_changed:
            built[("exporters", name)] = _build_sink(pipeline, _spec(new, "exporters", name), own[name],
                                                           new.settings.max_record_bytes)
        for name in rec_added + rec_changed:
            built[("receivers", name)] = _build_receiver(pipeline, _spec(new, "receivers", name),
                                                               new.settings.max_record_bytes)
    except Exception as exc:  # a component refused its settings: nothing is swapped
        report.problems.append(f"{new.source}: {exc}")
        return report

    async with pipeline.swapping():
        replaced = _swap_processors(pipeline, old, new, shared, own, report, skip=set(exp_changed) | set(exp_added))
        await _release(pipeline, replaced)
        for name in exp_removed:
            await _remove_exporter(pipeline, name, report)
        for name in exp_changed:
            await _replace(pipeline, "exporters", name, built[("exporters", name)], old, new, report)
        for name in exp_added:
            await _add(pipeline, "exporters", name, built[("exporters", name)], new, report)
        await _settings(pipeline, old, new, report)
    # Receivers change outside the swap: one being stopped may be handing a last batch to the pipeline,
    # which must keep consuming for that to finish.
    for name in rec_removed:
        await pipeline.stop_component("receivers", name)
        pipeline.receivers = {k: v for k, v in pipeline.receivers.items() if k != name}
        report.changes.append(f"receiver {name}: removed")
    for name in rec_changed:
        await _replace(pipeline, "receivers", name, built[("receivers", name)], old, new, report)
    for name in rec_added:
        await _add(pipeline, "receivers", name, built[("receivers", name)], new, report)
    _record(pipeline, old, new, report)
    return report


def _build_sink(pipeline: Pipeline, spec: ComponentSpec, chain: Any, limit: int | None = None) -> QueuedSink:
    return pipeline.make_sink(spec, chain, limit)


def _build_receiver(pipeline: Pipeline, spec: ComponentSpec, limit: int | None = None) -> Any:
    return pipeline.make_receiver(spec, limit)


def _swap_processors(pipeline: Pipeline, old: Config, new: Config, shared: Any, own: dict[str, Any],
                     report: ReloadReport, skip: set[str]) -> list[tuple[str | None, Any]]:
    """Swap every chain with no await in between, so no batch sees half the new processors.

    Returns the replaced chains, (exporter name or None for the shared one, chain), to release.
    """
    replaced: list[tuple[str | None, Any]] = [(None, pipeline.chain)]
    pipeline.chain = shared
    for name, sink in pipeline.sinks.items():
        if name in own and name not in skip:
            replaced.append((name, sink.chain))
            sink.chain = own[name]
    if old.raw.get("processors") != new.raw.get("processors"):
        report.changes.append(f"processors: {len(old.processors)} -> {len(new.processors)} shared "
                              f"({', '.join(s.type for s in new.processors) or 'none'})")
    for spec in new.exporters:
        if spec.name in pipeline.sinks and spec.name not in skip:
            before = (_spec_raw(old, "exporters", spec.name, True) or {})
            after = (_spec_raw(new, "exporters", spec.name, True) or {})
            if isinstance(before, dict) and isinstance(after, dict) and \
                    before.get("processors") != after.get("processors"):
                report.changes.append(f"exporter {spec.name}: its processors changed "
                                      f"({', '.join(s.type for s in spec.processors) or 'none'})")
    return replaced


async def _release(pipeline: Pipeline, replaced: list[tuple[str | None, Any]]) -> None:
    """Release what the old chains held (tail sampling) through the new ones."""
    for name, chain in replaced:
        released = chain.flush(force=True)
        chain.close()
        if name is None:
            if released:
                for sink in pipeline.sinks.values():
                    await sink.put(list(released))
        elif name in pipeline.sinks:
            await pipeline.sinks[name].put_processed(released)


async def _remove_exporter(pipeline: Pipeline, name: str, report: ReloadReport) -> None:
    sink = pipeline.sinks[name]
    await sink.put_processed(sink.chain.flush(force=True))
    sink.chain.close()
    pipeline.sinks = {k: v for k, v in pipeline.sinks.items() if k != name}
    await pipeline.stop_component("exporters", name)
    where = pipeline.state_dir / "queues" / name
    left = sink.queue.statistics().get("queue_items", 0)
    report.changes.append(f"exporter {name}: removed; its queue stays on disk at {where} "
                          f"({left} spans left), sent if an exporter named {name} is configured again")


def _why(exc: BaseException, config: Config) -> str:
    """What a component's failure to open says, its key paths located in `config` (file:line:column)."""
    if isinstance(exc, ConfigError):
        return "; ".join(config.locate(p) for p in exc.problems)
    return str(exc)


async def _open(section: str, component: Any) -> None:
    await component.open()


def _install(pipeline: Pipeline, section: str, name: str, component: Any) -> None:
    if section == "exporters":
        pipeline.sinks = {**pipeline.sinks, name: component}
        pipeline.opened["exporters"][name] = component
        if pipeline.metrics_server is not None:
            from shipper.metrics import time_exports

            time_exports(name, component.exporter)
        pipeline.start_sink(name, component)
    else:
        pipeline.receivers = {**pipeline.receivers, name: component}
        pipeline.opened["receivers"][name] = component
        pipeline.start_receiver(name, component)


def _where(section: str, component: Any) -> str:
    figures = component.statistics() if hasattr(component, "statistics") else {}
    for key in ("path", "endpoint", "url", "dir"):
        if figures.get(key):
            return f" ({figures[key]})"
    return ""


async def _add(pipeline: Pipeline, section: str, name: str, component: Any, new: Config,
               report: ReloadReport) -> None:
    label = section[:-1]
    try:
        await _open(section, component)
    except (ConfigError, OSError) as exc:
        report.problems.append(f"{label} {name}: not added, it cannot open: {_why(exc, new)}")
        return
    _install(pipeline, section, name, component)
    report.changes.append(f"{label} {name}: added{_where(section, component)}")


async def _replace(pipeline: Pipeline, section: str, name: str, component: Any, old: Config, new: Config,
                   report: ReloadReport) -> None:
    label = section[:-1]
    if section == "exporters":
        sink = pipeline.sinks[name]
        await sink.put_processed(sink.chain.flush(force=True))
        sink.chain.close()
    await pipeline.stop_component(section, name)
    try:
        await _open(section, component)
    except (ConfigError, OSError) as exc:
        report.problems.append(f"{label} {name}: its new settings cannot open ({_why(exc, new)}); kept the old ones")
        report.kept_old.add((section, name))
        spec = _spec(old, section, name)
        if section == "exporters":
            from shipper.chain import build_chain

            own = build_chain(spec.processors, pipeline.stats, pipeline.state_dir, name,
                              old.settings.max_record_bytes)
            component = _build_sink(pipeline, spec, own)
        else:
            component = _build_receiver(pipeline, spec)
        try:
            await _open(section, component)
        except (ConfigError, OSError) as again:
            report.problems.append(f"{label} {name}: the old settings cannot open again either "
                                   f"({_why(again, old)}); "
                                   f"{label} {name} is stopped until the next reload or restart")
            return
        _install(pipeline, section, name, component)
        return
    _install(pipeline, section, name, component)
    what = "drains its queue into the new settings" if section == "exporters" else "bound again"
    report.changes.append(f"{label} {name}: changed; {what}{_where(section, component)}")


async def _settings(pipeline: Pipeline, old: Config, new: Config, report: ReloadReport) -> None:
    before, after = old.settings, new.settings
    for key in RESTART_ONLY:
        if getattr(before, key) != getattr(after, key):
            report.problems.append(f"{key}: changed from {getattr(before, key)} to {getattr(after, key)}; "
                                   "this takes a restart (`systemctl restart shipper`)")
    log_format = getattr(after, "log_format", "text")
    if before.log_level != after.log_level or getattr(before, "log_format", "text") != log_format:
        from shipper import logs

        logs.configure(after.log_level, log_format=log_format)
        report.changes.append(f"logging: level {after.log_level}, format {log_format}")
    if before.shutdown_timeout != after.shutdown_timeout:
        report.changes.append(f"shutdown_timeout: {before.shutdown_timeout:g}s -> {after.shutdown_timeout:g}s")
    if before.batch != after.batch:
        pipeline._batch_changed = True
        report.changes.append(f"batch: max_spans {after.batch.max_spans}, max_bytes {after.batch.max_bytes}, "
                              f"max_delay {after.batch.max_delay:g}s (from the next batch)")
    if before.max_record_bytes != after.max_record_bytes:
        report.changes.append(f"max_record_bytes: {before.max_record_bytes} -> {after.max_record_bytes}")
    if before.metrics != after.metrics:
        await _metrics(pipeline, after.metrics.endpoint, report)


async def _metrics(pipeline: Pipeline, endpoint: str, report: ReloadReport) -> None:
    from shipper import metrics

    current = pipeline.metrics_server
    fresh = None
    if endpoint:
        try:
            fresh = metrics.server_for(pipeline, endpoint)
        except ConfigError as exc:
            report.problems.append(f"metrics: {'; '.join(exc.problems)}; the old endpoint stays")
            return
    if current is not None:
        for service in list(pipeline.services):
            if getattr(service, "__self__", None) is current:
                pipeline.services.remove(service)
                pipeline.stop_service(service)
        await anyio.sleep(0)
        current.close()
    pipeline.metrics_server = fresh
    if fresh is None:
        report.changes.append("metrics: no longer served")
        return
    if current is None:
        for name, sink in pipeline.sinks.items():
            metrics.time_exports(name, getattr(sink, "exporter", None))
    pipeline.services.append(fresh.serve)
    pipeline.start_service(pipeline.services[-1])
    report.changes.append(f"metrics: served on {fresh.url}")


def _record(pipeline: Pipeline, old: Config, new: Config, report: ReloadReport) -> None:
    """Remember what now runs, so the next reload compares against it (restart-only keys stay as run)."""
    kept = {key: getattr(old.settings, key) for key in RESTART_ONLY}
    settings = dataclasses.replace(new.settings, **kept)
    raw = dict(new.raw)
    for key in RESTART_ONLY:
        if key in old.raw:
            raw[key] = old.raw[key]
        else:
            raw.pop(key, None)
    sections: dict[str, list[ComponentSpec]] = {}
    for section, running in (("exporters", pipeline.sinks), ("receivers", pipeline.receivers)):
        raw[section] = dict(raw.get(section) or {})
        specs = []
        for spec in getattr(new, section):
            if (section, spec.name) in report.kept_old:
                spec = _spec(old, section, spec.name)
                raw[section][spec.name] = (old.raw.get(section) or {}).get(spec.name)
            if spec.name in running:
                specs.append(spec)
            else:
                raw[section].pop(spec.name, None)
        listed = {spec.name for spec in specs}
        for spec in getattr(old, section):  # still running though the file removed it (a removal not applied)
            if spec.name in running and spec.name not in listed:
                specs.append(spec)
                raw[section][spec.name] = (old.raw.get(section) or {}).get(spec.name)
        sections[section] = specs
    exporters, receivers = sections["exporters"], sections["receivers"]
    pipeline.config = dataclasses.replace(new, settings=settings, exporters=exporters, receivers=receivers,
                                          raw=raw)
    pipeline.settings = settings
