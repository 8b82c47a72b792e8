"""Start-time checks of what the daemon trusts: the spool directories' permissions and the config file's.

- A spool directory is where any app of the `shipper` group drops records, and where the daemon deletes
  finished files. It must be a directory the daemon can read, write and search. It must not be writable
  by everyone without the sticky bit (anyone could delete or swap others' files): that is an error. The
  layout the packaged tmpfiles.d entry creates is `3770 shipper:shipper` (setgid: files stay in the group;
  sticky: an app cannot delete another app's files; the daemon owns the directory, so it can).
- A config file that holds a secret literally (not through `${VAR}`) and that every user can read is
  warned about, with how to fix it.
- `secrets_in(config)` lists every `Secret` of a config by key path; `remember()` registers their values
  and `redact()` replaces them by `***` in any text or JSON-like value: the log formatter and the control
  socket's answers (`status`, `reload`) go through it, so a backend that echoes a key back in an error
  body cannot carry it into the journal or `shipper status`. For `Scheme token` values (an
  `Authorization` header) the token alone is registered too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipper.errors import ConfigError
from shipper.values import Secret

if TYPE_CHECKING:
    from shipper.config import Config

__all__ = ["check_config_file", "check_spool_dir", "check_startup", "redact", "remember", "secrets_in"]

log = logging.getLogger("shipper.security")

MIN_SECRET_LENGTH = 4
"""Shorter values are not redacted: replacing every `ab` would garble the text and hide nothing."""
_known: list[str] = []


def remember(secrets: Iterable[str]) -> None:
    """Redact these values (and the token of `Scheme token` values) from now on, in this process."""
    known = set(_known)
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            known.add(secret)
        *_, token = secret.split() or [""]
        if token != secret and len(token) >= 8:
            known.add(token)
    _known[:] = sorted(known, key=len, reverse=True)  # longest first: no partial leftovers


def redact(value: Any) -> Any:
    """`value` with every remembered secret replaced by `***` (strings, and inside dicts and lists)."""
    if isinstance(value, str):
        for secret in _known:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


def _walk(value: Any, path: str) -> Iterator[tuple[str, Secret]]:
    if isinstance(value, Secret):
        yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


def secrets_in(config: Config) -> list[tuple[str, Secret]]:
    """Every non-empty `Secret` of `config`, with its key path (`exporters.langfuse.secret_key`)."""
    found: list[tuple[str, Secret]] = []
    for section, specs in (("receivers", config.receivers), ("exporters", config.exporters)):
        for spec in specs:
            found.extend(_walk(spec.config, f"{section}.{spec.name}"))
            for i, proc in enumerate(spec.processors):
                found.extend(_walk(proc.config, f"{section}.{spec.name}.processors[{i}]"))
    for i, spec in enumerate(config.processors):
        found.extend(_walk(spec.config, f"processors[{i}]"))
    found.extend(_walk(config.settings, ""))
    return [(path, secret) for path, secret in found if secret]


def check_config_file(path: str | os.PathLike[str], config: Config) -> list[str]:
    """Warnings about the config file at `path`: readable by every user while holding a secret."""
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    if not mode & stat.S_IROTH:
        return []
    literal = [key for key, secret in secrets_in(config) if secret.reveal() in text]
    if not literal:
        return []
    return [f"{path}: every user on this machine can read this file (mode {stat.S_IMODE(mode):04o}) and it "
            f"holds secrets ({', '.join(literal)}). Run `chmod o-r {path}` (root:shipper 0640 is enough for "
            "the service), or move the secrets into environment variables written as ${VAR} in the config."]


def check_spool_dir(directory: str, where: str) -> list[str]:
    """Problems with a spool directory (`where` is its key path); a missing one must be creatable."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(directory))
        while parent != "/" and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if os.access(parent, os.W_OK | os.X_OK):
            return []
        return [f"{where}: {directory} does not exist and user {_whoami()} cannot create it in {parent}; "
                "create it (`systemd-tmpfiles --create` with the packaged shipper.conf makes it 3770 "
                "shipper:shipper) or choose another dir"]
    except OSError as exc:
        return [f"{where}: cannot look at {directory}: {exc.strerror}"]
    if not stat.S_ISDIR(st.st_mode):
        return [f"{where}: {directory} is not a directory; remove it or choose another dir"]
    problems = []
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        problems.append(f"{where}: user {_whoami()} cannot read, write and enter {directory} (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid} gid {st.st_gid}); the daemon "
                        f"must own it: `chown shipper:shipper {directory} && chmod 3770 {directory}`")
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        problems.append(f"{where}: {directory} is writable by every user without the sticky bit (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}), so anyone could delete or replace others' spool "
                        f"files; run `chmod 3770 {directory}` and add the apps' users to the shipper group")
    return problems


def _whoami() -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    except (KeyError, ImportError):
        return f"uid {os.geteuid()}"


def check_startup(config: Config, path: str | os.PathLike[str] | None) -> None:
    """Log warnings and raise ConfigError for what makes the daemon unsafe or unable to start."""
    if path is not None:
        for warning in check_config_file(path, config):
            log.warning("%s", warning)
    problems: list[str] = []
    for spec in config.receivers:
        if spec.type == "spool":
            problems.extend(check_spool_dir(str(spec.config.dir), f"receivers.{spec.name}.dir"))
    if problems:
        raise ConfigError([config.locate(p) for p in problems])
