"""Chain state: accounts, the contribution ledger, immature rewards, supply.

The state is one key-value map (stored under ChainDB's state prefix, committed to by
the state root). Keys:

    b"A" + address20      account: balance u64 | nonce u64
    b"C" + address20      contribution: blocks u64 | work u256 | multiply_adds u128 |
                          delivered u128 | bounties u64 | challenges_lost u64
    b"R" + u64 height     immature reward of the block at that height: miner20 | amount u64
    b"S"                  supply: base units minted so far (genesis + subsidies) u64

Applying a block yields a change set (key -> new value or None); its undo data is
the old value of each changed key, so disconnecting a block writes those back.
The miner's reward (subsidy + fees) matures: it is credited ``coinbase_maturity``
blocks later, when the block at height h + maturity connects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from chain.encoding import DecodeError, Reader, Writer
from chain.header import Header
from chain.tx import Transaction, TxKind
from consensus.difficulty import block_work
from consensus.ints import U64_MAX
from consensus.params import SubsidyParams
from consensus.subsidy import block_subsidy

PREFIX_ACCOUNT = b"A"
PREFIX_CONTRIBUTION = b"C"
PREFIX_REWARD = b"R"
KEY_SUPPLY = b"S"
MAX_STATE_KEY = 64
MAX_STATE_VALUE = 4096

StateGet = Callable[[bytes], bytes | None]
Changes = dict[bytes, bytes | None]


def account_key(address: bytes) -> bytes:
    return PREFIX_ACCOUNT + address


def contribution_key(address: bytes) -> bytes:
    return PREFIX_CONTRIBUTION + address


def reward_key(height: int) -> bytes:
    return PREFIX_REWARD + height.to_bytes(8, "big")


@dataclass(frozen=True)
class Account:
    balance: int = 0
    nonce: int = 0

    def to_bytes(self) -> bytes:
        return Writer().u64(self.balance).u64(self.nonce).getvalue()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Account:
        if data is None:
            return cls()
        r = Reader(data)
        acct = cls(r.u64("balance"), r.u64("nonce"))
        r.finish()
        return acct


@dataclass(frozen=True)
class Contribution:
    """What an address has done for the network (the open ledger of compute)."""

    blocks: int = 0
    work: int = 0  # sum of block work (2^256 / target): expected multiply-adds behind them
    multiply_adds: int = 0  # m*n*k of the products its blocks carried
    delivered: int = 0  # multiply-adds delivered to paying jobs (compute market)
    bounties: int = 0
    challenges_lost: int = 0

    def to_bytes(self) -> bytes:
        w = Writer().u64(self.blocks).u256(self.work)
        w.bytes_n(self.multiply_adds.to_bytes(16, "big"), 16)
        w.bytes_n(self.delivered.to_bytes(16, "big"), 16)
        return w.u64(self.bounties).u64(self.challenges_lost).getvalue()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Contribution:
        if data is None:
            return cls()
        r = Reader(data)
        c = cls(
            blocks=r.u64("blocks"),
            work=r.u256("work"),
            multiply_adds=int.from_bytes(r.bytes_n(16, "multiply_adds"), "big"),
            delivered=int.from_bytes(r.bytes_n(16, "delivered"), "big"),
            bounties=r.u64("bounties"),
            challenges_lost=r.u64("challenges_lost"),
        )
        r.finish()
        return c


class StateReject(enum.StrEnum):
    NONCE_TOO_LOW = "nonce-too-low"
    NONCE_GAP = "nonce-gap"
    INSUFFICIENT_BALANCE = "insufficient-balance"
    BALANCE_OVERFLOW = "balance-overflow"
    KIND_NOT_ACTIVE = "kind-not-active"
    SUPPLY_CAP = "supply-cap-exceeded"


class StateError(Exception):
    def __init__(self, reason: StateReject, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class Overlay:
    """A write overlay over a base state: reads see the writes made so far."""

    def __init__(self, base: StateGet) -> None:
        self._base = base
        self.changes: Changes = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.changes:
            return self.changes[key]
        return self._base(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.changes[key] = value

    def account(self, address: bytes) -> Account:
        return Account.from_bytes(self.get(account_key(address)))

    def set_account(self, address: bytes, acct: Account) -> None:
        self.put(account_key(address), acct.to_bytes())


def apply_transaction(state: Overlay, tx: Transaction) -> int:
    """Apply one context-free-valid transaction; returns its fee. Raises StateError."""
    if tx.kind != TxKind.TRANSFER:
        raise StateError(StateReject.KIND_NOT_ACTIVE, f"kind {tx.kind}")
    sender = state.account(tx.sender)
    if tx.nonce < sender.nonce:
        raise StateError(StateReject.NONCE_TOO_LOW, f"nonce {tx.nonce} < {sender.nonce}")
    if tx.nonce > sender.nonce:
        raise StateError(StateReject.NONCE_GAP, f"nonce {tx.nonce} > {sender.nonce}")
    cost = tx.amount + tx.fee
    if cost > sender.balance:
        raise StateError(StateReject.INSUFFICIENT_BALANCE, f"needs {cost}, has {sender.balance}")
    state.set_account(tx.sender, Account(sender.balance - cost, sender.nonce + 1))
    recipient = state.account(tx.recipient)
    if recipient.balance + tx.amount > U64_MAX:
        raise StateError(StateReject.BALANCE_OVERFLOW)
    state.set_account(tx.recipient, Account(recipient.balance + tx.amount, recipient.nonce))
    return tx.fee


def supply(state: StateGet) -> int:
    raw = state(KEY_SUPPLY)
    return int.from_bytes(raw, "big") if raw else 0


def apply_block(
    base: StateGet, header: Header, txs: Iterable[Transaction], subsidy: SubsidyParams
) -> Changes:
    """The state changes of connecting a block on top of ``base``. Raises StateError."""
    state = Overlay(base)
    fees = 0
    for tx in txs:
        fees += apply_transaction(state, tx)
    height = header.height
    minted = block_subsidy(subsidy, height)
    new_supply = supply(state.get) + minted
    if new_supply > subsidy.supply_cap:
        raise StateError(StateReject.SUPPLY_CAP)
    state.put(KEY_SUPPLY, new_supply.to_bytes(8, "big"))
    state.put(reward_key(height), header.miner + (minted + fees).to_bytes(8, "big"))
    _release_matured_reward(state, height - subsidy.coinbase_maturity)
    c = Contribution.from_bytes(state.get(contribution_key(header.miner)))
    state.put(
        contribution_key(header.miner),
        Contribution(
            blocks=c.blocks + 1,
            work=c.work + block_work(header.target),
            multiply_adds=c.multiply_adds + header.m * header.n * header.k,
            delivered=c.delivered,
            bounties=c.bounties,
            challenges_lost=c.challenges_lost,
        ).to_bytes(),
    )
    return state.changes


def _release_matured_reward(state: Overlay, height: int) -> None:
    if height < 1:
        return
    raw = state.get(reward_key(height))
    if raw is None:
        return
    miner, amount = raw[:20], int.from_bytes(raw[20:28], "big")
    acct = state.account(miner)
    state.set_account(miner, Account(acct.balance + amount, acct.nonce))
    state.put(reward_key(height), None)


def genesis_state(allocations: Iterable[tuple[bytes, int]]) -> Changes:
    """The state of the genesis block: allocations and the supply they make up."""
    changes: Changes = {}
    total = 0
    for address, amount in allocations:
        prev = Account.from_bytes(changes.get(account_key(address)))
        changes[account_key(address)] = Account(prev.balance + amount, 0).to_bytes()
        total += amount
    changes[KEY_SUPPLY] = total.to_bytes(8, "big")
    return changes


def encode_undo(old_values: Mapping[bytes, bytes | None]) -> bytes:
    w = Writer().u32(len(old_values))
    for key, value in sorted(old_values.items()):
        w.varbytes(key)
        w.u8(0 if value is None else 1)
        if value is not None:
            w.varbytes(value)
    return w.getvalue()


def decode_undo(data: bytes) -> Changes:
    r = Reader(data)
    out: Changes = {}
    for _ in range(r.u32("undo count")):
        key = r.varbytes(MAX_STATE_KEY, "undo key")
        present = r.u8("undo flag")
        if present > 1:
            raise DecodeError("undo flag must be 0 or 1")
        out[key] = r.varbytes(MAX_STATE_VALUE, "undo value") if present else None
    r.finish()
    return out
