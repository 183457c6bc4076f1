"""Chain state: accounts, the contribution ledger, immature rewards, supply.

The state is one key-value map (stored under ChainDB's state prefix, committed to by
the state root). Keys:

    b"A" + address20      account: balance u64 | nonce u64
    b"C" + address20      contribution: blocks u64 | work u256 | multiply_adds u128 |
                          delivered u128 | bounties u64 | challenges_lost u64
    b"R" + u64 height     immature reward of the block at that height: miner20 | amount u64
    b"S"                  supply: base units minted so far (genesis + subsidies) u64
    b"J" + job_id         a compute-market job (chain/job_record.py)
    b"w", b"W" + u64 ...  the market's timers (chain/job_record.py keys, chain/jobs.py rules)

Supply invariant: balances + immature rewards + coins held by unsettled jobs
(bounties, bonds, probe deposits) = supply.

This module holds the state's records and the overlay they are written through;
applying transactions and blocks is chain/transition.py (above the market's rules in
chain/jobs.py, so neither imports the other in a circle). Applying a block yields a
change set (key -> new value or None); its undo data is the old value of each changed
key, so disconnecting a block writes those back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from chain.encoding import DecodeError, Reader, Writer

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
    # compute market (chain/jobs.py); a block naming a job:
    JOB_UNKNOWN = "job-unknown"  # no such job (or a job tx naming one)
    JOB_NOT_CLAIMED = "job-not-claimed"  # the named job is not claimed (or committed)
    JOB_NOT_CLAIMANT = "job-not-claimant"  # the block's miner (a tx's sender) is not its claimant
    JOB_MISMATCH = "job-mismatch"  # the header's shape or hA, hB differ from the job's
    # job transactions (a failing one is included as failed: fee and nonce consumed):
    JOB_BAD_SHAPE = "job-bad-shape"
    JOB_BAD_EXPIRY = "job-bad-expiry"  # expires not in (mtp, mtp + max_open_s]
    JOB_BAD_STATUS = "job-bad-status"  # the action does not fit the job's status
    JOB_EXPIRED = "job-expired"  # claim of a job past its expiry
    JOB_BOND_LOW = "job-bond-low"  # claim escrowing less than the required bond
    JOB_CLAIM_EXPIRED = "job-claim-expired"  # commit after the claim's deadline
    JOB_CLAIM_OUTBID = "job-claim-outbid"  # the block's lowest standing claim of the job is another
    JOB_WINDOW_CLOSED = "job-window-closed"  # challenge or probe after the window
    JOB_PROBE_OPEN = "job-probe-open"  # a probe while another is unanswered
    JOB_PROBE_BAD_INDEX = "job-probe-bad-index"  # row or chunk outside C
    JOB_DEPOSIT_LOW = "job-deposit-low"  # probe escrowing less than the required deposit
    JOB_NO_PROBE = "job-no-probe"  # reveal without an open probe
    JOB_REVEAL_LATE = "job-reveal-late"  # reveal after the probe's deadline
    JOB_NOT_BUYER = "job-not-buyer"  # reclaim by someone else than the buyer
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
        # (key, was it changed before, its previous change): undoes writes to a mark
        self._journal: list[tuple[bytes, bool, bytes | None]] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self.changes:
            return self.changes[key]
        return self._base(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self._journal.append((key, key in self.changes, self.changes.get(key)))
        self.changes[key] = value

    def mark(self) -> int:
        """A point to roll back to: the writes made after it can be undone."""
        return len(self._journal)

    def rollback(self, mark: int) -> None:
        """Undo every write made since ``mark`` (a failed transaction's effects)."""
        while len(self._journal) > mark:
            key, had, previous = self._journal.pop()
            if had:
                self.changes[key] = previous
            else:
                del self.changes[key]

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


def supply(state: StateGet) -> int:
    raw = state(KEY_SUPPLY)
    return int.from_bytes(raw, "big") if raw else 0


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
