"""Where the socket and the spool live: one resolution shared by the shim and the daemon (docs/transports.md, Paths)."""

from __future__ import annotations

import os

__all__ = ["resolve_socket_path", "resolve_spool_dir", "resolve_state_dir"]


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _xdg_state_home() -> str:
    return os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")


def resolve_socket_path() -> str:
    """`$SHIPPER_SOCKET`, else /run/shipper, else `$XDG_RUNTIME_DIR/shipper`, else `/tmp/shipper-$UID`."""
    explicit = os.environ.get("SHIPPER_SOCKET")
    if explicit:
        return explicit
    if os.path.isdir("/run/shipper"):
        return "/run/shipper/shipper.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "shipper", "shipper.sock")
    return f"/tmp/shipper-{os.getuid()}/shipper.sock"


def resolve_spool_dir() -> str:
    """`$SHIPPER_SPOOL_DIR`, else /var/spool/shipper when writable, else `$XDG_STATE_HOME/shipper/spool`."""
    explicit = os.environ.get("SHIPPER_SPOOL_DIR")
    if explicit:
        return explicit
    if _writable_dir("/var/spool/shipper"):
        return "/var/spool/shipper"
    return os.path.join(_xdg_state_home(), "shipper", "spool")


def resolve_state_dir() -> str:
    """`$SHIPPER_STATE_DIR`, else /var/lib/shipper when writable, else `$XDG_STATE_HOME/shipper`."""
    explicit = os.environ.get("SHIPPER_STATE_DIR")
    if explicit:
        return explicit
    if _writable_dir("/var/lib/shipper"):
        return "/var/lib/shipper"
    return os.path.join(_xdg_state_home(), "shipper")
