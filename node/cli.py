"""The ``pouw`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from chain.address import HRP_BY_NETWORK, AddressError, decode_address
from chain.datadir import DatadirError
from chain.network import NETWORKS, NetworkError, load_network
from chain.storage_errors import StorageError
from node.config import MAX_PORT, VERSION, NodeConfig, default_datadir, network_dir
from node.listeners import BIND_HINT, check_listeners, listeners
from node.miner_cli import add_miner_parser
from node.rpc_cli import cmd_rpc
from node.settings_file import (
    Bounds,
    ConfigError,
    Resolved,
    add_node_options,
    bounded,
    check_datadir,
    resolve,
    show,
)
from node.usage import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PortInUseError,
    UsageError,
    given,
    setting,
)
from wallet.cli import add_wallet_parser, say_failure, setup_logging
from wallet.job_cli import add_job_parser

log = logging.getLogger("pouw")

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
# The settings only P2P reads: with --nop2p they do nothing, which the node says at start.
P2P_ONLY = ("listen", "p2p_bind", "p2p_port", "connect", "addnode")
# A client dials a real port: 0 ("any free port") only means something to a listener.
CLIENT_PORT = Bounds(1, MAX_PORT, "leave it out for the network's RPC port")


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
    datadir = args.datadir or default_datadir()
    try:
        check_datadir(datadir, network.name)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    path = network_dir(datadir, network.name)
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
    import asyncio  # (the node's commands only: a wallet command never loads it)

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
    check_p2p(resolved)
    node = Node(config)  # locks the datadir first: a second node is told that, not ports
    try:
        check_listeners(resolved, node.network.p2p_port, node.network.rpc_port)
        asyncio.run(node.run())
    finally:
        node.close()
    exit_after_shutdown(0)


def check_p2p(resolved: Resolved) -> None:
    """Before anything opens: warn of P2P settings given with --nop2p (ignored)."""
    if resolved.config.p2p:
        return
    ignored = [setting(resolved, k) for k in P2P_ONLY if resolved.sources[k] != "default"]
    if ignored:
        verb = "only applies" if len(ignored) == 1 else "only apply"
        log.warning("%s %s with P2P on (no --nop2p): ignored", ", ".join(ignored), verb)


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
