"""The pouw wallet: encrypted keystores, offline signing, and a small RPC client.

``Wallet`` (wallet.wallet) is the importable client; ``pouw wallet ...`` (wallet.cli)
is its command line.
"""

from __future__ import annotations

from wallet.amount import COIN, AmountError, format_coins, parse_amount
from wallet.keystore import KeystoreError, KeystoreExistsError, WalletError, WrongPasswordError
from wallet.rpc import AccountInfo, RpcClient, RpcConnectionError, RpcError
from wallet.wallet import DEFAULT_FEE, Wallet, default_keystore_path

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
