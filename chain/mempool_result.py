"""What ``Mempool.add`` answers (chain/mempool.py): accepted, with what it displaced, or
refused with a named reason (the wire and RPC string)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chain.tx import TxReject


class MempoolReject(enum.StrEnum):
    """Why ``Mempool.add`` refused a transaction. Values are wire/RPC strings.

    The first group is every context-free ``TxReject`` passed through unchanged (same
    wire string); the rest need pool or chain state.
    """

    UNKNOWN_KIND = TxReject.UNKNOWN_KIND.value
    KIND_NOT_ACTIVE = TxReject.KIND_NOT_ACTIVE.value
    WRONG_CHAIN_ID = TxReject.WRONG_CHAIN_ID.value
    PAYLOAD_TOO_LARGE = TxReject.PAYLOAD_TOO_LARGE.value
    ZERO_AMOUNT = TxReject.ZERO_AMOUNT.value
    AMOUNT_OVERFLOW = TxReject.AMOUNT_OVERFLOW.value
    BAD_SIGNATURE = TxReject.BAD_SIGNATURE.value
    JOB_RECIPIENT = TxReject.JOB_RECIPIENT.value
    JOB_AMOUNT = TxReject.JOB_AMOUNT.value
    JOB_BAD_PAYLOAD = TxReject.JOB_BAD_PAYLOAD.value

    ALREADY_KNOWN = "mempool-already-known"  # this txid is in the pool
    NONCE_TOO_LOW = "mempool-nonce-too-low"  # below the sender's confirmed nonce
    NONCE_GAP = "mempool-nonce-gap"  # more than MAX_NONCE_GAP past the next expected nonce
    FEE_TOO_LOW = "mempool-fee-too-low"  # below min_fee, or not above what it would evict
    INSUFFICIENT_BALANCE = "mempool-insufficient-balance"  # with the sender's earlier txs
    REPLACEMENT_FEE_TOO_LOW = "mempool-replacement-fee-too-low"  # same nonce, bump too small
    POOL_FULL = "mempool-full"  # no room (nothing evictable, tx > cap, or queued set full)


# Fails at import if chain/tx.py gains a reason this enum does not pass through.
FROM_TX_REJECT: dict[TxReject, MempoolReject] = {r: MempoolReject(r.value) for r in TxReject}


@dataclass(frozen=True)
class MempoolResult:
    """Outcome of ``Mempool.add``: ``reject`` is None when the tx was accepted.

    On acceptance, ``pending`` tells whether it is executable now (else queued behind
    a nonce gap), ``replaced`` is the txid it replaced (same sender and nonce), and
    ``removed`` the txids evicted or dropped to admit it (later txs of the sender that
    no longer fit its balance, lowest-fee txs evicted for room).
    """

    reject: MempoolReject | None = None
    detail: str = ""
    txid: bytes = b""
    pending: bool = False
    replaced: bytes | None = None
    removed: tuple[bytes, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reject is None


def reject_result(reason: MempoolReject, detail: str, txid: bytes) -> MempoolResult:
    return MempoolResult(reject=reason, detail=detail, txid=txid)
