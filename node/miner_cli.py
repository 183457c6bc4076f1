"""``pouw miner``: the standalone miner (node/remote_miner.py) on a node's JSON-RPC.

    pouw miner --rpc http://127.0.0.1:29332 --address dpw1... --datadir ~/.pouw
    pouw miner --rpc HOST:PORT --address ADDR --rpc-user U --rpc-password P \\
        --backend cupy --devices 0,1

Register with ``add_miner_parser(subparsers)``; run alone with ``python -m node.miner_cli``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.address import AddressError, decode_any_address
from chain.datadir import default_datadir
from chain.network import NETWORKS, Network, NetworkError, load_network
from chain.storage_keys import CHAIN_DB_DIRNAME
from node.settings_file import Bounds, bounded
from wallet.args import positive_seconds_arg, rate_arg
from wallet.cli import read_password, run_command
from wallet.keystore import WalletError
from wallet.rpc import COOKIE_NAME, RpcClient, RpcConnectionError, check_node_url, local_port

if TYPE_CHECKING:
    from node.remote_market import RemoteMarket

log = logging.getLogger("pouw.miner")

EXIT_FAILURE = 1
EXIT_USAGE = 2
# CPU worker processes at most: each holds a paid job's operands and C (tens of MB) and
# an engine's workspace; more than the cores would only share them.
MAX_CPU_WORKERS = 64


def _devices(text: str) -> list[int]:
    try:
        devices = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("--devices is a comma list of GPU ids: 0,1") from None
    if not devices or any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError("--devices is a comma list of distinct GPU ids: 0,1")
    return devices


def _shape(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--shape is M,K,N") from None
    return m, k, n


def add_miner_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("miner", help="mine through a node's JSON-RPC (GPU or CPU)")
    p.add_argument("--rpc", metavar="URL", help="node RPC URL (default 127.0.0.1:<rpc port>)")
    p.add_argument("--address",
                   help="address that receives the rewards (default: --market-wallet's)")
    p.add_argument(
        "--list-devices", action="store_true", help="show the GPUs and engines found, then exit"
    )
    p.add_argument("--network", choices=NETWORKS, help="default: the address's network")
    p.add_argument("--genesis-file", type=Path, help="genesis file of a private network")
    p.add_argument("--datadir", type=Path, help="the node's datadir, for its RPC cookie")
    p.add_argument("--rpc-user")
    p.add_argument("--rpc-password")
    p.add_argument("--backend", choices=["cupy", "numpy"], help="default: cupy if usable")
    p.add_argument("--devices", type=_devices, help="GPU ids, one worker each (default: all)")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of each numpy worker (default: the cores, shared among --workers)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="numpy worker processes (default 1); GPUs: one worker each, chosen with --devices",
    )
    p.add_argument("--shape", type=_shape, metavar="M,K,N", help="ask for this product shape")
    p.add_argument("--max-blocks", type=bounded(int, Bounds(1)),
                   help="exit after this many accepted blocks")  # fmt: skip
    p.add_argument("--status-every", type=positive_seconds_arg, metavar="SECONDS",
                   help="seconds between status lines (default: 1 on a terminal, 10 in a log)")
    p.add_argument("--longpoll-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--market-wallet", metavar="NAME|KEYSTORE",
                   help="take paid compute jobs, signing claims and commits with this "
                        "wallet: a name as `pouw wallet --wallet NAME` keeps it in --datadir, "
                        "or a keystore file (its address must be --address, if given)")  # fmt: skip
    p.add_argument("--password-file", type=Path,
                   help="the keystore's password (else $POUW_WALLET_PASSWORD)")  # fmt: skip
    p.add_argument("--blob-url", help="the node's blob endpoint (default: --rpc's port + 3)")
    p.add_argument("--min-bounty-per-mac", type=rate_arg, default=0.0,
                   help="least bounty per multiply-add a job must pay (base units)")  # fmt: skip
    p.set_defaults(handler=cmd_miner)
    return p


# While a node of --datadir has written no RPC cookie yet (it is starting, or a service
# manager started the miner first), look for it this often.
COOKIE_POLL_S = 1.0


def _client_once_the_node_is_up(
    url: str, network: str, datadir: Path | None, args: argparse.Namespace
) -> RpcClient:
    """The RPC client; with a cookie to read from a datadir whose node has not written
    it yet (the datadir exists: the node is starting, or was started after us), wait
    for it, said once, instead of exiting. Any other problem raises as it is."""
    url = check_node_url(url)  # a URL that is none is said now, not after a wait
    said = False
    while True:
        try:
            return RpcClient.from_options(url, network, datadir, args.rpc_user, args.rpc_password)
        except RpcConnectionError:
            if datadir is None or not (Path(datadir) / network / CHAIN_DB_DIRNAME).is_dir():
                raise  # no node's datadir there (a wallet's alone, a typo): said as it is
            if (Path(datadir) / network / COOKIE_NAME).exists():
                raise  # a cookie that does not read: said as it is
            if not said:
                log.warning(
                    "waiting for the node: no RPC cookie in %s yet (start `pouw node` with "
                    "this --datadir, or pass --rpc-user/--rpc-password)",
                    Path(datadir) / network,
                )  # fmt: skip
                said = True
            time.sleep(COOKIE_POLL_S)


def cmd_miner(args: argparse.Namespace) -> int:
    from compute.spread import cores
    from node.remote_miner import RemoteMiner, default_devices

    if args.list_devices:
        from node.devices import describe_devices

        lines, _ok = describe_devices()
        print("\n".join(lines))
        return 0
    if args.market_wallet is not None:
        try:
            args.market_wallet = market_keystore(args)
        except WalletError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
    if args.address is None and args.market_wallet is not None:
        from wallet.keystore import keystore_address

        try:  # checked against the decrypted key before any work (_market)
            args.address = keystore_address(args.market_wallet)
        except (WalletError, OSError) as exc:
            log.error("--market-wallet: %s", exc)
            return EXIT_USAGE
    if args.address is None:
        log.error("pouw miner needs --address ADDRESS, or --market-wallet (or --list-devices)")
        return EXIT_USAGE
    try:
        net_name, _ = decode_any_address(args.address)
        if args.network is not None and args.network != net_name:
            raise NetworkError(f"{args.address} is a {net_name} address, --network {args.network}")
        network = load_network(net_name, args.genesis_file)
        if network.name != net_name:
            raise NetworkError(f"--genesis-file is for {network.name}, the address for {net_name}")
        if args.rpc:
            url = args.rpc
        else:  # the local node of --datadir (its pouw.toml's rpc_port, else the network's)
            where = args.datadir or default_datadir()
            url = f"http://127.0.0.1:{local_port(where, network.name, network.rpc_port)}"
        datadir = None
        if args.rpc_user is None:
            datadir = args.datadir or default_datadir()
        rpc = _client_once_the_node_is_up(url, network.name, datadir, args)
    except KeyboardInterrupt:  # Ctrl-C while waiting for the node: a clean stop
        print("pouw miner stopped (Ctrl-C)", file=sys.stderr)
        return 0
    except AddressError as exc:
        log.error(
            "--address %r is not an address (%s): it looks like dpw1... on the devnet "
            "(`pouw wallet address` prints your wallet's)", args.address, exc,
        )  # fmt: skip
        return EXIT_USAGE
    except (NetworkError, RpcConnectionError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if args.workers is not None and (args.workers < 1 or args.workers > MAX_CPU_WORKERS):
        log.error("--workers must be 1 to %d", MAX_CPU_WORKERS)
        return EXIT_USAGE
    if args.threads is not None and args.threads < 1:
        log.error("--threads must be at least 1")
        return EXIT_USAGE
    backend = args.backend
    if backend is None:
        from compute.select import gpu_usable

        ok, why = gpu_usable()
        backend = "cupy" if ok else "numpy"
        if not ok:
            log.warning(
                "GPU mining unavailable (%s): mining on the CPU with numpy, much slower; "
                "`pouw miner --list-devices` shows what was found",
                why,
            )
    if backend == "cupy" and args.workers is not None:
        log.error("--workers is for the numpy backend; with GPUs, choose them with --devices")
        return EXIT_USAGE
    if backend == "cupy":
        try:
            devices: list[int | None] = list(args.devices or default_devices("cupy"))
        except Exception as exc:  # noqa: BLE001 - no cupy / no driver
            log.error("cupy backend unusable: %s", exc)
            return EXIT_FAILURE
        if not devices:
            log.error("no CUDA device")
            return EXIT_FAILURE
    else:
        devices = [None] * (args.workers or 1)
    from compute.int_tile import cpu_path_problem

    problem = cpu_path_problem(cpu_mines=backend == "numpy")
    if problem is not None:
        log.error("%s", problem)
        return EXIT_USAGE
    threads = args.threads
    if threads is None and len(devices) > 1 and backend == "numpy":
        threads = max(1, cores() // len(devices))  # the cores shared, not oversubscribed
    market = None
    if args.market_wallet is not None:
        from wallet.job_terms import JobError

        try:
            market = _market(args, network, rpc, url, datadir, len(devices))
        except (WalletError, JobError, RpcConnectionError, OSError) as exc:
            log.error("%s", exc if "--" in str(exc) else f"--market-wallet: {exc}")
            return EXIT_USAGE
    miner = RemoteMiner(
        rpc,
        network,
        args.address,
        backend=backend,
        devices=devices,
        max_blocks=args.max_blocks,
        shape=args.shape,
        threads=threads,
        status=sys.stderr,
        longpoll_timeout=args.longpoll_timeout,
        market=market,
        status_every=args.status_every,
    )
    signal.signal(signal.SIGTERM, lambda *_: miner.request_stop())
    try:
        return miner.run()
    except KeyboardInterrupt:  # Ctrl-C: the operator's way to stop it, as SIGTERM
        miner.close()
        log.info("miner stopped: %s", miner.line())  # the totals, as at any other stop
        print("pouw miner stopped (Ctrl-C)", file=sys.stderr)
        return 0


def market_keystore(args: argparse.Namespace) -> Path:
    """--market-wallet's keystore: a file given by its path (a name with a separator or
    ``.json``, or any file that exists), else a wallet name, found as ``pouw wallet``
    keeps it: ``<datadir>/<network>/wallets/NAME.json``, on --network, else on
    --address's network, else on the one network whose folder holds that name."""
    from wallet.wallet import default_keystore_path

    value = str(args.market_wallet)
    path = Path(value)
    if path.suffix == ".json" or os.sep in value or "/" in value or path.is_file():
        return path
    datadir = args.datadir or default_datadir()
    networks: tuple[str, ...] = NETWORKS
    if args.network is not None:
        networks = (args.network,)
    elif args.address is not None:
        with suppress(AddressError):  # a bad --address is said by its own check, next
            networks = (decode_any_address(args.address)[0],)
    found = [p for net in networks if (p := default_keystore_path(datadir, net, value)).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise WalletError(
            f"--market-wallet {value}: a wallet of that name is kept for "
            f"{', '.join(p.parent.parent.name for p in found)}: pass --network"
        )
    where = default_keystore_path(datadir, networks[0] if len(networks) == 1 else "NETWORK", value)
    raise WalletError(
        f"--market-wallet {value}: no keystore file {value} and no wallet of that name "
        f"({where}): give the keystore's path, or the name `pouw wallet create --wallet "
        f"{value}` used, with the same --datadir"
    )


def _market(
    args: argparse.Namespace, network: Network, rpc: RpcClient, url: str, datadir: Path | None,
    workers: int,
) -> RemoteMarket:  # fmt: skip
    """The paid-job side: the keystore's key (it must hold --address) and the node's
    blob endpoint, authenticated like its RPC (cookie, --rpc-user or the URL's)."""
    from node.remote_market import RemoteMarket
    from wallet.job_cli import blob_url_for
    from wallet.rpc import check_node_url, read_cookie
    from wallet.wallet import Wallet

    if args.password_file is None and "POUW_WALLET_PASSWORD" not in os.environ:
        raise WalletError(  # (never a prompt: a miner runs unattended)
            "no password for the keystore: pass --password-file F or set $POUW_WALLET_PASSWORD"
        )
    wallet = Wallet.load(args.market_wallet, read_password(args), network)
    if wallet.address != args.address:
        raise WalletError(f"{args.market_wallet} holds {wallet.address}, not --address")
    auth = rpc.credentials()  # --rpc-user's, else the --rpc URL's, else the cookie's
    if auth is None:
        assert datadir is not None
        auth = read_cookie(datadir, network.name)
    if args.blob_url:
        blob = check_node_url(args.blob_url, "--blob-url", credentials=False)
    elif args.rpc:
        blob = blob_url_for(url, network.rpc_port)
    else:  # the local node of --datadir: its blob port
        where = args.datadir or default_datadir()
        blob = f"http://127.0.0.1:{local_port(where, network.name, network.rpc_port, 'blob')}"
    return RemoteMarket(
        rpc.clone(), network, wallet.signing_key, blob, auth,
        workers=workers, min_bounty_per_mac=args.min_bounty_per_mac,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_command(add_miner_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
