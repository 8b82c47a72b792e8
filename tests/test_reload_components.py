"""`shipper reload` applies exporters, receivers, settings and metrics without a restart, losing nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request

import orjson
import yaml
from support import Daemon, wait_for

from shipper.testing import make_span, read_ndjson, send_seqpacket

APP = """
import sys, time
import shipper
shipper.configure(service="reload-app", socket=sys.argv[1], spool_dir=sys.argv[2])
for i in range(int(sys.argv[3])):
    with shipper.span(f"span-{i}"):
        pass
    if i % 50 == 0:
        time.sleep(0.01)
print(shipper.statistics()["sent"], shipper.statistics()["spooled"], flush=True)
"""


def _reload(daemon: Daemon, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipper", "reload", "--control", daemon.control, *extra],
                          capture_output=True, text=True, timeout=60, env=daemon.env)


def _write(daemon: Daemon, config: dict) -> None:
    daemon.config = config
    daemon.config_path.write_text(yaml.safe_dump(config))


def _names(path) -> set[str]:
    return {r["name"] for r in read_ndjson(path)}


def _under_load(daemon: Daemon, change, total: int = 4000) -> subprocess.CompletedProcess[str]:
    """Run an app sending `total` spans through the shim; reload with `change(config)` once 300 are in."""
    app = subprocess.Popen([sys.executable, "-c", APP, daemon.socket, daemon.spool, str(total)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env)
    try:
        wait_for(lambda: daemon.status()["pipeline"].get("received", 0) >= 300, timeout=30,
                 message="the app's first spans")
        config = dict(daemon.config)
        change(config)
        _write(daemon, config)
        done = _reload(daemon)
        _, err = app.communicate(timeout=120)
        assert app.returncode == 0, err
    finally:
        if app.poll() is None:
            app.kill()
    wanted = {f"span-{i}" for i in range(total)}
    wait_for(lambda: _names(daemon.output) >= wanted, timeout=60, message="every span in the file output")
    return done


def test_exporters_swap_under_load_and_no_span_is_lost(daemon_factory) -> None:
    """An app sends through the shim while a reload adds an exporter and changes another: every span
    reaches the changed one, the added one gets the later ones, and the output names each change."""
    daemon = daemon_factory()
    daemon.config["exporters"]["file"]["batch"] = {"max_delay": "50ms"}
    daemon.set_config().start()
    second = daemon.root / "second.ndjson"

    def change(config: dict) -> None:
        config["exporters"] = {
            "file": {"type": "file", "max_files": 3, "batch": {"max_delay": "20ms"}},  # changed
            "second": {"type": "file", "path": str(second), "batch": {"max_delay": "20ms"}},  # added
        }
    done = _under_load(daemon, change)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "exporter second: added" in done.stdout
    assert "exporter file: changed; drains its queue into the new settings" in done.stdout
    later = wait_for(lambda: "span-3999" in _names(second) and _names(second), timeout=30,
                     message="the last spans in the added exporter")
    assert later <= {f"span-{i}" for i in range(4000)}
    status = daemon.status()
    assert set(status["exporters"]) == {"file", "second"} and status["dropped"] == {}
    assert daemon.stop() == 0


def test_a_changed_socket_receiver_binds_again_under_load_and_no_span_is_lost(daemon_factory) -> None:
    """A reload that changes the socket receiver rebinds it while an app sends: the old one is read out
    (drain()), the app spools for that moment, and every span arrives."""
    daemon = daemon_factory()
    daemon.config["exporters"]["file"]["batch"] = {"max_delay": "50ms"}
    daemon.set_config().start()

    def change(config: dict) -> None:
        config["receivers"] = dict(config["receivers"])
        config["receivers"]["socket"] = {"type": "unix_socket", "path": daemon.socket,
                                         "max_message_bytes": 2 * 1024 * 1024}
    done = _under_load(daemon, change)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"receiver socket: changed; bound again ({daemon.socket})" in done.stdout
    status = daemon.status()
    assert status["receivers"]["spool"].get("received", 0) > 0  # the app spooled during the swap
    assert status["dropped"] == {}
    assert daemon.stop() == 0


def test_a_removed_exporter_keeps_its_queue_on_disk_and_comes_back_with_it(daemon_factory) -> None:
    """Removing an exporter whose backend is down keeps its queue and names it; adding it back sends it."""
    daemon = daemon_factory()
    daemon.config["exporters"]["down"] = {"type": "otlp_http", "endpoint": "http://127.0.0.1:9",
                                          "retry": {"initial_interval": "50ms", "max_interval": "100ms"},
                                          "batch": {"max_delay": "20ms"}}
    daemon.set_config().start()
    subprocess.run([sys.executable, "-m", "shipper", "emit", "--no-wait", "--control", daemon.control],
                   env=daemon.env, check=True, capture_output=True, timeout=60)
    wait_for(lambda: daemon.status()["exporters"]["down"]["queue_items"] >= 1, message="queued for `down`")
    config = dict(daemon.config)
    config["exporters"] = {"file": daemon.config["exporters"]["file"]}
    _write(daemon, config)
    done = _reload(daemon)
    assert done.returncode == 0, done.stderr
    queue = daemon.state / "queues" / "down"
    assert f"exporter down: removed; its queue stays on disk at {queue}" in done.stdout
    assert "down" not in daemon.status()["exporters"]
    assert any(queue.iterdir())
    sink = daemon.root / "came-back.ndjson"
    config["exporters"] = {**config["exporters"], "down": {"type": "file", "path": str(sink),
                                                            "batch": {"max_delay": "20ms"}}}
    _write(daemon, config)
    back = _reload(daemon)
    assert back.returncode == 0 and "exporter down: added" in back.stdout, back
    records = wait_for(lambda: len(read_ndjson(sink)) >= 5 and read_ndjson(sink), timeout=30,
                       message="the kept queue delivered by the exporter that came back")
    assert {r["service"] for r in records} == {"shipper-emit"}
    assert daemon.stop() == 0


def test_settings_and_metrics_apply_and_restart_only_keys_exit_1(daemon_factory) -> None:
    """batch, log_format and metrics apply at once; a changed state_dir is named, and the exit is 1."""
    daemon = daemon_factory().start()
    config = dict(daemon.config, batch={"max_delay": "5ms"}, log_format="json", metrics={"endpoint": "127.0.0.1:0"})
    _write(daemon, config)
    done = _reload(daemon)
    assert done.returncode == 0, done.stderr
    assert "metrics: served on http://127.0.0.1:" in done.stdout and "format json" in done.stdout
    url = next(word for word in done.stdout.split() if word.startswith("http://127.0.0.1:"))
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert b"shipper_received_total" in answer.read()
    subprocess.run([sys.executable, "-m", "shipper", "status", "--control", daemon.control], env=daemon.env,
                   check=True, capture_output=True, timeout=60)
    _write(daemon, dict(config, state_dir=str(daemon.root / "elsewhere"), processors=[{"type": "redact"}]))
    partial = _reload(daemon)
    assert partial.returncode == 1
    assert "processors: 0 -> 1 shared (redact)" in partial.stdout
    assert "state_dir: changed from" in partial.stderr and "takes a restart" in partial.stderr
    assert not os.path.exists(daemon.root / "elsewhere")
    after = daemon.log().split('"message": "Reloaded', 1)[1].splitlines()[1:]  # lines after the switch to JSON
    entries = [orjson.loads(line) for line in after if line.strip()]
    assert any(e["level"] == "error" and e["message"].startswith("Reloaded") and "state_dir" in e["message"]
               for e in entries), after
    assert daemon.stop() == 0


def test_reload_c_another_file_is_refused(daemon_factory, tmp_path) -> None:
    """`shipper reload -c FILE` with a FILE the daemon does not run is refused and changes nothing."""
    daemon = daemon_factory().start()
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(dict(daemon.config, processors=[{"type": "sample", "rate": 0.0}])))
    refused = _reload(daemon, "-c", str(other))
    assert refused.returncode == 1 and "reloaded" not in refused.stdout
    assert f"reloads only from it, not from {other}" in refused.stderr
    same = _reload(daemon, "-c", str(daemon.config_path))
    assert same.returncode == 0 and same.stdout.startswith(f"reloaded {daemon.config_path}; nothing changed")
    assert daemon.stop() == 0


def test_a_socket_handed_over_by_systemd_is_not_rebound(daemon_factory) -> None:
    """Socket activation: a change to that receiver is refused (it takes a restart), the rest applies, and
    the inherited socket keeps taking spans."""
    daemon = daemon_factory().start_socket_activated()
    config = dict(daemon.config, processors=[{"type": "redact"}])
    config["receivers"] = dict(config["receivers"])
    config["receivers"]["socket"] = {"type": "unix_socket", "path": daemon.socket, "max_message_bytes": 65536}
    _write(daemon, config)
    done = _reload(daemon)
    assert done.returncode == 1
    assert "processors: 0 -> 1 shared (redact)" in done.stdout
    assert "receiver socket: its socket is handed over by systemd" in done.stderr
    again = _reload(daemon)  # still not applied, and still said so
    assert again.returncode == 1 and "handed over by systemd" in again.stderr
    assert daemon.status()["receivers"]["socket"]["inherited"] is True
    send_seqpacket(daemon.socket, [orjson.dumps(make_span(9, i)) for i in range(1, 4)])
    wait_for(lambda: len(daemon.records()) == 3, message="spans through the inherited socket")
    assert daemon.stop() == 0


def test_a_component_that_cannot_open_is_named_with_its_line_and_the_rest_applies(daemon_factory) -> None:
    """A receiver added on a port that is taken: not added, the problem names file:line:column, exit 1;
    the exporter added in the same reload runs."""
    daemon = daemon_factory().start()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        extra = daemon.root / "extra.ndjson"
        config = dict(daemon.config)
        config["receivers"] = {**config["receivers"], "web": {"type": "otlp_http", "endpoint": f"127.0.0.1:{port}"}}
        config["exporters"] = {**config["exporters"], "extra": {"type": "file", "path": str(extra)}}
        _write(daemon, config)
        done = _reload(daemon)
    finally:
        taken.close()
    assert done.returncode == 1
    assert "exporter extra: added" in done.stdout
    line = next(n for n, text in enumerate(daemon.config_path.read_text().splitlines(), 1) if text.strip() == "web:")
    assert re.search(rf"receiver web: not added, it cannot open: {re.escape(str(daemon.config_path))}:{line + 1}:\d+: "
                     rf"receivers\.web\.endpoint: cannot listen on 127\.0\.0\.1:{port}", done.stderr), done.stderr
    status = daemon.status()
    assert "web" not in status["receivers"] and "extra" in status["exporters"]
    assert daemon.stop() == 0
