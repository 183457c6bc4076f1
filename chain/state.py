"""Chain state: accounts, the contribution ledger, immature rewards, supply.

The state is one key-value map (stored under ChainDB's state prefix, committed to by
the state root). Keys:

    b"A" + address20      account: balance u64 | nonce u64
    b"C" + address20      contribution: blocks u64 | work u256 | multiply_adds u128 |
                          delivered u128 | bounties u64 | challenges_lost u64
    b"R" + u64 height     immature reward of the block at that height: miner20 | amount u64
    b"S"                  supply: base units minted so far (genesis + subsidies) u64
    b"J" + job_id         a compute-market job (chain/jobs.py)
    b"Q" + u64 height     first job settling at the end of that block (chain/jobs.py)

Supply invariant: balances + immature rewards + coins held by unsettled jobs
(bounty escrow and held job-block rewards) = supply.

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
from chain.header import NO_JOB, Header
from chain.tx import Transaction, TxKind
from consensus.difficulty import block_work
from consensus.ints import U64_MAX
from consensus.params import MarketParams, PouwParams, SubsidyParams
from consensus.subsidy import block_subsidy

PREFIX_ACCOUNT = b"A"
PREFIX_CONTRIBUTION = b"C"
PREFIX_REWARD = b"R"
KEY_SUPPLY = b"S"
MAX_STATE_KEY = 64
MAX_STATE_VALUE = 4096

DEFAULT_MARKET = MarketParams()

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
    # compute market (chain/jobs.py); a block naming a job:
    JOB_UNKNOWN = "job-unknown"  # no such job (or a job tx naming one)
    JOB_TAKEN = "job-taken"  # another block already mined it
    JOB_CLOSED = "job-closed"  # the buyer cancelled it
    JOB_EXPIRED = "job-expired"  # the block is above the job's expiry height
    JOB_MISMATCH = "job-mismatch"  # the header's shape or hA, hB differ from the job's
    # job transactions:
    JOB_BAD_SHAPE = "job-bad-shape"
    JOB_BAD_EXPIRY = "job-bad-expiry"
    JOB_NOT_MINED = "job-not-mined"  # commit to a job not (or no longer) waiting for C
    JOB_COMMIT_NOT_MINER = "job-commit-not-miner"
    JOB_COMMIT_LATE = "job-commit-late"
    JOB_NOT_COMMITTED = "job-not-committed"  # challenge of a job without a live commitment
    JOB_CHALLENGE_LATE = "job-challenge-late"
    JOB_RECLAIM_NOT_BUYER = "job-reclaim-not-buyer"
    JOB_NOT_RECLAIMABLE = "job-not-reclaimable"
    CHALLENGE_BAD_INDEX = "challenge-bad-index"
    CHALLENGE_MALFORMED = "challenge-malformed"
    CHALLENGE_BAD_ROW_BRANCH = "challenge-bad-row-branch"
    CHALLENGE_BAD_COLUMN_BRANCH = "challenge-bad-column-branch"
    CHALLENGE_BAD_RESULT_BRANCH = "challenge-bad-result-branch"
    CHALLENGE_ENTRY_CORRECT = "challenge-entry-correct"


class StateError(Exception):
    def __init__(self, reason: StateReject, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class JobNameError(StateError):
    """The block's header names a job it may not mine (reason job-unknown, ...)."""


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


def add_contribution(
    state: Overlay,
    address: bytes,
    *,
    blocks: int = 0,
    work: int = 0,
    multiply_adds: int = 0,
    delivered: int = 0,
    bounties: int = 0,
    challenges_lost: int = 0,
) -> None:
    c = Contribution.from_bytes(state.get(contribution_key(address)))
    state.put(
        contribution_key(address),
        Contribution(
            blocks=c.blocks + blocks,
            work=c.work + work,
            multiply_adds=c.multiply_adds + multiply_adds,
            delivered=c.delivered + delivered,
            bounties=c.bounties + bounties,
            challenges_lost=c.challenges_lost + challenges_lost,
        ).to_bytes(),
    )


def apply_transaction(
    state: Overlay,
    tx: Transaction,
    height: int = 0,
    pouw: PouwParams | None = None,
    market: MarketParams = DEFAULT_MARKET,
) -> int:
    """Apply one context-free-valid transaction; returns its fee. Raises StateError.

    Job kinds need the network's PoUW rules (``pouw``); without them they are refused.
    """
    if tx.kind != TxKind.TRANSFER and pouw is None:
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
    if tx.kind != TxKind.TRANSFER:
        from chain.jobs import apply_job_tx

        assert pouw is not None
        apply_job_tx(state, tx, height, pouw, market)  # the amount is the job's escrow
        return tx.fee
    recipient = state.account(tx.recipient)
    if recipient.balance + tx.amount > U64_MAX:
        raise StateError(StateReject.BALANCE_OVERFLOW)
    state.set_account(tx.recipient, Account(recipient.balance + tx.amount, recipient.nonce))
    return tx.fee


def supply(state: StateGet) -> int:
    raw = state(KEY_SUPPLY)
    return int.from_bytes(raw, "big") if raw else 0


def apply_block(
    base: StateGet,
    header: Header,
    txs: Iterable[Transaction],
    subsidy: SubsidyParams,
    pouw: PouwParams | None = None,
    market: MarketParams = DEFAULT_MARKET,
) -> Changes:
    """The state changes of connecting a block on top of ``base``. Raises StateError.

    Order: the job the header names (checked before the block's own txs, so a cancel
    in the same block cannot take it away), the transactions, the subsidy and the
    reward (held with the job for a job block, else immature under "R"), the reward
    maturing now, the contribution ledger, and last the jobs whose challenge window
    closes at this height.
    """
    from chain import jobs

    state = Overlay(base)
    height = header.height
    job = None
    if header.job_id != NO_JOB:
        if pouw is None:
            raise StateError(StateReject.KIND_NOT_ACTIVE, "blocks may not name a job here")
        try:
            job = jobs.name_job(state, header)  # marks it mined: no tx below can cancel it
        except StateError as exc:
            raise JobNameError(exc.reason, exc.detail) from None
    fees = 0
    for tx in txs:
        fees += apply_transaction(state, tx, height, pouw, market)
    minted = block_subsidy(subsidy, height)
    new_supply = supply(state.get) + minted
    if new_supply > subsidy.supply_cap:
        raise StateError(StateReject.SUPPLY_CAP)
    state.put(KEY_SUPPLY, new_supply.to_bytes(8, "big"))
    if job is not None:
        jobs.hold_job_reward(state, header, minted + fees)
    else:
        state.put(reward_key(height), header.miner + (minted + fees).to_bytes(8, "big"))
    _release_matured_reward(state, height - subsidy.coinbase_maturity)
    add_contribution(
        state,
        header.miner,
        blocks=1,
        work=block_work(header.target),
        multiply_adds=header.m * header.n * header.k,
    )
    jobs.settle_due(state, height)
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
