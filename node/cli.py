"""The ``pouw`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from chain.address import HRP_BY_NETWORK, AddressError, decode_address
from chain.datadir import DatadirError
from chain.network import NETWORKS, NetworkError, load_network
from chain.storage_errors import StorageError
from node.config import MAX_PORT, VERSION, NodeConfig, default_datadir, network_dir, port_after_rpc
from node.miner_cli import add_miner_parser
from node.settings_file import (
    BY_KEY,
    Bounds,
    ConfigError,
    Resolved,
    add_node_options,
    bounded,
    resolve,
    show,
)
from wallet.cli import add_wallet_parser, say_failure, setup_logging
from wallet.job_cli import add_job_parser

log = logging.getLogger("pouw")

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell convention (128 + SIGINT)
# `pouw rpc` waits as long as a long poll may (waitfornewblock 0 waits for ever); Ctrl-C
# stops it. Other methods answer within seconds on a sound node: a node (or anything
# else on that port) that takes a call and never answers is given up after 5 minutes.
RPC_COMMAND_TIMEOUT_S = 24 * 3600.0
RPC_CALL_TIMEOUT_S = 300.0
LONG_WAIT_METHODS = frozenset({"waitfornewblock", "waitforjob", "getblocktemplate"})

# The settings only the node's own miner reads (node/service.py): without --mine they
# do nothing, which the node says at start rather than ignore them silently.
MINE_ONLY = (
    "miner_address",
    "engine",
    "max_blocks",
    "market",
    "miner_wallet",
    "min_bounty_per_mac",
)
# A client dials a real port: 0 ("any free port") only means something to a listener.
CLIENT_PORT = Bounds(1, MAX_PORT, "leave it out for the network's RPC port")
# What a bind address may be, for the messages about a bad one.
BIND_HINT = "127.0.0.1: this machine only; 0.0.0.0: every interface"


class UsageError(Exception):
    """A setting is wrong (file or flags); the message says which and where."""


class PortInUseError(UsageError):
    """A listener's port is taken by another program; exit 1 like the other OS faults."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--network", choices=NETWORKS, default="devnet")
    parser.add_argument(
        "--datadir", type=Path, default=None, help="data folder (default ~/.pouw or $POUW_DATADIR)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pouw", description="pouw node: proof of useful work")
    parser.add_argument("--version", action="version", version=f"pouw {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a datadir and write the genesis block")
    _common(init)
    init.add_argument("--genesis-file", type=Path, help="genesis file of a private network")
    node = sub.add_parser("node", help="run a full node")
    add_node_options(node)
    config = sub.add_parser("config", help="the node's configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show_cmd = config_sub.add_parser(
        "show", help="print the effective configuration (flags over file over defaults)"
    )
    add_node_options(show_cmd)
    show_cmd.set_defaults(handler=cmd_config_show)
    rpc = sub.add_parser("rpc", help="call a JSON-RPC method of a running node")
    _common(rpc)
    rpc.add_argument(
        "--rpc-port", type=bounded(int, CLIENT_PORT), help="JSON-RPC port (default: the network's)"
    )
    rpc.add_argument("--rpc-host", default=None, help="the node's host (default 127.0.0.1)")
    rpc.add_argument(
        "--rpc", metavar="URL",
        help="the node's RPC URL (http://HOST:PORT), as the wallet, job and miner commands "
        "take it; instead of --rpc-host/--rpc-port",
    )  # fmt: skip
    rpc.add_argument("--rpc-user", help="with --rpc-password: instead of the node's cookie")
    rpc.add_argument("--rpc-password")
    rpc.add_argument("method")
    rpc.add_argument("params", nargs="*", default=[], help="each a JSON value, else a string")
    rpc.set_defaults(handler=cmd_rpc)
    init.set_defaults(handler=cmd_init)
    node.set_defaults(handler=cmd_node)
    add_wallet_parser(sub)
    add_miner_parser(sub)
    add_job_parser(sub)
    return parser


def cmd_init(args: argparse.Namespace) -> int:
    from chain.chainstate import ChainState
    from chain.storage import open_chain

    network = load_network(args.network, args.genesis_file)
    path = network_dir(args.datadir or default_datadir(), network.name)
    db = open_chain(path, network=network.name)
    try:
        chain = ChainState(db, network)
        print(f"{network.name} datadir ready at {path}")
        print(f"genesis {chain.genesis.hash.hex()}, tip height {chain.tip.height}")
    finally:
        db.close()
    return 0


def node_config(args: argparse.Namespace) -> NodeConfig:
    return resolved_config(args).config


def resolved_config(args: argparse.Namespace) -> Resolved:
    try:
        return resolve(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


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


def cmd_config_show(args: argparse.Namespace) -> int:
    try:
        resolved = resolve(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    config = resolved.config
    try:  # the ports an unset key stands for, as the node would pick them
        network = load_network(config.network, config.genesis_file)
        every = replace(config, listen=True, rpc=True, blobs=True, metrics=True)
        ports = {lis.port_key: lis.port for lis in listeners(
            every, network.p2p_port, network.rpc_port)}  # fmt: skip
    except NetworkError:  # (the node says why at its start)
        ports = {}
    print(show(resolved, ports))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from node.logs import DEBUG_LOG, setup_logging
    from node.service import Node

    resolved = resolved_config(args)
    config = resolved.config
    root = logging.getLogger()
    for handler in list(root.handlers):  # the plain handler of main(); ours replace it
        root.removeHandler(handler)
    setup_logging(
        config.log_level, config.log_format, config.debug,
        config.network_dir / DEBUG_LOG if config.log_file else None, config.log_max_mb,
    )  # fmt: skip
    # A log file that cannot be written (a full disk) must not print tracebacks.
    logging.raiseExceptions = False
    if config.config_file is not None:
        log.info("settings from %s", config.config_file)
    check_mining(resolved)
    node = Node(config)  # locks the datadir first: a second node is told that, not ports
    try:
        check_listeners(resolved, node.network.p2p_port, node.network.rpc_port)
        asyncio.run(node.run())
    finally:
        node.close()
    exit_after_shutdown(0)


def check_mining(resolved: Resolved) -> None:
    """Before anything opens: warn of miner settings without --mine; with it, refuse a
    bad --miner-address, an --engine cupy that cannot run, or a bad CPU path."""
    config = resolved.config
    if not config.mine:
        ignored = [setting(resolved, k) for k in MINE_ONLY if resolved.sources[k] != "default"]
        if ignored:
            verb = "only applies" if len(ignored) == 1 else "only apply"
            log.warning("%s %s with --mine (or mine = true): ignored", ", ".join(ignored), verb)
        return
    if config.miner_address is not None:
        hrp = HRP_BY_NETWORK[config.network]
        try:
            decode_address(config.miner_address, hrp)
        except AddressError as exc:
            raise UsageError(
                f"{given(resolved, 'miner_address', config.miner_address)}: not a "
                f"{config.network} address ({exc}); a {config.network} address looks like "
                f"{hrp}1...; `pouw wallet address --network {config.network}` prints your "
                f"wallet's (`pouw wallet create --network {config.network}` makes one)"
            ) from None
    from compute.int_tile import cpu_path_problem
    from compute.select import EngineUnavailableError, check_engine

    try:
        check_engine(config.engine)
    except EngineUnavailableError as exc:
        raise UsageError(engine_message(exc, given(resolved, "engine", config.engine))) from None
    problem = cpu_path_problem(cpu_mines=cpu_engine_mines(config.engine))
    if problem is not None:
        raise UsageError(problem)


def engine_message(exc: Exception, flag: str = "--engine cupy") -> str:
    """One line for an engine that cannot run: why, and the two ways on."""
    return (
        f"{flag}: {exc}; or mine on the CPU with --engine numpy (or leave --engine out: "
        "the node then uses CuPy where it can, else NumPy)"
    )


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
    if config.listen:
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


def _share_port(a: str, b: str) -> bool:
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
        if other is not None and _share_port(other.host, lis.host):
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


def cpu_engine_mines(engine: str | None) -> bool:
    """Whether --mine with this --engine mines on the CPU (auto: where no GPU is usable,
    by the probe the node's own choice makes again later, quickly, CUDA being up)."""
    if engine is not None:
        return engine == "numpy"
    from compute.select import gpu_usable

    return not gpu_usable()[0]


def exit_after_shutdown(code: int) -> NoReturn:
    """End the process once the node has closed its database and flushed its blobs:
    the interpreter's own teardown would add about 0.3 s to every stop (unloading
    Numba's compiled kernels) and would wait for a filler product still running on a
    worker thread (seconds on a mainnet CPU), and neither keeps anything of ours."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_rpc(args: argparse.Namespace) -> int:
    """Cookie auth from --datadir, like bitcoin-cli; prints the result as JSON."""
    import json

    from wallet.rpc import (
        METHOD_NOT_FOUND,
        RpcClient,
        RpcConnectionError,
        RpcError,
        check_node_url,
        local_port,
    )

    params = []
    for text in args.params:
        try:
            value = json.loads(text)
        except ValueError as exc:
            if text.lstrip()[:1] in ("[", "{", '"'):  # meant as JSON: not sent as a string
                raise UsageError(f"parameter {text!r} is not valid JSON ({exc})") from None
            value = text
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise UsageError(
                f"parameter {text!r} holds a number that is not finite (JSON has none)"
            ) from None
        params.append(value)
    datadir = args.datadir or default_datadir()
    timeout = RPC_COMMAND_TIMEOUT_S if args.method in LONG_WAIT_METHODS else RPC_CALL_TIMEOUT_S
    if args.rpc is not None and (args.rpc_host is not None or args.rpc_port is not None):
        raise UsageError("--rpc is the whole URL: give it, or --rpc-host/--rpc-port, not both")
    try:
        rpc_url = None if args.rpc is None else check_node_url(args.rpc)
    except RpcConnectionError as exc:  # not a URL at all: a usage error
        raise UsageError(str(exc)) from None
    rpc_host = "127.0.0.1" if args.rpc_host is None else args.rpc_host
    host = rpc_host.strip("[]")
    if not host or any(c in host for c in "/@ []") or host.count(":") == 1:
        raise UsageError(
            f"--rpc-host {rpc_host!r} is not a host: give a name or an address "
            "(127.0.0.1, ::1, node.example), and the port with --rpc-port"
        )
    if (args.rpc_user is None) != (args.rpc_password is None):
        raise UsageError("--rpc-user and --rpc-password go together (or neither: the cookie)")
    try:
        if rpc_url is not None:  # the cookie of --datadir unless --rpc-user is given
            cookie_dir = datadir if args.rpc_user is None else None
            client = RpcClient.from_options(
                rpc_url, args.network, cookie_dir, args.rpc_user,
                args.rpc_password, timeout=timeout,
            )  # fmt: skip
        elif args.rpc_user is not None:
            port = args.rpc_port or local_port(
                datadir, args.network, load_network(args.network).rpc_port
            )
            url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
            client = RpcClient(url, args.rpc_user, args.rpc_password, timeout=timeout)
        else:
            client = RpcClient.from_datadir(
                datadir, args.network, args.rpc_port, host, timeout=timeout
            )
    except RpcConnectionError as exc:  # no readable cookie: the node is down (or elsewhere)
        log.error("%s", exc)
        return EXIT_FAILURE  # (as a node that does not answer, and as `pouw wallet`)
    try:
        result = client.call(args.method, *params)
    except RpcError as exc:
        hint = "\n(`pouw rpc help` lists the methods)" if exc.code == METHOD_NOT_FOUND else ""
        print(f"error code: {exc.code}\nerror message:\n{exc.message}{hint}", file=sys.stderr)
        return EXIT_FAILURE
    except RpcConnectionError as exc:
        log.error("cannot reach the node's RPC: %s", exc)
        return EXIT_FAILURE
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: the file, the cause, what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full writing{where} ({cause}): free space on that filesystem and start again"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied on{where} ({cause}): give the user running pouw access to it, "
            "or pass another --datadir"
        )
    if isinstance(exc, socket.gaierror):  # a listener's address (not a file) unresolved
        return (
            f"cannot resolve a listen address ({cause}): fix --p2p-bind, --rpc-bind, "
            f"--blob-bind or --metrics-bind (or that key in pouw.toml): {BIND_HINT}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen: {cause}; that address is not one of this machine's: fix "
            f"--p2p-bind, --rpc-bind, --blob-bind or --metrics-bind ({BIND_HINT})"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen: {cause}; another program (or another node) has that port: stop "
            "it, or pick other ports (--p2p-port, --rpc-port, --blob-port, --metrics-port)"
        )
    return f"cannot use{where}: {cause}; check that file and its folder, then start again"


def _tag_commands(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser as the default ``command_parser`` of its arguments,
    the deepest winning: an option that command does not take is reported with that
    command's usage (`pouw wallet balance: error: ...`), not the top level's."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                sub.set_defaults(command_parser=sub)
                _tag_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _tag_commands(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        words = list(sys.argv[1:] if argv is None else argv)
        before_command = args.command in words and words.index(unknown[0]) < words.index(
            args.command
        )  # (a top-level option: the top level's usage)
        where = parser if before_command else getattr(args, "command_parser", parser)
        where.error(f"unrecognized arguments: {' '.join(unknown)}")
    setup_logging(getattr(args, "log_level", "info"))

    def fail(message: str, exc: BaseException) -> None:  # --json: one JSON line instead
        if getattr(args, "json", False):
            say_failure(args, message, exc)
        else:
            log.error("%s", message)

    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the exit's flush
        return code
    except PortInUseError as exc:  # the machine's state, not a wrong setting: as OSError
        fail(str(exc), exc)
        return EXIT_FAILURE
    except UsageError as exc:
        fail(str(exc), exc)
        return EXIT_USAGE
    except (NetworkError, AddressError, StorageError, DatadirError) as exc:
        fail(str(exc), exc)
        return EXIT_FAILURE
    except BrokenPipeError:  # stdout closed early (`| head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # exit's flush too
        return EXIT_FAILURE
    except OSError as exc:  # a file of the datadir: full disk, permissions, ...
        fail(os_error_message(exc), exc)
        return EXIT_FAILURE
    except KeyboardInterrupt as exc:
        # Ctrl-C in a command that waits (`pouw job result --wait`, `pouw rpc`). A running
        # `pouw node` stops on its own signal handler instead, and exits from cmd_node.
        say_failure(args, "interrupted", exc)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: say what failed, not a traceback
        # imported here: a wallet or miner command's start skips the chain's modules
        from chain.chainstate import ChainStateError
        from compute.select import EngineUnavailableError
        from node.service import NodeError

        if isinstance(exc, EngineUnavailableError):  # checked at start; this is a backstop
            fail(engine_message(exc), exc)
            return EXIT_USAGE

        if isinstance(exc, ChainStateError):
            fail(str(exc), exc)
            return EXIT_FAILURE
        if isinstance(exc, NodeError):
            fail(str(exc), exc)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
