"""`shipper status` as text: aligned tables of the components and of the drops, rates per second.

The daemon's status (`Pipeline.status()`, what `--json` prints unchanged) holds counters; rates come from
two of them (`rates`: the daemon's own sample from its last interval, or the previous answer of
`--watch`). Nothing here prints a Python repr: absent values read `-`, flags `yes`/`no`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["plural", "rates", "render", "table"]

RATE_KEYS = ("received", "exported")


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 exporter`, `2 exporters`."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _total(figures: Mapping[str, Any], key: str) -> float:
    value = figures.get(key, 0)
    if key == "dropped" and isinstance(value, Mapping):
        return float(sum(v for v in value.values() if isinstance(v, (int, float))))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def rates(old: Mapping[str, Any], new: Mapping[str, Any], seconds: float) -> dict[str, dict[str, dict[str, float]]]:
    """Per second, per section and component: `received`, `exported` and `dropped` between two snapshots."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    if seconds <= 0:
        return out
    for section, components in new.items():
        if not isinstance(components, Mapping):
            continue
        found = old.get(section)
        before_section: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        for name, figures in components.items():
            if not isinstance(figures, Mapping):
                continue
            before = before_section.get(name) or {}
            out.setdefault(section, {})[name] = {
                key: max(0.0, _total(figures, key) - _total(before, key)) / seconds
                for key in (*RATE_KEYS, "dropped")
            }
    return out


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return str(value)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _rate(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return "0" if value == 0 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _words(error: Any, width: int = 120) -> str:
    if not error:
        return "-"
    text = " ".join(str(error).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], right: Iterable[int] = ()) -> list[str]:
    """Aligned columns, two spaces apart; the columns numbered in `right` (figures) align right."""
    head = list(headers)
    body = [[_text(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(head)]
    flush = set(right)

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in flush else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), *(line(r) for r in body)]


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _state(section: str, figures: Mapping[str, Any]) -> str:
    if figures.get("state"):
        return str(figures["state"])
    if section == "receivers":
        return "listening" if figures.get("path") or figures.get("endpoint") else "reading" if "dir" in figures \
            else "running"
    return "active"


_IN_TABLE = frozenset({"state", "received", "exported", "retried", "dead_lettered", "queue_items",
                       "queue_oldest_age_s", "last_error", "dropped", "malformed", "path", "endpoint", "url", "dir"})
"""Figures the table (or the component's place) already shows; the others are listed under `details`."""


def _where(section: str, figures: Mapping[str, Any]) -> str | None:
    for key in ("path", "endpoint", "url", "dir"):
        if figures.get(key):
            return str(figures[key])
    return None


def render(status: Mapping[str, Any], rate_figures: Mapping[str, Any] | None, interval: float | None) -> str:
    """The whole text of `shipper status`."""
    lines: list[str] = []
    rss = f", rss {status['rss_bytes'] / 2**20:.1f} MiB" if status.get("rss_bytes") else ""
    version = f"shipper {status['version']}, " if status.get("version") else "shipper "
    lines.append(f"{version}pid {_text(status.get('pid'))}, up {_uptime(status.get('uptime_s') or 0)}{rss}")
    lines.append(f"config {_text(status.get('config'))}, state {_text(status.get('state_dir'))}")
    pipeline = status.get("pipeline") or {}
    per_second = (rate_figures or {}).get("pipeline", {}).get("intake", {})
    over = f" (rates over the last {interval:.0f}s)" if interval else ""
    forwarded = f" (forwarded as received {pipeline['forwarded']})" if pipeline.get("forwarded") else ""
    lines.append(f"pipeline: received {pipeline.get('received', 0)}, processed {pipeline.get('processed', 0)}"
                 f"{forwarded}, {_rate(per_second.get('received'))}/s in{over}")
    rows: list[list[Any]] = []
    places: list[str] = []
    for section, label in (("receivers", "receiver"), ("processors", "processor"), ("exporters", "exporter")):
        for name, figures in (status.get(section) or {}).items():
            figures = figures or {}
            rate = (rate_figures or {}).get(section, {}).get(name, {})
            exporter = section == "exporters"
            rows.append([
                f"{label} {name}", _state(section, figures),
                _rate(rate.get("received")) if section == "receivers" else "-",
                _rate(rate.get("exported")) if exporter else "-",
                _rate(rate.get("dropped")),
                figures.get("queue_items") if exporter else "-",
                _age(figures.get("queue_oldest_age_s")) if exporter else "-",
                figures.get("received", 0) if section == "receivers" else "-",
                figures.get("exported", 0) if exporter else "-",
                figures.get("retried", 0) if exporter else "-",
                figures.get("dead_lettered", 0) if exporter else "-",
                _words(figures.get("last_error")),
            ])
            where = _where(section, figures)
            extra = ", ".join(f"{key} {_text(value)}" for key, value in figures.items()
                              if key not in _IN_TABLE and not isinstance(value, (dict, list)))
            if where or extra:
                places.append(f"  {label} {name}: " + "; ".join(part for part in (where, extra) if part))
            partitions = figures.get("partitions")
            for partition, each in (partitions.items() if isinstance(partitions, Mapping) else ()):  # kafka's
                if isinstance(each, Mapping):
                    places.append(f"    {partition}: " + ", ".join(f"{k} {_text(v)}" for k, v in each.items()))
    lines.append("")
    lines.extend(table(["COMPONENT", "STATE", "IN/S", "OUT/S", "DROP/S", "QUEUED", "OLDEST", "RECEIVED",
                        "EXPORTED", "RETRIED", "DEAD-LETTERED", "LAST ERROR"], rows, right=range(2, 11)))
    if places:
        lines.append("")
        lines.append("details:")
        lines.extend(places)
    drops: list[list[Any]] = []
    for section, label in (("pipeline", "pipeline"), ("receivers", "receiver"), ("processors", "processor"),
                           ("exporters", "exporter")):
        components = {"intake": pipeline} if section == "pipeline" else (status.get(section) or {})
        for name, figures in components.items():
            figures = figures or {}
            where = label if section == "pipeline" else f"{label} {name}"
            for reason, n in sorted((figures.get("dropped") or {}).items()):
                drops.append([reason, n, where])
                if reason == "malformed":  # and what was wrong with them
                    drops.extend([f"  {why}", count, where] for why, count in sorted(
                        (figures.get("malformed") or {}).items()))
    lines.append("")
    if drops:
        lines.extend(table(["DROPPED (REASON)", "SPANS", "WHERE"], drops, right=[1]))
    else:
        lines.append("dropped: none")
    return "\n".join(lines)
