"""``pouw wallet create|import|address|balance|send|history``.

Keystores live at ``<datadir>/<network>/wallets/<name>.json`` (``--wallet NAME``,
default ``default``) unless ``--wallet-file PATH`` is given. The password comes from
``--password-file``, else ``$POUW_WALLET_PASSWORD``, else a prompt on the terminal.
Amounts: ``1.5`` is coins, ``150000000u`` is base units (1 coin = 10^8 units).
RPC: ``--rpc URL`` (default the network's port on 127.0.0.1), credentials from
``--rpc-user/--rpc-password``, else the URL's (``http://user:password@host:port``), else
the node's cookie in ``--datadir``.

Register with ``add_wallet_parser(subparsers)``; run alone with ``python -m wallet.cli``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.address import AddressError, decode_any_address
from chain.datadir import default_datadir
from chain.network import NETWORKS, Network, NetworkError, load_network
from chain.txkind import AMOUNT_KINDS, TxKind
from wallet.amount import (
    DEFAULT_MAX_FEE,
    AmountError,
    amount_arg,
    check_fee,
    format_coins,
)
from wallet.args import nonce_arg, positive_arg, seconds_arg
from wallet.keystore import (
    DEFAULT_SCRYPT_N,
    WalletError,
    decrypt_keystore,
    keystore_address,
    read_keystore,
)
from wallet.rpc import NodeUrlError, RpcClient, RpcConnectionError, RpcError, local_port
from wallet.wallet import DEFAULT_CONF_TARGET, Wallet, address_history, default_keystore_path

log = logging.getLogger("pouw.wallet")

PASSWORD_ENV = "POUW_WALLET_PASSWORD"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell convention (128 + SIGINT)


def _add_common(p: argparse.ArgumentParser, rpc: bool = False) -> None:
    p.add_argument("--network", choices=NETWORKS, default="devnet")
    p.add_argument("--datadir", type=Path, default=None, help="default ~/.pouw or $POUW_DATADIR")
    p.add_argument("--genesis-file", type=Path, help="genesis file of a private network")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--wallet", default="default", metavar="NAME", help="keystore name")
    p.add_argument("--wallet-file", type=Path, metavar="PATH", help="keystore file (not by name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    if rpc:
        p.add_argument("--rpc", metavar="URL", help="node RPC URL (default 127.0.0.1:<rpc port>)")
        p.add_argument("--rpc-user")
        p.add_argument("--rpc-password")


def _add_password(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-file", type=Path, help=f"read the password from a file (else ${PASSWORD_ENV})"
    )


def add_wallet_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``wallet`` and its subcommands; each sets ``handler``."""
    wallet = subparsers.add_parser("wallet", help="keys, balances and transfers")
    sub = wallet.add_subparsers(dest="wallet_command", required=True)

    create = sub.add_parser("create", help="create a new key in an encrypted keystore")
    _add_common(create)
    _add_password(create)
    create.add_argument("--scrypt-n", type=int, default=DEFAULT_SCRYPT_N, help=argparse.SUPPRESS)
    create.set_defaults(handler=cmd_create)

    imp = sub.add_parser("import", help="import a 32-byte seed (hex) or a keystore file")
    _add_common(imp)
    _add_password(imp)
    src = imp.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", metavar="HEX", help="seed as 64 hex digits, or - to read stdin")
    src.add_argument("--keystore", type=Path, metavar="FILE", help="a keystore file to import")
    src.add_argument("--devnet-key", type=int, metavar="N",
                     help="the devnet's public test key N (0-4 are funded at genesis; "
                          "devnet only: anyone can spend what these keys hold)")  # fmt: skip
    imp.add_argument("--scrypt-n", type=int, default=DEFAULT_SCRYPT_N, help=argparse.SUPPRESS)
    imp.set_defaults(handler=cmd_import)

    address = sub.add_parser("address", help="print the wallet's address")
    _add_common(address)
    _add_password(address)
    address.add_argument("--check", action="store_true", help="unlock to prove the address")
    address.set_defaults(handler=cmd_address)

    balance = sub.add_parser("balance", help="spendable and immature balance")
    _add_common(balance, rpc=True)
    balance.set_defaults(handler=cmd_balance)

    send = sub.add_parser("send", help="sign a transfer offline and submit it")
    _add_common(send, rpc=True)
    _add_password(send)
    send.add_argument("--to", required=True, metavar="ADDRESS")
    send.add_argument("--amount", required=True, type=amount_arg,
                      help="1.5 (coins) or 150000000u (base units)")  # fmt: skip
    send.add_argument(
        "--fee", type=amount_arg,
        help="1000u or 0.00001 (coins); default: the node's estimatefee for --blocks",
    )
    send.add_argument(
        "--blocks", type=positive_arg, default=DEFAULT_CONF_TARGET,
        help=f"confirmation target for the estimated fee (default {DEFAULT_CONF_TARGET})",
    )  # fmt: skip
    send.add_argument("--nonce", type=nonce_arg, help="default: the account's pending_nonce")
    add_max_fee(send)
    send.add_argument("--wait", type=seconds_arg, metavar="SECONDS",
                      help="wait up to this long for a confirmation (0: do not wait)")  # fmt: skip
    send.set_defaults(handler=cmd_send)

    history = sub.add_parser("history", help="transactions of the wallet's address")
    _add_common(history, rpc=True)
    history.set_defaults(handler=cmd_history)
    return wallet


# --- helpers -------------------------------------------------------------------------


def add_max_fee(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-fee", type=amount_arg, default=DEFAULT_MAX_FEE,
        help=f"refuse a fee above this per transaction (default {format_coins(DEFAULT_MAX_FEE)})",
    )  # fmt: skip


def _network(args: argparse.Namespace) -> Network:
    network = load_network(args.network, args.genesis_file)
    if network.name != args.network:
        raise WalletError(f"--genesis-file is for {network.name}, --network is {args.network}")
    return network


def _keystore_address(args: argparse.Namespace, network: Network) -> str:
    """The keystore's address (read without unlocking it), refused when it is not one
    of ``network`` (a keystore file of another network, given by --wallet-file)."""
    address = keystore_address(_path(args))
    try:
        found, _ = decode_any_address(address)
    except AddressError:
        return address  # (an address the keystore check let through: said where used)
    if found != network.name:
        raise WalletError(
            f"{_path(args)} holds a {found} address ({address}), not a {network.name} one: "
            f"pass --network {found}"
        )
    return address


def _datadir(args: argparse.Namespace) -> Path:
    return args.datadir or default_datadir()


def _path(args: argparse.Namespace) -> Path:
    if args.wallet_file is not None:
        return args.wallet_file
    return default_keystore_path(_datadir(args), args.network, args.wallet)


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    """--password-file, else $POUW_WALLET_PASSWORD, else a terminal prompt."""
    if getattr(args, "password_file", None) is not None:
        try:
            text = Path(args.password_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise WalletError(
                f"--password-file {args.password_file}: cannot read it ({why}): give a "
                "readable text file holding the keystore's password"
            ) from None
        password = text.rstrip("\r\n")
        if not password:
            raise WalletError(
                f"--password-file {args.password_file} is empty: put the keystore's "
                "password in it (one line)"
            )
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = getpass.getpass("wallet password: ")
        if confirm and getpass.getpass("again: ") != password:
            raise WalletError("the passwords differ")
    else:
        raise WalletError(
            f"no password: use --password-file, ${PASSWORD_ENV}, or run on a terminal"
        )
    if not password:
        raise WalletError("empty password")
    return password


def default_rpc_url(args: argparse.Namespace, network: Network) -> str:
    """--rpc, else the local node of --datadir (its pouw.toml's rpc_port, else the
    network's)."""
    if args.rpc:
        return str(args.rpc)
    return f"http://127.0.0.1:{local_port(_datadir(args), network.name, network.rpc_port)}"


def _rpc(args: argparse.Namespace, network: Network) -> RpcClient:
    url = default_rpc_url(args, network)
    datadir = None if args.rpc_user else _datadir(args)
    return RpcClient.from_options(url, network.name, datadir, args.rpc_user, args.rpc_password)


def _unlock(args: argparse.Namespace, network: Network) -> Wallet:
    return Wallet.load(_path(args), read_password(args), network)


def _out(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj) if args.json else text)


# --- commands ------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    return _run(args, _create)


def _create(args: argparse.Namespace) -> int:
    network, path = _network(args), _path(args)
    if path.exists():
        raise WalletError(f"{path} already exists; not overwriting a keystore")
    w = Wallet.create(path, read_password(args, confirm=True), network, scrypt_n=args.scrypt_n)
    _out(args, {"address": w.address, "file": str(path)}, f"{w.address}\nkeystore: {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    return _run(args, _import)


DEVNET_KEY_MAX = 2**32 - 1  # devnet keys are numbered by a u32 (chain/keys.devnet_key)


def _import(args: argparse.Namespace) -> int:
    network, path = _network(args), _path(args)
    if path.exists():
        raise WalletError(f"{path} already exists; not overwriting a keystore")
    if args.keystore is not None:
        password = read_password(args)
        seed = decrypt_keystore(read_keystore(args.keystore), password).seed
    elif args.devnet_key is not None:
        from chain.keys import devnet_key

        if network.name != "devnet":
            raise WalletError(
                f"--devnet-key is for the devnet only, not {network.name}: its keys are "
                "public, anyone can spend what they hold"
            )
        if not 0 <= args.devnet_key <= DEVNET_KEY_MAX:
            raise WalletError(f"--devnet-key must be 0 to {DEVNET_KEY_MAX} (0-4 are funded)")
        seed = devnet_key(args.devnet_key).seed
        password = read_password(args, confirm=True)
    else:
        text = sys.stdin.readline() if args.seed == "-" else args.seed
        text = text.strip().removeprefix("0x")
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            raise WalletError("--seed must be hex (64 digits for 32 bytes)") from None
        if len(seed) != 32:
            raise WalletError(f"--seed must be 32 bytes (64 hex digits), got {len(seed)} bytes")
        password = read_password(args, confirm=True)
    w = Wallet.create(path, password, network, seed=seed, scrypt_n=args.scrypt_n)
    _out(args, {"address": w.address, "file": str(path)}, f"{w.address}\nkeystore: {path}")
    return 0


def cmd_address(args: argparse.Namespace) -> int:
    return _run(args, _address)


def _address(args: argparse.Namespace) -> int:
    network = _network(args)
    address = _unlock(args, network).address if args.check else _keystore_address(args, network)
    _out(args, {"address": address}, address)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    return _run(args, _balance)


def _balance(args: argparse.Namespace) -> int:
    network = _network(args)
    address = _keystore_address(args, network)
    from wallet.rpc_calls import get_account

    rpc = _rpc(args, network)
    info = get_account(rpc, address)
    obj: dict[str, Any] = {"address": address, **info.__dict__}
    text = (
        f"{address}\nbalance:  {format_coins(info.balance)}\n"
        f"immature: {format_coins(info.immature)}\nnonce:    {info.nonce} "
        f"(pending {info.pending_nonce})"
    )
    if info.pending_spend:  # txs of ours not yet in a block: what is left to spend
        text += (
            f"\npending:  -{format_coins(info.pending_spend)} "
            f"({info.pending_nonce - info.nonce} tx(s) not yet in a block)\n"
            f"spendable: {format_coins(info.spendable)}"
        )
    # what the address did for the network (the contribution ledger), when the node says
    try:
        work = rpc.call("getcontribution", address)
    except RpcError:  # a node without the ledger: the balance alone
        work = None
    if isinstance(work, dict) and {"blocks", "delivered", "bounties"} <= work.keys():
        obj["contribution"] = work
        text += (
            f"\nmined:    {int(work['blocks'])} block(s); paid jobs: "
            f"{format_coins(int(work['bounties']))} in bounties for "
            f"{int(work['delivered']):.3g} multiply-adds delivered"
        )
        if int(work.get("challenges_lost", 0)):
            text += f"; {int(work['challenges_lost'])} bond(s) lost to challenges"
    _out(args, obj, text)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    return _run(args, _send)


def _send(args: argparse.Namespace) -> int:
    network = _network(args)
    amount = args.amount  # (base units: amount_arg parsed it)
    w = _unlock(args, network)
    rpc = _rpc(args, network)
    fee = args.fee if args.fee is not None else w.suggest_fee(rpc, args.blocks)
    check_fee(fee, args.max_fee)
    txid = w.send(rpc, args.to, amount, fee, nonce=args.nonce)
    log.info("sent %s to %s, fee %s: %s", format_coins(amount), args.to, format_coins(fee), txid)
    if not args.json:
        print(txid, flush=True)  # at once: a --wait may be long, and may fail
    obj: dict[str, Any] = {"txid": txid}
    if args.wait:  # (a transfer the node lost meanwhile is sent again)
        try:
            obj["transaction"] = w.wait_confirmed(rpc, txid, args.wait)
        except (WalletError, RpcError, RpcConnectionError, KeyboardInterrupt) as exc:
            exc.txid = txid  # type: ignore[union-attr]  # sent: --json says it with the failure
            raise
    if args.json:
        print(json.dumps(obj))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    return _run(args, _history)


def _history(args: argparse.Namespace) -> int:
    network = _network(args)
    address = _keystore_address(args, network)
    rpc = _rpc(args, network)
    entries = address_history(rpc, address)
    if args.json:
        print(json.dumps(entries))
        return 0
    for e in entries:
        print(_history_line(e))
    if not entries:
        print(f"no transactions for {address}")
    try:  # block rewards are no transactions: said, so a grown balance is explained
        mined = int(rpc.call("getcontribution", address).get("blocks", 0))
    except (RpcError, RpcConnectionError, AttributeError, TypeError, ValueError):
        mined = 0
    if mined:
        print(f"(and {mined} mined block(s): rewards are not transactions; "
              "`pouw wallet balance` counts them)")  # fmt: skip
    return 0


# what a job transaction's amount escrows; the other job kinds move nothing
_ESCROWED = {TxKind.JOB_SUBMIT: "bounty", TxKind.JOB_CLAIM: "bond", TxKind.JOB_PROBE: "deposit"}
assert set(_ESCROWED) == AMOUNT_KINDS


def _history_line(e: dict[str, Any]) -> str:
    """One transaction of ``pouw wallet history``: a transfer with its direction and
    both addresses, a market transaction by its kind (and what its amount escrows),
    and a transaction whose market rule failed (fee and nonce spent) marked so."""
    amount = e.get("amount")
    coins = format_coins(int(amount)) if amount is not None else "?"
    try:
        kind = TxKind(int(e.get("kind", TxKind.TRANSFER)))
    except ValueError:
        kind = None
    parts = [f"height={e.get('height')}"]
    if kind is None or kind == TxKind.TRANSFER:
        parts += [str(e.get("direction", "?")), coins]
    else:
        parts.append(kind.name.lower())
        if kind in _ESCROWED:
            parts.append(f"{_ESCROWED[kind]} {coins}")
    parts.append(f"fee={format_coins(int(e.get('fee', 0)))}")
    if kind is None or kind == TxKind.TRANSFER:
        parts += [f"from={e.get('sender', '?')}", f"to={e.get('recipient', '?')}"]
    parts.append(f"txid={e.get('txid')}")
    if e.get("status") == "failed":
        parts.append(f"FAILED ({e.get('failure')}): only the fee was spent")
    return " ".join(parts)


def error_type(exc: BaseException) -> str:
    """The ``type`` of a --json error: the exception's class in snake case
    (``rpc_connection_error``, ``job_error``), ``os_error`` for any file or socket
    error, ``interrupted`` for Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError):
        return "os_error"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(exc).__name__).lower()


def say_failure(args: argparse.Namespace, message: str, exc: BaseException) -> None:
    """Why a command failed, on stderr (stdout stays for results): ``error: message``,
    or with --json one line a script can parse,
    ``{"error": {"type": ..., "message": ..., "code": N, "txid": ...}}`` (``code``: the
    node's JSON-RPC error code, when the node refused; ``txid``: a transaction that was
    sent before the command failed, as `send --wait` does)."""
    if not getattr(args, "json", False):
        print("interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {message}",
              file=sys.stderr)  # fmt: skip
        return
    error: dict[str, Any] = {"type": error_type(exc), "message": message}
    if isinstance(exc, RpcError):
        error["code"] = exc.code
    if isinstance(getattr(exc, "txid", None), str):  # a transaction sent before the failure
        error["txid"] = exc.txid  # type: ignore[attr-defined]
    print(json.dumps({"error": error}), file=sys.stderr)


def _run(args: argparse.Namespace, fn: Any) -> int:
    """Turn the wallet's typed errors into one clear line and an exit code."""
    try:
        return int(fn(args))
    except NodeUrlError as exc:  # a flag's value: a usage error
        say_failure(args, str(exc), exc)
        return EXIT_USAGE
    except (WalletError, AmountError, AddressError, NetworkError, RpcConnectionError) as exc:
        say_failure(args, str(exc), exc)
        return EXIT_FAILURE
    except RpcError as exc:
        say_failure(args, f"the node refused: {exc}", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt as exc:
        say_failure(args, "interrupted", exc)
        return EXIT_INTERRUPTED


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (debug, info, warning, error); every pouw command's format."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_command(add_parser: Callable[[Any], object], argv: list[str] | None = None) -> int:
    """Run one ``pouw`` command group alone (``python -m wallet.cli``, ``-m node.miner_cli``):
    ``add_parser(subparsers)`` registers it; its handler's answer is the exit code."""
    parser = argparse.ArgumentParser(prog="pouw")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return int(args.handler(args))


def main(argv: list[str] | None = None) -> int:
    return run_command(add_wallet_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
