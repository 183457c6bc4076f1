"""The ``pouw`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from chain.address import AddressError
from chain.chainstate import ChainStateError
from chain.network import NETWORKS, NetworkError, load_network
from chain.storage import StorageError
from node.config import NodeConfig, default_datadir, network_dir
from node.miner_cli import add_miner_parser
from wallet.cli import add_wallet_parser

log = logging.getLogger("pouw")

EXIT_USAGE = 2
EXIT_FAILURE = 1


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
    _common(node)
    node.add_argument("--mine", action="store_true", help="mine filler products on this node")
    node.add_argument("--miner-address", help="address that receives mined rewards")
    node.add_argument("--engine", choices=["numpy", "cupy"], help="mining engine (default: auto)")
    node.add_argument("--reindex", action="store_true", help="rebuild state from stored blocks")
    node.add_argument("--max-blocks", type=int, help="stop after mining this many blocks")
    node.add_argument("--genesis-file", type=Path, help="genesis file of a private network")
    node.add_argument("--nolisten", action="store_true", help="accept no inbound peers")
    node.add_argument("--p2p-bind", default="0.0.0.0", help="P2P listen address")
    node.add_argument("--p2p-port", type=int, help="P2P port (default: the network's)")
    node.add_argument(
        "--connect",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="connect only to this peer (repeatable)",
    )
    node.add_argument(
        "--addnode",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="also connect to this peer (repeatable)",
    )
    node.add_argument("--norpc", action="store_true", help="do not serve JSON-RPC")
    node.add_argument("--rpc-bind", default="127.0.0.1", help="JSON-RPC listen address")
    node.add_argument("--rpc-port", type=int, help="JSON-RPC port (default: the network's)")
    node.add_argument("--rpc-user", help="JSON-RPC user (besides the cookie file)")
    node.add_argument("--rpc-password", help="JSON-RPC password for --rpc-user")
    init.set_defaults(handler=cmd_init)
    node.set_defaults(handler=cmd_node)
    add_wallet_parser(sub)
    add_miner_parser(sub)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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


def cmd_node(args: argparse.Namespace) -> int:
    from node.service import Node

    config = NodeConfig(
        network=args.network,
        datadir=args.datadir or default_datadir(),
        mine=args.mine,
        miner_address=args.miner_address,
        engine=args.engine,
        reindex=args.reindex,
        max_blocks=args.max_blocks,
        genesis_file=args.genesis_file,
        listen=not args.nolisten,
        p2p_bind=args.p2p_bind,
        p2p_port=args.p2p_port,
        connect=tuple(args.connect),
        addnode=tuple(args.addnode),
        rpc=not args.norpc,
        rpc_bind=args.rpc_bind,
        rpc_port=args.rpc_port,
        rpc_user=args.rpc_user,
        rpc_password=args.rpc_password,
    )
    node = Node(config)
    try:
        asyncio.run(node.run())
    finally:
        node.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.handler(args))
    except (NetworkError, AddressError, ChainStateError, StorageError) as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - last resort: say what failed, not a traceback
        from node.service import NodeError

        if isinstance(exc, NodeError):
            log.error("%s", exc)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
