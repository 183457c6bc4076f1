"""The node's listening servers (P2P, JSON-RPC, blobs, metrics), checked before the
node starts: each address resolved and bound once, so that a bad bind address or a
taken port is reported with the setting that gave it, before ``node up``."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from node.config import MAX_PORT, NodeConfig, port_after_rpc
from node.settings_file import BY_KEY, Resolved
from node.usage import PortInUseError, UsageError, given

# What a bind address may be, for the messages about a bad one.
BIND_HINT = "127.0.0.1: this machine only; 0.0.0.0: every interface"


@dataclass(frozen=True)
class Listener:
    """A server the node will start, where the operator's settings put it."""

    what: str  # "P2P", "JSON-RPC", ...
    bind_key: str  # the setting that gave the address
    port_key: str  # the setting of the port (or whose default it is)
    host: str
    port: int


def listeners(config: NodeConfig, p2p_port: int, rpc_port: int) -> list[Listener]:
    """The node's listening servers and their addresses, each picked as its service
    picks it (p2p/service.py, node/rpc/service.py, node/blobs.py, node/metrics.py) from
    the settings and the network's default ports."""
    from node.blobs import DEFAULT_BLOB_PORT_OFFSET
    from node.metrics import METRICS_PORT_OFFSET

    out: list[Listener] = []
    if config.p2p and config.listen:
        port = config.p2p_port or p2p_port
        out.append(Listener("P2P", "p2p_bind", "p2p_port", config.p2p_bind, port))
    if config.rpc:
        port = rpc_port if config.rpc_port is None else config.rpc_port
        out.append(Listener("JSON-RPC", "rpc_bind", "rpc_port", config.rpc_bind, port))
        if config.blobs:
            port = config.blob_port
            if port is None:
                port = port_after_rpc(config.rpc_port, rpc_port, DEFAULT_BLOB_PORT_OFFSET)
            bind_key = "rpc_bind" if config.blob_bind is None else "blob_bind"
            host = config.blob_bind or config.rpc_bind
            out.append(Listener("blob", bind_key, "blob_port", host, port))
    if config.metrics:
        port = config.metrics_port
        if port is None:
            port = port_after_rpc(config.rpc_port, rpc_port, METRICS_PORT_OFFSET)
        out.append(Listener("metrics", "metrics_bind", "metrics_port", config.metrics_bind, port))
    return out


def share_port(a: str, b: str) -> bool:
    """Whether servers bound to hosts ``a`` and ``b`` would clash on one port: the same
    host, "::" or "" (every address, both families here), or "0.0.0.0" beside an IPv4
    host. (Names such as localhost are left to the bind check.)"""
    if a == b or {a, b} & {"::", ""}:
        return True
    return "0.0.0.0" in (a, b) and ":" not in (a + b).replace("0.0.0.0", "")


def check_listeners(resolved: Resolved, p2p_port: int, rpc_port: int) -> None:
    """Resolve and bind (then release) every listener's address before the node starts,
    so that a bad --*-bind or a taken port is reported with its setting, before
    ``node up``; UsageError (PortInUseError for a taken port) says which and what to do."""
    taken: dict[int, Listener] = {}
    for lis in listeners(resolved.config, p2p_port, rpc_port):
        where = given(resolved, lis.bind_key, lis.host)
        port = given(resolved, lis.port_key, lis.port)
        other = taken.get(lis.port)
        if other is not None and share_port(other.host, lis.host):
            raise UsageError(
                f"{port}: the {lis.what} server would share it with the {other.what} "
                f"server ({given(resolved, other.port_key, other.port)}): give each its own"
            )
        if lis.port:
            taken[lis.port] = lis
        if lis.port > MAX_PORT:  # only a default can be: the RPC port + 2 or + 3
            raise UsageError(
                f"{port}: the RPC port + {lis.port - (resolved.config.rpc_port or rpc_port)} "
                f"is no port (at most {MAX_PORT}): pass "
                f"{BY_KEY[lis.port_key].flags} too, or a lower --rpc-port"
            )
        try:
            try_bind(lis.host, lis.port)
        except socket.gaierror as exc:
            raise UsageError(
                f"{where}: cannot resolve that {lis.what} address ({exc.strerror or exc}): "
                f"give an address or host name of this machine ({BIND_HINT})"
            ) from None
        except OSError as exc:
            cause = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"{port}: the {lis.what} port is in use on {lis.host} ({cause}): another "
                    f"program (or another node) has it: stop it, or pick another "
                    f"{BY_KEY[lis.port_key].flags}"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(
                    f"{where}: not an address of this machine ({cause}): give one of its "
                    f"addresses for the {lis.what} server ({BIND_HINT})"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise UsageError(
                    f"{port}: not allowed to listen on it ({cause}): ports below 1024 need "
                    "privileges; pick one from 1024 up"
                ) from None
            raise UsageError(
                f"{where}, {port}: the {lis.what} server cannot listen there ({cause}): "
                "fix those settings"
            ) from None


def try_bind(host: str, port: int) -> None:
    """Bind each address ``host`` resolves to, as asyncio's create_server does (reused
    address, IPv6 only on IPv6 sockets), and release it; OSError as bind() raises it."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:  # a family this host lacks: create_server skips it too
            continue
        with sock:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
