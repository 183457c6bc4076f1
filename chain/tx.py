"""The transaction: fields, canonical encoding, id, signing and context-free checks.

Wire layout (docs/PROTOCOL.md), fields in this order, all integers big-endian:

    chain_id u32 | kind u8 | sender_pubkey 32 | nonce u64 | fee u64 |
    recipient 20 | amount u64 | payload varbytes (<= MAX_TX_PAYLOAD) | signature 64

Everything but the signature is the *unsigned encoding*. The txid is
``tagged_hash(TAG_TX, unsigned)`` and the signature is Ed25519 over
``tagged_hash(TAG_TX_SIG, unsigned)``. Because ``chain_id`` is the first field of what
is signed, a transaction signed for one network is invalid on every other one
(replay protection, as EIP-155 gives Ethereum).

All kinds share this one layout; data specific to a kind goes into ``payload``, so
the decoder never depends on the kind and a node can decode (and name the rejection
of) a kind it does not implement.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from chain.address import (
    ADDRESS_SIZE,
    address_from_pubkey,
)
from chain.encoding import DecodeError, Reader, Writer
from chain.job_payloads import (
    MAX_CHALLENGE_PAYLOAD,
    MAX_REVEAL_PAYLOAD,
    JobPayloadError,
    decode_job_payload,
)
from chain.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, verify
from chain.merkle import tx_leaf, tx_root
from chain.txkind import AMOUNT_KINDS, TxKind
from consensus.hashing import TAG_TX, TAG_TX_SIG, tagged_hash
from consensus.ints import U8_MAX, U32_MAX, U64_MAX

# Kinds a node accepts: all of them (the market's second design, docs/MARKET.md).
ACTIVE_KINDS: frozenset[int] = frozenset(int(k) for k in TxKind)

# A transfer needs at most a memo, and the job kinds reference matrix data by hash
# rather than inline, so 1 KiB is plenty for every kind but two (a challenge, a
# reveal). Small txs bound what one peer message, one mempool entry and one signature
# check can cost.
MAX_TX_PAYLOAD = 1024
# Payload cap per kind, checked on the length prefix before the payload is read.
# A kind not listed (or an unknown kind) gets MAX_TX_PAYLOAD.
PAYLOAD_CAPS: dict[int, int] = {
    TxKind.JOB_CHALLENGE: MAX_CHALLENGE_PAYLOAD,
    TxKind.JOB_REVEAL: MAX_REVEAL_PAYLOAD,
}


def payload_cap(kind: int) -> int:
    """The largest payload a transaction of ``kind`` may carry."""
    return PAYLOAD_CAPS.get(kind, MAX_TX_PAYLOAD)


# Encoded size of a transaction with an empty payload.
TX_FIXED_SIZE = 4 + 1 + PUBLIC_KEY_SIZE + 8 + 8 + ADDRESS_SIZE + 8 + 4 + SIGNATURE_SIZE
# Largest ordinary encoding (149 + 1024 = 1173 bytes).
MAX_PLAIN_TX_SIZE = TX_FIXED_SIZE + MAX_TX_PAYLOAD
# Largest encoding of any kind (a challenge at MAX_K); the cap of one tx message.
MAX_TX_SIZE = TX_FIXED_SIZE + max(MAX_TX_PAYLOAD, *PAYLOAD_CAPS.values())

_ZERO_SIG = bytes(SIGNATURE_SIZE)


def _check_uint(name: str, value: object, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an int in [0, {maximum}], got {value!r}")


def _check_bytes(name: str, value: object, size: int | None) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True)
class Transaction:
    """A transaction. Construction checks field widths, so every instance encodes.

    Rules beyond "it encodes" (active kind, payload cap, signature, ...) are not
    enforced here but by ``check_transaction``, so that a bad transaction can exist
    long enough to be rejected with a named reason.
    """

    chain_id: int
    kind: int
    sender_pubkey: bytes
    nonce: int
    fee: int
    recipient: bytes
    amount: int
    payload: bytes = b""
    signature: bytes = _ZERO_SIG

    def __post_init__(self) -> None:
        _check_uint("chain_id", self.chain_id, U32_MAX)
        _check_uint("kind", self.kind, U8_MAX)
        if type(self.kind) is not int:  # TxKind.TRANSFER -> 1: store plain ints only
            object.__setattr__(self, "kind", int(self.kind))
        _check_bytes("sender_pubkey", self.sender_pubkey, PUBLIC_KEY_SIZE)
        _check_uint("nonce", self.nonce, U64_MAX)
        _check_uint("fee", self.fee, U64_MAX)
        _check_bytes("recipient", self.recipient, ADDRESS_SIZE)
        _check_uint("amount", self.amount, U64_MAX)
        _check_bytes("payload", self.payload, None)
        if len(self.payload) > U32_MAX:
            raise ValueError("payload does not fit a u32 length prefix")
        _check_bytes("signature", self.signature, SIGNATURE_SIZE)

    # --- encoding ----------------------------------------------------------------

    def _write_unsigned(self, w: Writer) -> None:
        w.u32(self.chain_id).u8(self.kind).bytes_n(self.sender_pubkey, PUBLIC_KEY_SIZE)
        w.u64(self.nonce).u64(self.fee).bytes_n(self.recipient, ADDRESS_SIZE)
        w.u64(self.amount).varbytes(self.payload)

    @cached_property
    def unsigned_bytes(self) -> bytes:
        """Canonical encoding of every field but the signature."""
        w = Writer()
        self._write_unsigned(w)
        return w.getvalue()

    def to_bytes(self) -> bytes:
        """Canonical encoding of the whole transaction (the wire form)."""
        return self.unsigned_bytes + self.signature

    def write_to(self, w: Writer) -> None:
        """Append the wire form to ``w`` (for blocks and messages that embed txs)."""
        w.raw(self.unsigned_bytes).bytes_n(self.signature, SIGNATURE_SIZE)

    @classmethod
    def read_from(cls, r: Reader) -> Transaction:
        """Read one transaction from ``r``; may be followed by more data."""
        chain_id = r.u32("chain_id")
        kind = r.u8("kind")
        sender_pubkey = r.bytes_n(PUBLIC_KEY_SIZE, "sender_pubkey")
        nonce = r.u64("nonce")
        fee = r.u64("fee")
        recipient = r.bytes_n(ADDRESS_SIZE, "recipient")
        amount = r.u64("amount")
        payload = r.varbytes(payload_cap(kind), "payload")
        signature = r.bytes_n(SIGNATURE_SIZE, "signature")
        return cls(chain_id, kind, sender_pubkey, nonce, fee, recipient, amount, payload, signature)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Transaction:
        """Strict decode of exactly one transaction; any defect is a ``DecodeError``."""
        cap = TX_FIXED_SIZE + payload_cap(data[4] if len(data) > 4 else 0)
        if len(data) > cap:
            raise DecodeError(f"transaction is {len(data)} bytes, the maximum is {cap}")
        r = Reader(data)
        tx = cls.read_from(r)
        r.finish()
        return tx

    # --- identity and signing ----------------------------------------------------

    @cached_property
    def txid(self) -> bytes:
        """tagged_hash(TAG_TX, unsigned_bytes): fixed before signing, not malleable."""
        return tagged_hash(TAG_TX, self.unsigned_bytes)

    @cached_property
    def sighash(self) -> bytes:
        """The 32-byte message the sender signs: tagged_hash(TAG_TX_SIG, unsigned_bytes)."""
        return tagged_hash(TAG_TX_SIG, self.unsigned_bytes)

    @cached_property
    def sender(self) -> bytes:
        """The sender's 20-byte address, derived from ``sender_pubkey``."""
        return address_from_pubkey(self.sender_pubkey)

    @cached_property
    def leaf(self) -> bytes:
        """This transaction's leaf in a block's tx tree (commits to the signature)."""
        return tx_leaf(self.txid, self.signature)

    def has_valid_signature(self) -> bool:
        return verify(self.sender_pubkey, self.sighash, self.signature)

    def __repr__(self) -> str:
        return (
            f"Transaction(txid={self.txid.hex()}, chain_id={self.chain_id}, kind={self.kind}, "
            f"nonce={self.nonce}, fee={self.fee}, amount={self.amount}, "
            f"recipient={self.recipient.hex()}, payload={len(self.payload)}B)"
        )


def sign(tx: Transaction, key: PrivateKey) -> Transaction:
    """A copy of ``tx`` signed by ``key``, which must own ``tx.sender_pubkey``."""
    if key.public_key != tx.sender_pubkey:
        raise ValueError("signing key does not match the transaction's sender_pubkey")
    return dataclasses.replace(tx, signature=key.sign(tx.sighash))


def transactions_root(txs: Sequence[Transaction]) -> bytes:
    """The tx root a block header commits to (chain/merkle.py ``tx_root``)."""
    return tx_root([tx.leaf for tx in txs])


# --- context-free checks (the model is Bitcoin Core's CheckTransaction) ---------------


class TxReject(enum.StrEnum):
    """Why a transaction is invalid regardless of chain state. Values are wire strings."""

    UNKNOWN_KIND = "tx-unknown-kind"  # kind is not defined at all
    KIND_NOT_ACTIVE = "tx-kind-not-active"  # a reserved kind not yet enabled
    WRONG_CHAIN_ID = "tx-wrong-chain-id"  # signed for another network
    PAYLOAD_TOO_LARGE = "tx-payload-too-large"
    ZERO_AMOUNT = "tx-zero-amount"
    AMOUNT_OVERFLOW = "tx-amount-overflow"  # amount + fee does not fit a u64
    BAD_SIGNATURE = "tx-bad-signature"
    JOB_RECIPIENT = "tx-job-recipient"  # a job kind with a non-zero recipient
    JOB_AMOUNT = "tx-job-amount"  # submit/claim/probe with amount 0, another job kind with one
    JOB_BAD_PAYLOAD = "tx-job-bad-payload"  # the payload does not decode for its kind


@dataclass(frozen=True)
class TxCheck:
    """Result of a check: ``reject`` is None when the transaction passed."""

    reject: TxReject | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reject is None


TX_OK = TxCheck()

_KNOWN_KINDS = frozenset(int(k) for k in TxKind)


def _rule_kind(tx: Transaction, chain_id: int) -> TxCheck | None:
    if tx.kind not in _KNOWN_KINDS:
        return TxCheck(TxReject.UNKNOWN_KIND, f"kind {tx.kind} is not defined")
    if tx.kind not in ACTIVE_KINDS:
        return TxCheck(TxReject.KIND_NOT_ACTIVE, f"kind {TxKind(tx.kind).name} is reserved")
    return None


def _rule_chain_id(tx: Transaction, chain_id: int) -> TxCheck | None:
    if tx.chain_id != chain_id:
        return TxCheck(
            TxReject.WRONG_CHAIN_ID, f"signed for chain {tx.chain_id}, this is chain {chain_id}"
        )
    return None


def _rule_payload(tx: Transaction, chain_id: int) -> TxCheck | None:
    cap = payload_cap(tx.kind)
    if len(tx.payload) > cap:
        return TxCheck(
            TxReject.PAYLOAD_TOO_LARGE, f"payload is {len(tx.payload)} bytes, the cap is {cap}"
        )
    return None


def _rule_job(tx: Transaction, chain_id: int) -> TxCheck | None:
    """Job kinds: the payload decodes, nothing is sent to a recipient (the market
    escrows it), and only a submit (bounty), a claim (bond) and a probe (deposit) move
    an amount, of at least 1."""
    if tx.kind == TxKind.TRANSFER:
        return None
    if tx.recipient != bytes(ADDRESS_SIZE):
        return TxCheck(TxReject.JOB_RECIPIENT, "job transactions have a zero recipient")
    if tx.kind in AMOUNT_KINDS:
        if tx.amount == 0:
            what = TxKind(tx.kind).name
            return TxCheck(TxReject.JOB_AMOUNT, f"{what} escrows its amount: at least 1")
    elif tx.amount != 0:
        return TxCheck(TxReject.JOB_AMOUNT, "only submit, claim and probe move an amount")
    try:
        decode_job_payload(tx.kind, tx.payload)
    except JobPayloadError as exc:
        return TxCheck(TxReject.JOB_BAD_PAYLOAD, str(exc))
    return None


def _rule_amount(tx: Transaction, chain_id: int) -> TxCheck | None:
    # A transfer that moves nothing is almost always a wallet bug (a unit conversion
    # that rounded to 0); it would only burn a fee and a nonce. Data-only actions get
    # their own kinds. To cancel a pending tx, send >= 1 unit to yourself instead.
    if tx.kind == TxKind.TRANSFER and tx.amount == 0:
        return TxCheck(TxReject.ZERO_AMOUNT, "a transfer must move a non-zero amount")
    # The sender is debited amount + fee; it must fit a u64 so that no balance
    # arithmetic downstream can overflow (Bitcoin's MoneyRange checks, in spirit).
    if tx.amount + tx.fee > U64_MAX:
        return TxCheck(TxReject.AMOUNT_OVERFLOW, "amount + fee exceeds 2^64 - 1")
    return None


def _rule_signature(tx: Transaction, chain_id: int) -> TxCheck | None:
    if not tx.has_valid_signature():
        return TxCheck(TxReject.BAD_SIGNATURE, "signature does not verify for sender_pubkey")
    return None


# Cheap rules first; the signature check (the only costly one) runs last.
TX_RULES: tuple[Callable[[Transaction, int], TxCheck | None], ...] = (
    _rule_kind,
    _rule_chain_id,
    _rule_payload,
    _rule_amount,
    _rule_job,
    _rule_signature,
)


def check_transaction(tx: Transaction, chain_id: int) -> TxCheck:
    """All rules that need no chain state; the first failing rule names the rejection.

    Self-transfers (recipient == sender) are valid on purpose: in an account model
    they are harmless (the net effect is the fee paid and the nonce used), and they are
    the standard way to replace or cancel a stuck pending transaction. Balance and
    nonce rules need state and live with the state transition, not here.
    """
    for rule in TX_RULES:
        result = rule(tx, chain_id)
        if result is not None:
            return result
    return TX_OK
