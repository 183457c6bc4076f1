"""The typed calls the wallet and the standalone miner make of a node (wallet/rpc.py's
``RpcClient`` carries them): each checks the answer's shape and returns plain values,
so that a node that answers something else is an RpcError, not a KeyError later.

Methods and fields relied on (the contract; see docs/RPC.md):

* ``getaccount(address)`` -> ``{balance, immature, nonce, pending_nonce}``
* ``sendrawtransaction(hex)`` -> txid hex
* ``getaddresshistory(address)`` -> list of entries (or ``{"txs"|"history": [...]}``)
* ``gettransaction(txid)`` -> object
* ``getblocktemplate(miner=, shape=?, longpollid=?)`` (named) -> header fields but
  h_a/h_b/seal, ``transactions`` ([{"data": hex}]) or ``txs`` (hex), ``longpollid``
* ``submitblock(hex)`` -> null | "duplicate" | "inconclusive" | reject reason
* ``getmininginfo()`` -> object (only shown, never required)

Integers may arrive as JSON numbers or decimal strings (u64s above 2^53).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wallet.rpc import RpcClient, RpcError


def as_int(value: Any, name: str) -> int:
    """A JSON integer or decimal / 0x-hex string (u64 and u256 fields)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
        except ValueError:
            pass
    raise ValueError(f"{name}: expected an integer, got {value!r}")


# --- accounts and transactions ------------------------------------------------------


@dataclass(frozen=True)
class AccountInfo:
    balance: int  # spendable, confirmed
    immature: int  # mined rewards not yet mature
    nonce: int  # next nonce on chain
    pending_nonce: int  # next nonce after this account's pending mempool txs
    pending_spend: int = 0  # what those pending txs debit (amounts, bounties, bonds, fees)

    @property
    def spendable(self) -> int:
        """The confirmed balance less what the pending txs spend: what a new tx may."""
        return max(0, self.balance - self.pending_spend)


def get_account(rpc: RpcClient, address: str) -> AccountInfo:
    res = rpc.call("getaccount", address)
    if not isinstance(res, dict):
        raise RpcError(-1, f"getaccount answered {res!r}, not an object", "getaccount")
    nonce = as_int(res.get("nonce", 0), "nonce")
    return AccountInfo(
        balance=as_int(res.get("balance", 0), "balance"),
        immature=as_int(res.get("immature", 0), "immature"),
        nonce=nonce,
        pending_nonce=as_int(res.get("pending_nonce", nonce), "pending_nonce"),
        pending_spend=as_int(res.get("pending_spend", 0), "pending_spend"),
    )


@dataclass(frozen=True)
class FeeEstimate:
    fee: int  # absolute fee, base units, likely to confirm within ``blocks``
    min_fee: int  # the pool's current entry minimum
    blocks: int
    sample_txs: int  # recent block txs the estimate is based on


def estimate_fee(rpc: RpcClient, blocks: int = 6) -> FeeEstimate:
    res = rpc.call("estimatefee", blocks)
    if not isinstance(res, dict):
        raise RpcError(-1, f"estimatefee answered {res!r}, not an object", "estimatefee")
    return FeeEstimate(
        fee=as_int(res.get("fee"), "fee"),
        min_fee=as_int(res.get("min_fee", 0), "min_fee"),
        blocks=as_int(res.get("blocks", blocks), "blocks"),
        sample_txs=as_int(res.get("sample_txs", 0), "sample_txs"),
    )


def send_raw_transaction(rpc: RpcClient, raw: bytes) -> str:
    return str(rpc.call("sendrawtransaction", raw.hex()))


def get_transaction(rpc: RpcClient, txid: str) -> dict[str, Any]:
    res = rpc.call("gettransaction", txid)
    return res if isinstance(res, dict) else {"result": res}


def get_address_history(rpc: RpcClient, address: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Active-chain transactions of ``address``, oldest first (follows ``next_skip`` pages)."""
    out: list[dict[str, Any]] = []
    skip: int | None = 0
    while skip is not None and len(out) < limit:
        res = (
            rpc.call("getaddresshistory", address, skip)
            if skip
            else rpc.call("getaddresshistory", address)
        )
        page: Any = res
        skip = None
        if isinstance(res, dict):
            page = res.get("txs", res.get("history"))
            nxt = res.get("next_skip")
            skip = nxt if isinstance(nxt, int) and nxt > 0 else None
        if not isinstance(page, list):
            raise RpcError(-1, "getaddresshistory did not answer a list", "getaddresshistory")
        out.extend(e if isinstance(e, dict) else {"txid": e} for e in page)
        if not page:
            break
    return out[:limit]


# --- mining -------------------------------------------------------------------------


def get_block_template(
    rpc: RpcClient,
    miner: str,
    shape: tuple[int, int, int] | None = None,
    longpollid: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {"miner": miner}
    if shape is not None:
        request["shape"] = list(shape)
    if longpollid is not None:
        request["longpollid"] = longpollid
    res = rpc.call("getblocktemplate", timeout=timeout, **request)  # named params
    if not isinstance(res, dict):
        raise RpcError(-1, "getblocktemplate did not answer an object", "getblocktemplate")
    return res


def submit_block(rpc: RpcClient, raw: bytes) -> str | None:
    """None when the block became the tip, else the BIP22 answer string."""
    res = rpc.call("submitblock", raw.hex())
    return None if res is None else str(res)


def get_mining_info(rpc: RpcClient) -> dict[str, Any]:
    res = rpc.call("getmininginfo")
    return res if isinstance(res, dict) else {}
