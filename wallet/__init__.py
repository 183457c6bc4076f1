"""The pouw wallet: encrypted keystores, offline signing, and a small RPC client.

``Wallet`` (wallet.wallet) is the importable client; ``pouw wallet ...`` (wallet.cli)
is its command line.

The names below load with the first use of each (PEP 562): ``import wallet.rpc`` or a
``pouw`` command that needs no signing then skips the transaction codec (and NumPy,
which the market's payloads need), a tenth of a second of every command's start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wallet.amount import COIN, AmountError, format_coins, parse_amount
    from wallet.keystore import (
        KeystoreError,
        KeystoreExistsError,
        WalletError,
        WrongPasswordError,
    )
    from wallet.rpc import RpcClient, RpcConnectionError, RpcError
    from wallet.rpc_calls import AccountInfo
    from wallet.wallet import DEFAULT_FEE, Wallet, default_keystore_path

_HOME = {
    "COIN": "wallet.amount",
    "AmountError": "wallet.amount",
    "format_coins": "wallet.amount",
    "parse_amount": "wallet.amount",
    "KeystoreError": "wallet.keystore",
    "KeystoreExistsError": "wallet.keystore",
    "WalletError": "wallet.keystore",
    "WrongPasswordError": "wallet.keystore",
    "AccountInfo": "wallet.rpc_calls",
    "RpcClient": "wallet.rpc",
    "RpcConnectionError": "wallet.rpc",
    "RpcError": "wallet.rpc",
    "DEFAULT_FEE": "wallet.wallet",
    "Wallet": "wallet.wallet",
    "default_keystore_path": "wallet.wallet",
}

__all__ = [
    "COIN",
    "DEFAULT_FEE",
    "AccountInfo",
    "AmountError",
    "KeystoreError",
    "KeystoreExistsError",
    "RpcClient",
    "RpcConnectionError",
    "RpcError",
    "Wallet",
    "WalletError",
    "WrongPasswordError",
    "default_keystore_path",
    "format_coins",
    "parse_amount",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'wallet' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
