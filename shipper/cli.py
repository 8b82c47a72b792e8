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


def _control_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", metavar="PATH", default=os.environ.get("SHIPPER_CONTROL"),
                        help="the daemon's control socket (default: derived from the config)")


class _Version(argparse.Action):
    """`--version`: version, Python, and where the config would be read from."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from shipper.about import describe

        print(describe())
        parser.exit()


# name: (one-line description, examples)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("Run the daemon in the foreground (what the systemd service runs).",
            "shipper run\n  shipper run -c /etc/shipper/config.yaml"),
    "check": ("Validate a config and print every problem with its file:line:column.",
              "shipper check -c config.yaml\n  shipper check -c config.yaml --explain record.json"),
    "status": ("Show the running daemon's components, rates, queues and drops.",
               "shipper status\n  shipper status --watch 2\n  shipper status --json"),
    "reload": ("Apply the changed config to the running daemon without a restart (like SIGHUP).",
               "shipper reload\n  shipper reload -c /etc/shipper/config.yaml"),
    "replay": ("Send dead-lettered or archived records again.",
               "shipper replay --all ~/.local/state/shipper/deadletter/phoenix.ndjson\n"
               "  shipper replay --exporter langfuse spans.ndjson"),
    "tail": ("Print spans as they flow through the running daemon.",
             "shipper tail --service checkout --errors\n  shipper tail --kind llm --name 'chat*' --json"),
    "emit": ("Send an example trace through the client shim, say where it lands and wait until it is there.",
             "shipper emit\n  shipper emit --no-wait --service demo"),
}


def _sub(sub: Any, name: str) -> argparse.ArgumentParser:
    description, example = SUBCOMMANDS[name]
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=description[0].lower() + description[1:].rstrip("."), description=description,
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipper", description="A local trace shipper for LLM apps.",
                                     epilog="Run `shipper COMMAND --help` for a command's options and an example.")
    parser.add_argument("-V", "--version", action=_Version,
                        help="print the version, the Python and where the config is read from")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _sub(sub, "run")
    _config_arg(run)

    check = _sub(sub, "check")
    _config_arg(check)
    check.add_argument("--explain", metavar="RECORD", help="a record (JSON file) to run through the processors")

    status = _sub(sub, "status")
    _config_arg(status)
    _control_arg(status)
    status.add_argument("--json", action="store_true", help="print the daemon's status as JSON")
    status.add_argument("--watch", metavar="SECONDS", nargs="?", const=2.0, type=_seconds,
                        help="redraw every SECONDS (default 2) until Ctrl-C")

    reload = _sub(sub, "reload")
    _config_arg(reload)
    _control_arg(reload)

    replay = _sub(sub, "replay")
    _config_arg(replay)
    replay.add_argument("file", metavar="FILE", help="a dead-letter file, or span NDJSON (file exporter output)")
    where = replay.add_mutually_exclusive_group()
    where.add_argument("--exporter", metavar="NAME", help="send every record to this exporter (daemon stopped)")
    where.add_argument("--all", dest="everyone", action="store_true",
                       help="send every record to every exporter (through the daemon if it runs)")
    replay.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="show progress on stderr (auto: only when stderr is a terminal)")

    tail = _sub(sub, "tail")
    _config_arg(tail)
    _control_arg(tail)
    tail.add_argument("--json", action="store_true", help="print each span as its full JSON record")
    tail.add_argument("--service", metavar="NAME", action="append", help="only spans of this service (repeatable)")
    tail.add_argument("--trace", metavar="ID", action="append", help="only spans of this trace id (repeatable)")
    tail.add_argument("--kind", metavar="KIND", action="append", help="only spans of this kind: llm, tool, ...")
    tail.add_argument("--name", metavar="GLOB", action="append", help="only spans whose name matches, e.g. 'chat*'")
    tail.add_argument("--errors", action="store_true", help="only spans whose status is error")
    tail.add_argument("--raw", action="store_true",
                      help="show records as received, before the processors (the control socket's owner only)")

    emit = _sub(sub, "emit")
    _config_arg(emit)
    _control_arg(emit)
    emit.add_argument("--service", default="shipper-emit", help="service name of the example spans")
    emit.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                      help="wait until the spans are exported (default: on when the daemon is up)")
    emit.add_argument("--timeout", type=_seconds, default=30.0, help="how long --wait waits (default 30s)")
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

    logs.configure(config.settings.log_level, log_format=config.settings.log_format)
    security.remember(secret.reveal() for _, secret in security.secrets_in(config))
    try:
        security.check_startup(config, args.config)
        pipeline = Pipeline(config, args.config)
        control.install(pipeline)
        systemd.install(pipeline)
        metrics.install(pipeline)
        anyio.run(pipeline.run)
    except ConfigError as exc:  # at start: a key that cannot be used (a port taken, a path that is a file)
        print("\n".join(config.locate(p) for p in exc.problems), file=sys.stderr)
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
    import time

    import orjson

    from shipper.control import request
    from shipper.errors import ShipperError
    from shipper.status_text import rates, render

    try:
        path = _control_path(args)
        answer = request(path, "status")
    except ShipperError as exc:
        return _fail(str(exc))
    if args.json and not args.watch:
        print(orjson.dumps(answer.get("status", {}), option=orjson.OPT_INDENT_2).decode())
        return 0
    terminal = sys.stdout.isatty()
    previous: tuple[float, dict[str, Any]] | None = None
    try:
        while True:
            now = time.monotonic()
            status = answer.get("status", {})
            if args.json:
                print(orjson.dumps(status).decode(), flush=True)  # one line per sample: NDJSON
            else:
                if previous is None:
                    per_second, interval = answer.get("rates"), answer.get("interval_s")
                else:
                    interval = now - previous[0]
                    per_second = rates(_rate_sections(previous[1]), _rate_sections(status), interval)
                text = render({**status, "version": answer.get("version")}, per_second, interval)
                if terminal and args.watch:
                    stamp = time.strftime("%H:%M:%S")
                    text = f"\x1b[H\x1b[2J{text}\n\nevery {args.watch:g}s, {stamp}; Ctrl-C to stop"
                elif args.watch:
                    text = f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')}\n{text}"
                print(text, flush=True)
            if not args.watch:
                return 0
            previous = (now, status)
            time.sleep(args.watch)
            answer = request(path, "status")
    except ShipperError as exc:
        return _fail(str(exc))
    except (KeyboardInterrupt, BrokenPipeError):
        return 0


def _rate_sections(status: dict[str, Any]) -> dict[str, Any]:
    """A status answer in the shape of the daemon's counter snapshot, for `rates()`."""
    return {"pipeline": {"intake": status.get("pipeline", {})},
            **{key: status.get(key, {}) for key in ("receivers", "processors", "exporters")}}


def cmd_reload(args: argparse.Namespace) -> int:
    from shipper.control import request
    from shipper.errors import ShipperError

    fields: dict[str, Any] = {}
    if args.config:
        fields["config"] = os.path.abspath(args.config)
    try:
        answer = request(_control_path(args), "reload", timeout=120.0, **fields)
    except ShipperError as exc:
        return _fail(str(exc))
    source = answer.get("source") or "its config"
    changes = answer.get("changes", [])
    problems = answer.get("problems", [])
    if answer.get("ok"):
        print(f"reloaded {source}" + (":" if changes else "; nothing changed"))
    elif changes:
        print(f"reloaded {source} in part:")
    for line in changes:
        print(f"  {line}")
    if not answer.get("ok"):
        if not changes:
            print("reload refused; the running config stays:", file=sys.stderr)
        else:
            print("not applied:", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from shipper.errors import ConfigError, ShipperError
    from shipper.replay import replay, summary

    try:
        done = replay(_load(args.config), args.file, exporter=args.exporter, everyone=args.everyone,
                      progress=args.progress)
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


def _tail_filter(args: argparse.Namespace) -> Any:
    """A predicate for `shipper tail`'s filters: each option given must match (any of its values)."""
    import fnmatch

    services = set(args.service or ())
    traces = {t.lower() for t in args.trace or ()}
    kinds = set(args.kind or ())
    names = list(args.name or ())

    def keep(rec: dict[str, Any]) -> bool:
        return ((not services or rec.get("service") in services)
                and (not traces or str(rec.get("trace_id", "")).lower() in traces)
                and (not kinds or rec.get("kind", "span") in kinds)
                and (not names or any(fnmatch.fnmatchcase(str(rec.get("name", "")), g) for g in names))
                and (not args.errors or rec.get("status") == "error"))
    return keep


def cmd_tail(args: argparse.Namespace) -> int:
    import orjson

    from shipper.control import stream_tail
    from shipper.errors import ShipperError

    keep = _tail_filter(args)
    try:
        for rec in stream_tail(_control_path(args), raw=args.raw):
            if not isinstance(rec, dict) or not keep(rec):
                continue
            if args.json or (args.raw and not {"trace_id", "span_id", "name", "start_ns", "end_ns"} <= set(rec)):
                print(orjson.dumps(rec).decode(), flush=True)  # a raw record may be malformed: shown as is
            else:
                try:
                    line = _span_line(rec)
                except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
                    line = orjson.dumps(rec).decode()  # a raw record that is not a valid span
                print(line, flush=True)
    except ShipperError as exc:
        return _fail(str(exc))
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    from shipper.emit import emit_example

    return emit_example(args.service, config=args.config, control=args.control, wait=args.wait,
                        timeout=args.timeout)


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
