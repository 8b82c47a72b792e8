"""The `shipper` command line: run, check, status, reload, emit, replay (README, Command line). Exit 0 ok, 1 error, 2 usage."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["main"]


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=os.environ.get("SHIPPER_CONFIG"),
                        help="the YAML config (default: $SHIPPER_CONFIG, else the embedded default)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipper", description="A local trace shipper for LLM apps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    _config_arg(run)

    check = sub.add_parser("check", help="validate a config; print every problem")
    _config_arg(check)
    check.add_argument("--explain", metavar="RECORD", help="a record (JSON file) to run through the processors")

    for name, text in (("status", "counts of the running daemon"), ("reload", "re-read the config (SIGHUP)")):
        cmd = sub.add_parser(name, help=text)
        _config_arg(cmd)
        cmd.add_argument("--control", metavar="PATH", default=os.environ.get("SHIPPER_CONTROL"),
                         help="the daemon's control socket (default: derived from the config)")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print JSON")

    replay = sub.add_parser("replay", help="send dead-lettered or archived records again")
    _config_arg(replay)
    replay.add_argument("file", metavar="FILE", help="a dead-letter file, or span NDJSON (file exporter output)")
    where = replay.add_mutually_exclusive_group()
    where.add_argument("--exporter", metavar="NAME", help="send every record to this exporter (daemon stopped)")
    where.add_argument("--all", dest="everyone", action="store_true",
                       help="send every record to every exporter (through the daemon if it runs)")

    tail = sub.add_parser("tail", help="print spans as they flow through the running daemon")
    _config_arg(tail)
    tail.add_argument("--control", metavar="PATH", default=os.environ.get("SHIPPER_CONTROL"),
                      help="the daemon's control socket (default: derived from the config)")
    tail.add_argument("--json", action="store_true", help="print each span as its full JSON record")

    emit = sub.add_parser("emit", help="send an example trace through the client shim")
    emit.add_argument("--service", default="shipper-emit", help="service name of the example spans")
    return parser


def _fail(message: str) -> int:
    print(f"shipper: {message}", file=sys.stderr)
    return 1


def _load(path: str | None) -> Any:
    from shipper.config import load_config

    return load_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from shipper.errors import ConfigError, QueueBusyError
    from shipper.pipeline import Pipeline

    try:
        config = _load(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    from shipper import control, logs, metrics, security, systemd

    logs.configure(config.settings.log_level)
    security.remember(secret.reveal() for _, secret in security.secrets_in(config))
    try:
        security.check_startup(config, args.config)
        pipeline = Pipeline(config, args.config)
        control.install(pipeline)
        systemd.install(pipeline)
        metrics.install(pipeline)
        anyio.run(pipeline.run)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    except QueueBusyError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 0
    finally:
        logs.flush()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from shipper.errors import ConfigError

    try:
        config = _load(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    if args.explain:
        try:
            from shipper.explain import explain
        except ImportError:
            return _fail("--explain is not available in this version")
        return explain(config, args.explain)

    def names(specs: list[Any]) -> str:
        return ", ".join(f"{s.name} ({s.type})" if s.name != s.type else s.type for s in specs) or "none"

    print(f"{config.source}: ok")
    print(f"  receivers:  {names(config.receivers)}")
    print(f"  processors: {names(config.processors)}")
    print(f"  exporters:  {names(config.exporters)}")
    return 0


def _control_path(args: argparse.Namespace) -> str:
    if args.control:
        return str(args.control)
    from shipper.control import control_path

    return control_path(_load(args.config))


def cmd_status(args: argparse.Namespace) -> int:
    import orjson

    from shipper.control import request
    from shipper.errors import ShipperError

    try:
        answer = request(_control_path(args), "status")
    except ShipperError as exc:
        return _fail(str(exc))
    status = answer.get("status", {})
    if args.json:
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
        return 0
    rss = f", rss {status['rss_bytes'] / 2**20:.1f} MiB" if status.get("rss_bytes") else ""
    print(f"shipper pid {status.get('pid')}, up {status.get('uptime_s', 0):.0f}s{rss}, config {status.get('config')}")
    pipeline = status.get("pipeline", {})
    print(f"  pipeline: received {pipeline.get('received', 0)}, processed {pipeline.get('processed', 0)}")
    if pipeline.get("malformed"):
        print("    malformed: " + ", ".join(f"{r} {n}" for r, n in sorted(pipeline["malformed"].items())))
    for section in ("receivers", "exporters"):
        print(f"  {section}:")
        for name, figures in status.get(section, {}).items():
            parts = ", ".join(f"{k} {v}" for k, v in figures.items() if not isinstance(v, dict))
            print(f"    {name}: {parts}")
            for key in ("malformed", "dropped"):
                if figures.get(key):
                    print(f"      {key}: " + ", ".join(f"{r} {n}" for r, n in sorted(figures[key].items())))
            for partition, each in (figures.get("partitions") or {}).items():  # a kafka receiver's
                print(f"      {partition}: " + ", ".join(f"{k} {v}" for k, v in each.items()))
    if status.get("processors"):
        print("  processors:")
        for name, figures in status["processors"].items():
            parts = ", ".join(f"{k} {v}" for k, v in figures.items() if not isinstance(v, dict))
            drops = ", ".join(f"{r} {n}" for r, n in sorted((figures.get("dropped") or {}).items()))
            print(f"    {name}: {parts or 'no counts yet'}" + (f"; dropped {drops}" if drops else ""))
    dropped = status.get("dropped") or {}
    print("  dropped: " + (", ".join(f"{r} {n}" for r, n in sorted(dropped.items())) or "none"))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from shipper.control import request
    from shipper.errors import ShipperError

    try:
        answer = request(_control_path(args), "reload")
    except ShipperError as exc:
        return _fail(str(exc))
    if not answer.get("ok"):
        print("reload refused; the running config stays:", file=sys.stderr)
        print("\n".join(answer.get("problems", [])), file=sys.stderr)
        return 1
    print("reloaded")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from shipper.errors import ConfigError, ShipperError
    from shipper.replay import replay, summary

    try:
        done = replay(_load(args.config), args.file, exporter=args.exporter, everyone=args.everyone)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    except (ShipperError, ValueError, OSError) as exc:
        return _fail(str(exc))
    print(summary(done))
    return 0


def _span_line(rec: dict[str, Any]) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(rec["end_ns"] / 1e9).strftime("%H:%M:%S.%f")[:-3]
    ms = (rec["end_ns"] - rec["start_ns"]) / 1e6
    status = rec.get("status", "unset")
    model = (rec.get("llm") or {}).get("model")
    extra = f" model={model}" if model else ""
    if status == "error":
        extra += f" error={(rec.get('error') or {}).get('message', '')[:80]!r}"
    return (f"{when} {rec.get('service', '-')} {rec.get('kind', 'span'):9} {rec['name']} {ms:.1f}ms {status}"
            f"{extra} trace={rec['trace_id']} span={rec['span_id']}")


def cmd_tail(args: argparse.Namespace) -> int:
    import orjson

    from shipper.control import stream_tail
    from shipper.errors import ShipperError

    try:
        for rec in stream_tail(_control_path(args)):
            print(orjson.dumps(rec).decode() if args.json else _span_line(rec), flush=True)
    except ShipperError as exc:
        return _fail(str(exc))
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    from shipper.emit import emit_example

    return emit_example(args.service)


COMMANDS = {"run": cmd_run, "check": cmd_check, "status": cmd_status, "reload": cmd_reload, "emit": cmd_emit,
            "replay": cmd_replay, "tail": cmd_tail}


# Top-level modules of the extra `shipper[daemon]`; the base distribution (what an app installs) is the shim.
DAEMON_MODULES = frozenset({"anyio", "yaml", "httpx", "tenacity", "opentelemetry", "google", "prometheus_client",
                            "h11"})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `shipper` script."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ModuleNotFoundError as exc:  # the app-side install (the shim alone) has no daemon dependencies
        if (exc.name or "").split(".")[0] not in DAEMON_MODULES:
            raise
        return _fail(f"`shipper {args.command}` needs the daemon's dependencies, which are not installed "
                     f"(no module {exc.name!r}): pip install 'shipper[daemon]'")
