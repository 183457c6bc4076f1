"""The ``pouw`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from chain.address import AddressError
from chain.datadir import DatadirError
from chain.network import NETWORKS, NetworkError, load_network
from chain.storage_errors import StorageError
from node.config import NodeConfig, default_datadir, network_dir
from node.miner_cli import add_miner_parser
from node.settings_file import ConfigError, add_node_options, resolve, show
from wallet.cli import add_wallet_parser, setup_logging
from wallet.job_cli import add_job_parser

log = logging.getLogger("pouw")

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """A setting is wrong (file or flags); the message says which and where."""


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
    rpc.add_argument("--rpc-port", type=int, help="JSON-RPC port (default: the network's)")
    rpc.add_argument("--rpc-host", default="127.0.0.1")
    rpc.add_argument("method")
    rpc.add_argument("params", nargs="*", help="each a JSON value, else taken as a string")
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
    try:
        return resolve(args).config
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def cmd_config_show(args: argparse.Namespace) -> int:
    try:
        resolved = resolve(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    print(show(resolved))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from node.logs import DEBUG_LOG, setup_logging
    from node.service import Node

    config = node_config(args)
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
    if config.mine:
        from compute.int_tile import cpu_path_problem

        problem = cpu_path_problem(cpu_mines=cpu_engine_mines(config.engine))
        if problem is not None:
            raise UsageError(problem)
    node = Node(config)
    try:
        asyncio.run(node.run())
    finally:
        node.close()
    exit_after_shutdown(0)


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

    from wallet.rpc import RpcClient, RpcConnectionError, RpcError

    params = []
    for text in args.params:
        try:
            params.append(json.loads(text))
        except ValueError:
            params.append(text)
    datadir = args.datadir or default_datadir()
    try:
        client = RpcClient.from_datadir(datadir, args.network, args.rpc_port, args.rpc_host)
    except RpcConnectionError as exc:
        raise UsageError(str(exc)) from None  # no readable cookie
    try:
        result = client.call(args.method, *params)
    except RpcError as exc:
        print(f"error code: {exc.code}\nerror message:\n{exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except RpcConnectionError as exc:
        raise UsageError(f"cannot reach the node's RPC: {exc}") from None
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
    if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return (
            f"cannot listen: {cause}; another program (or another node) has that port: stop "
            "it, or pick other ports (--p2p-port, --rpc-port, --blob-port, --metrics-port)"
        )
    return f"cannot use{where}: {cause}; check that file and its folder, then start again"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "info"))
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the exit's flush
        return code
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except (NetworkError, AddressError, StorageError, DatadirError) as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except BrokenPipeError:  # stdout closed early (`| head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # exit's flush too
        return EXIT_FAILURE
    except OSError as exc:  # a file of the datadir: full disk, permissions, ...
        log.error("%s", os_error_message(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - last resort: say what failed, not a traceback
        # imported here: a wallet or miner command's start skips the chain's modules
        from chain.chainstate import ChainStateError
        from node.service import NodeError

        if isinstance(exc, ChainStateError):
            log.error("%s", exc)
            return EXIT_FAILURE
        if isinstance(exc, NodeError):
            log.error("%s", exc)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
