"""A sender the daemon refuses (issue 10, item 9): nothing it sends is counted `sent` and lost; it spools
what the daemon did not take. Real daemon subprocesses and real client processes, under this uid (left
out of `allowed_uids`) and under another uid (setpriv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import Daemon, wait_for, wait_records

from shipper.testing import read_ndjson

ROOT = Path(__file__).resolve().parents[1]
REPO_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
SETPRIV = shutil.which("setpriv")

CLIENT = textwrap.dedent("""
    import json, sys, time
    import shipper
    socket_path, spool_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    shipper.configure(service="refused", socket=socket_path, spool_dir=spool_dir)
    for i in range(n):
        with shipper.span(f"c{i}"):
            pass
        if i == 0:
            time.sleep(0.3)  # the daemon has accepted (or refused) the connection by now
    print(json.dumps(shipper.statistics()), flush=True)
""")


def run_client(daemon: Daemon, n: int, *prefix: str) -> dict:
    done = subprocess.run([*prefix, sys.executable, "-c", CLIENT, daemon.socket, daemon.spool, str(n)],
                          capture_output=True, text=True, env=daemon.env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def spooled_names(daemon: Daemon) -> list[str]:
    return [r["name"] for f in sorted(Path(daemon.spool).glob("*.ndjson")) for r in read_ndjson(f)]


def socket_only(daemon: Daemon, **socket_settings) -> Daemon:
    config = daemon.default_config()
    del config["receivers"]["spool"]  # the spool is checked by hand here
    config["receivers"]["socket"].update(socket_settings)
    return daemon.set_config(**config)


def test_a_refused_sender_counts_nothing_sent_and_spools_everything(daemon_factory) -> None:
    """Item 9: with this uid and gid left out of allowed_uids/allowed_gids, the first record (sent before the
    verdict) and every later one are spooled (`refused` / `socket_unavailable`), none counted `sent`."""
    daemon = socket_only(daemon_factory(env=REPO_ENV), allowed_uids=[4242], allowed_gids=[4242]).start()
    stats = run_client(daemon, 20)
    assert stats["sent"] == 0, stats
    assert stats["spooled"] == 20 and stats["dropped"] == {}, stats
    assert stats["spooled_by_reason"] == {"refused": 20}, stats
    assert "refused by the daemon" in stats["socket_error"]
    assert sorted(spooled_names(daemon)) == sorted(f"c{i}" for i in range(20))
    wait_for(lambda: daemon.status()["receivers"]["socket"].get("refused", 0) >= 1, message="the refusal counted")
    assert daemon.records() == []
    assert daemon.stop() == 0


def test_an_accepted_sender_counts_what_the_daemon_took(daemon_factory) -> None:
    """Item 9, the other side: an allowed sender's records are all `sent`, none spooled, all delivered."""
    daemon = socket_only(daemon_factory(env=REPO_ENV), allowed_uids=[os.getuid()]).start()
    stats = run_client(daemon, 20)
    assert stats["sent"] == 20 and stats["spooled"] == 0 and stats["unconfirmed"] == 0, stats
    wait_records(daemon, 20)
    assert daemon.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to run a client "
                    "under another uid")
def test_a_sender_under_another_uid_is_refused_and_spools(daemon_factory) -> None:
    """Item 9 with real kernel credentials: a client running as uid 65534 against allowed_uids [0] spools
    every record into its own spool directory; none is counted sent, none reaches the exporter."""
    daemon = daemon_factory(env=REPO_ENV)
    os.chmod(daemon.root, 0o755)
    spool = daemon.root / "other-spool"
    spool.mkdir(mode=0o777)
    os.chmod(spool, 0o777)
    daemon.spool = str(spool)
    socket_only(daemon, mode="0666", allowed_uids=[0]).start()
    client_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    done = subprocess.run([SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", client_python, "-c", CLIENT,
                           daemon.socket, str(spool), "5"], capture_output=True, text=True, timeout=60,
                          env={**daemon.env, "HOME": "/tmp"}, cwd="/tmp")
    if done.returncode != 0 and "No module named" in done.stderr:
        pytest.skip(f"{client_python} cannot import the client shim: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["sent"] == 0 and stats["spooled"] == 5, stats
    assert "refused by the daemon" in stats["socket_error"], stats
    assert sorted(spooled_names(daemon)) == [f"c{i}" for i in range(5)]
    assert daemon.records() == []
    assert daemon.stop() == 0


def test_records_unconfirmed_at_exit_are_spooled(tmp_path: Path) -> None:
    """Item 9, at exit: against a listener that never accepts (so no verdict ever comes), a client that
    emits and exits has spooled its record at exit instead of counting it sent and leaving it to chance."""
    import socket

    from shipper.testing import short_dir

    root = Path(short_dir())
    path, spool = str(root / "s.sock"), root / "spool"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen()
    code = ("import json, shipper, sys; shipper.configure(service='exiting', socket=sys.argv[1], spool_dir=sys.argv[2])\n"
            "with shipper.span('last'): pass\n"
            "print(json.dumps(shipper.statistics()))")
    try:
        done = subprocess.run([sys.executable, "-c", code, path, str(spool)], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **REPO_ENV})
        assert done.returncode == 0, done.stderr
        stats = json.loads(done.stdout)
        assert stats["sent"] == 0 and stats["unconfirmed"] == 1, stats
        assert [r["name"] for f in spool.glob("*.ndjson") for r in read_ndjson(f)] == ["last"]
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)
