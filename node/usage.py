"""How the ``pouw`` command line reports a wrong setting: the error types, the exit
codes, and each setting named as the operator gave it (flag or file line)."""

from __future__ import annotations

from typing import Any

from node.settings_file import BY_KEY, Resolved

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell convention (128 + SIGINT)


class UsageError(Exception):
    """A setting is wrong (file or flags); the message says which and where."""


class PortInUseError(UsageError):
    """A listener's port is taken by another program; exit 1 like the other OS faults."""


def setting(resolved: Resolved, key: str) -> str:
    """How the operator gave ``key``: its flag (also for a default), or the key and file."""
    if resolved.sources.get(key) == "file":
        return f"{key} (in {resolved.file})"
    o = BY_KEY[key]
    if o.kind is bool and o.neg_flag and getattr(resolved.config, key) is False:
        return o.neg_flag
    return o.flags


def given(resolved: Resolved, key: str, value: Any) -> str:
    """A setting with its value, as the operator wrote it: ``--rpc-port 70000``, or
    ``rpc_port = 70000 (in FILE)``; a default says so."""
    source = resolved.sources.get(key, "default")
    if source == "file":
        return f"{key} = {value!r} (in {resolved.file})"
    return f"{BY_KEY[key].flags} {value}" + (" (the default)" if source == "default" else "")
