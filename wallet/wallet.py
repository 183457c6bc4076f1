"""``Wallet``: one key from a keystore, signing offline, talking to a node over RPC.

    from wallet import Wallet, RpcClient
    w = Wallet.load("~/.pouw/devnet/wallets/default.json", "password")
    rpc = RpcClient.from_options("http://127.0.0.1:29332", "devnet", datadir=Path("~/.pouw"))
    w.balance(rpc)                         # AccountInfo(balance, immature, nonce, pending_nonce)
    txid = w.send(rpc, "dpw1...", 150_000_000)       # fee from the node's estimatefee
    txid = w.send(rpc, "dpw1...", 150_000_000, fee=2500)  # or a fixed one
    w.wait_confirmed(rpc, txid, 600)       # sent again if the node lost it meanwhile

The private key never leaves this object: transactions are built and signed here and
only their wire bytes go to the node (``sendrawtransaction``). The chain id signed
into every transaction comes from the local network definition, not from the node.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from chain.address import (
    AddressError,
    address_from_pubkey,
    decode_address,
    decode_any_address,
    encode_address,
)
from chain.keys import PrivateKey
from chain.network import Network, load_network
from chain.tx import Transaction, TxKind, check_transaction, sign
from wallet.amount import format_coins
from wallet.keystore import (
    DEFAULT_SCRYPT_N,
    WalletError,
    decrypt_keystore,
    encrypt_seed,
    read_keystore,
    write_keystore,
)
from wallet.rpc import NOT_FOUND, RpcClient, RpcConnectionError, RpcError
from wallet.rpc_calls import (
    AccountInfo,
    estimate_fee,
    get_account,
    get_address_history,
    get_transaction,
    send_raw_transaction,
)

log = logging.getLogger("pouw.wallet")

DEFAULT_FEE = 1000  # base units: build_transfer's default offline (no node to ask)
DEFAULT_CONF_TARGET = 6  # blocks: estimatefee's own default, bitcoind's too
# The most an estimated fee may be (base units; 0.01 coin): a wallet does not pay
# whatever a node answers, as bitcoind's -maxtxfee. Give the fee explicitly to pay more.
MAX_ESTIMATED_FEE = 1_000_000
# wait_confirmed: a transfer the node lost is sent again at most this often (a pool
# that evicted it for its fee would only evict it again at once), and asked after this
# often (a devnet block comes in a fraction of a second)
RESEND_S = 10.0
WAIT_POLL_S = 0.5
MAX_KEPT_SENT = 1024  # transfers kept for sending again, per Wallet object


def default_keystore_path(datadir: Path, network: str, name: str) -> Path:
    """``<datadir>/<network>/wallets/<name>.json``."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise WalletError(f"bad wallet name {name!r}: use letters, digits, '-' or '_'")
    return Path(datadir) / network / "wallets" / f"{name}.json"


class Wallet:
    __slots__ = ("_key", "network", "path", "sent")

    def __init__(self, key: PrivateKey, network: Network, path: Path | None = None) -> None:
        self._key = key
        self.network = network
        self.path = path
        # what ``send`` sent (txid hex -> the signed transaction), for ``wait_confirmed``
        # to send again a transfer the node lost (the oldest dropped past MAX_KEPT_SENT)
        self.sent: dict[str, Transaction] = {}

    @property
    def signing_key(self) -> PrivateKey:
        """The unlocked key, for a process that signs on its own (a node's market miner)."""
        return self._key

    # --- creating and loading ------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str, password: str, network: Network | None = None) -> Wallet:
        """Unlock a keystore file. Raises WrongPasswordError / KeystoreError; writes nothing."""
        path = Path(path).expanduser()
        data = read_keystore(path)
        key = decrypt_keystore(data, password)
        name, _ = decode_any_address(data["address"])
        if network is None:
            network = load_network(name)
        elif network.name != name:
            raise WalletError(
                f"{path} holds a {name} key, but the wallet was asked for {network.name}"
            )
        return cls(key, network, path)

    @classmethod
    def create(
        cls,
        path: Path | str,
        password: str,
        network: Network,
        seed: bytes | None = None,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> Wallet:
        """A new keystore at ``path`` (never overwrites) for a fresh or given seed."""
        key = PrivateKey.generate() if seed is None else PrivateKey.from_seed(seed)
        data = encrypt_seed(key.seed, password, network.hrp, scrypt_n=scrypt_n)
        path = Path(path).expanduser()
        write_keystore(path, data)
        return cls(key, network, path)

    # --- identity ------------------------------------------------------------------

    @property
    def address_bytes(self) -> bytes:
        return address_from_pubkey(self._key.public_key)

    @property
    def address(self) -> str:
        return encode_address(self.network.hrp, self.address_bytes)

    @property
    def public_key(self) -> bytes:
        return self._key.public_key

    def __repr__(self) -> str:
        return f"Wallet(address={self.address}, network={self.network.name})"

    # --- transactions --------------------------------------------------------------

    def build_transfer(
        self, to: str, amount: int, fee: int = DEFAULT_FEE, nonce: int = 0, payload: bytes = b""
    ) -> Transaction:
        """A signed transfer (offline: no RPC). ``to`` must be of this wallet's network."""
        try:
            recipient = decode_address(to, self.network.hrp)
        except AddressError as exc:
            raise AddressError(
                f"the recipient (--to) {to!r} is not an address of this network ({exc}): "
                f"it looks like {self.network.hrp}1... (`pouw wallet address` prints yours)"
            ) from None
        tx = Transaction(
            chain_id=self.network.chain_id,
            kind=TxKind.TRANSFER,
            sender_pubkey=self._key.public_key,
            nonce=nonce,
            fee=fee,
            recipient=recipient,
            amount=amount,
            payload=payload,
        )
        tx = sign(tx, self._key)
        check = check_transaction(tx, self.network.chain_id)
        if not check.ok:
            raise WalletError(f"transaction would be rejected: {check.reject}: {check.detail}")
        return tx

    def balance(self, rpc: RpcClient) -> AccountInfo:
        return get_account(rpc, self.address)

    def suggest_fee(self, rpc: RpcClient, blocks: int = DEFAULT_CONF_TARGET) -> int:
        """The node's ``estimatefee`` for confirmation within ``blocks``; refused above
        MAX_ESTIMATED_FEE."""
        fee = estimate_fee(rpc, blocks).fee
        if not 0 <= fee <= MAX_ESTIMATED_FEE:
            raise WalletError(
                f"the node estimates a fee of {fee} base units, over the wallet's limit of "
                f"{MAX_ESTIMATED_FEE}: give the fee explicitly to pay it"
            )
        return fee

    def send(
        self,
        rpc: RpcClient,
        to: str,
        amount: int,
        fee: int | None = None,
        nonce: int | None = None,
        blocks: int = DEFAULT_CONF_TARGET,
    ) -> str:
        """Sign a transfer and submit it; returns the txid hex.

        Without ``fee``, the node's estimate for ``blocks`` is paid (``suggest_fee``).
        The nonce is the account's ``pending_nonce`` (after its own unconfirmed txs)
        unless given. Refuses, before signing, to spend more than the spendable balance.
        """
        if fee is None:
            fee = self.suggest_fee(rpc, blocks)
        info = self.balance(rpc)
        spendable = info.spendable if nonce is None else info.balance
        if amount + fee > spendable:
            waiting = (
                f"; {format_coins(info.immature)} more is mined but not mature yet"
                if info.immature else ""
            )  # fmt: skip
            pooled = (
                f" ({format_coins(info.balance)} confirmed, "
                f"{format_coins(info.pending_spend)} spent by txs not yet in a block)"
                if spendable != info.balance else ""
            )  # fmt: skip
            raise WalletError(
                f"insufficient funds: amount + fee = {format_coins(amount + fee)} coins, "
                f"spendable {format_coins(spendable)}{pooled}{waiting}: "
                f"{format_coins(amount + fee - spendable)} short: lower --amount"
                + (", or wait for the immature coins"
                   if amount + fee - spendable <= info.immature else "")
                + (", or wait for the pending txs to confirm" if pooled else "")
            )
        tx = self.build_transfer(to, amount, fee, info.pending_nonce if nonce is None else nonce)
        txid = send_raw_transaction(rpc, tx.to_bytes())
        if txid != tx.txid.hex():
            raise WalletError(f"the node answered txid {txid}, expected {tx.txid.hex()}")
        self.sent[txid] = tx
        while len(self.sent) > MAX_KEPT_SENT:
            self.sent.pop(next(iter(self.sent)))
        return txid

    def wait_confirmed(
        self, rpc: RpcClient, txid: str, seconds: float, poll_s: float = WAIT_POLL_S
    ) -> dict[str, Any]:
        """Wait up to ``seconds`` for ``txid`` (sent by ``send``) to be in a block;
        returns its ``gettransaction``. A transfer the node no longer knows (evicted
        from its pool, or lost with a node that crashed) is sent again, at most every
        RESEND_S, unless another transaction of this account holds its nonce now,
        pooled or confirmed (WalletError: it is not replaced). A node that does not answer
        (restarting) is asked again until the time is up; one that refuses our
        credentials (401/403) is a WalletError at once."""
        deadline = time.monotonic() + seconds
        resent_at = -RESEND_S
        silent = unknown = False  # the node did not answer / did not know the tx, last time
        while True:
            try:
                tx = get_transaction(rpc, txid)
                if tx.get("confirmations") or tx.get("blockhash") or tx.get("height") is not None:
                    return tx
                silent = unknown = False
            except RpcError as exc:
                if exc.code != NOT_FOUND:
                    raise
                silent, unknown = False, True
                if time.monotonic() - resent_at >= RESEND_S:
                    self._send_again(rpc, txid)
                    resent_at = time.monotonic()
            except RpcConnectionError as exc:
                if exc.status in (401, 403):  # (a cookie read again still refused)
                    raise WalletError(
                        f"{txid} was sent, but the node now refuses our credentials ({exc}): "
                        "its state is unknown here; `pouw wallet history` with the node's "
                        "current credentials shows it once it is in a block"
                    ) from None
                if not silent:
                    log.warning("the node does not answer (%s): waiting for it", exc)
                silent = True
            if time.monotonic() > deadline:
                where = (
                    "the node does not answer, so its state is unknown here" if silent
                    else "the node no longer knows it: send the transfer again" if unknown
                    else "it waits in the node's pool"
                )  # fmt: skip
                raise WalletError(
                    f"{txid} not confirmed after {seconds:g} s: {where} (`pouw wallet "
                    "history` lists it once it is in a block); is a miner running?"
                )
            time.sleep(poll_s)

    def _send_again(self, rpc: RpcClient, txid: str) -> None:
        """The node knows no ``txid``: send it again, if we have it and its nonce is
        still free; else WalletError saying what happened. A node that stops answering
        meanwhile is left to the wait."""
        tx = self.sent.get(txid)
        if tx is None:
            return  # not sent by this wallet object: nothing to send again, only wait
        try:
            info = self.balance(rpc)
        except (RpcError, RpcConnectionError):
            return  # asked again at the next try
        if tx.nonce < info.pending_nonce:  # (sent again, it would replace that one)
            known = self._known(rpc, txid)
            if known is not False:
                return  # ours after all (a block took it meanwhile), or not askable now
            where = "a block" if tx.nonce < info.nonce else "the node's pool"
            raise WalletError(
                f"{txid} is gone from the node, and another transaction of this account "
                f"with its nonce {tx.nonce} is in {where}: it was not sent again; "
                "`pouw wallet balance` and `pouw wallet history` show what is pending "
                "and confirmed"
            )
        try:
            send_raw_transaction(rpc, tx.to_bytes())
        except RpcConnectionError:
            return
        except RpcError as exc:
            if self._known(rpc, txid) is not False:
                return  # taken meanwhile (a block, or the node's pool), or not askable
            raise WalletError(
                f"{txid} is gone from the node's pool and the node refuses it again "
                f"({exc.message}): send the transfer again (a higher --fee if the pool is "
                "full)"
            ) from None
        log.warning("%s was no longer in the node's pool: sent it again", txid)

    @staticmethod
    def _known(rpc: RpcClient, txid: str) -> bool | None:
        """Whether the node holds ``txid`` now (pool or chain); None if it cannot say."""
        try:
            get_transaction(rpc, txid)
        except RpcError as exc:
            return False if exc.code == NOT_FOUND else None
        except RpcConnectionError:
            return None
        return True

    def history(self, rpc: RpcClient, details: bool = True) -> list[dict[str, Any]]:
        """Confirmed transactions from or to this address, oldest first (see address_history)."""
        return address_history(rpc, self.address, details)


def address_history(rpc: RpcClient, address: str, details: bool = True) -> list[dict[str, Any]]:
    """Confirmed transactions from or to ``address``, oldest first.

    With ``details`` each entry also gets sender, recipient, amount, fee and
    ``direction`` ("in", "out" or "self") from ``gettransaction``.
    """
    entries = get_address_history(rpc, address)
    if not details:
        return entries
    out = []
    for e in entries:
        tx = get_transaction(rpc, str(e.get("txid"))) if "amount" not in e else {}
        merged = {**tx, **e}
        sender, recipient = merged.get("sender"), merged.get("recipient")
        if sender == address and recipient == address:
            merged["direction"] = "self"
        elif sender == address:
            merged["direction"] = "out"
        elif recipient == address:
            merged["direction"] = "in"
        merged.pop("hex", None)
        out.append(merged)
    return out
