"""Block validation rules as pure functions, each rejection a named reason.

Three stages, cheapest first, modeled on Bitcoin Core's CheckBlockHeader /
CheckBlock / ContextualCheckBlock split:

* ``check_header``: needs only the header (sealed headers travel alone in
  header-first sync): version, and the seal proves the work the
  header claims.
* ``check_block_body``: needs the block: sizes, transactions, duplicates, tx root.
* ``check_header_context``: needs the parent's chain: height, time, target.

The state transition (nonces, balances, fees, subsidy, state root) is applied by
chain/chainstate.py through chain/state.py. A verdict is VALID, INVALID (never
retried, the sender misbehaved) or DEFER (may become valid: unknown parent, a
timestamp ahead of our clock).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chain.block import MAX_BLOCK_TX_BYTES, MAX_BLOCK_TXS, Block
from chain.encoding import DecodeError
from chain.header import HEADER_VERSION, Header
from chain.network import Network
from chain.tx import check_transaction
from consensus.difficulty import (
    MAX_FUTURE_BLOCK_TIME_S,
    median_time_past,
    next_target,
)
from consensus.seal import verify_seal


class Verdict(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    DEFER = "defer"


class BlockReject(enum.StrEnum):
    BAD_VERSION = "bad-version"
    JOB_NOT_ACTIVE = "job-not-active"  # no longer produced: the compute market is active
    # A block naming a job it may not mine (chain/jobs.py ``name_job``). Raised by the
    # state transition, reported under its own reason rather than as bad-state.
    JOB_UNKNOWN = "bad-job-unknown"
    JOB_NOT_CLAIMED = "bad-job-not-claimed"  # the named job is not claimed (or committed)
    JOB_NOT_CLAIMANT = "bad-job-not-claimant"  # the block's miner does not hold the claim
    JOB_MISMATCH = "bad-job-mismatch"
    BAD_SEAL_ENCODING = "bad-seal-encoding"
    TOO_MANY_TXS = "too-many-txs"
    BLOCK_TOO_LARGE = "block-too-large"
    BAD_TX = "bad-tx"
    DUPLICATE_TX = "duplicate-tx"
    BAD_TX_ROOT = "bad-tx-root"
    UNKNOWN_PARENT = "unknown-parent"
    PARENT_INVALID = "parent-invalid"
    BAD_HEIGHT = "bad-height"
    TIME_TOO_OLD = "time-too-old"
    TIME_TOO_NEW = "time-too-new"
    BAD_TARGET = "bad-target"
    BAD_STATE = "bad-state"  # a transaction cannot apply (detail names the rule)
    BAD_STATE_ROOT = "bad-state-root"
    BAD_SEAL = "bad-seal"  # detail carries the SealReject value
    STORAGE = "storage-failure"  # (defer) our database failed: not the block's fault


@dataclass(frozen=True)
class BlockCheck:
    verdict: Verdict
    reason: BlockReject | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VALID

    def __str__(self) -> str:
        if self.reason is None:
            return self.verdict.value
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


VALID = BlockCheck(Verdict.VALID)


def invalid(reason: BlockReject, detail: str = "") -> BlockCheck:
    return BlockCheck(Verdict.INVALID, reason, detail)


def defer(reason: BlockReject, detail: str = "") -> BlockCheck:
    return BlockCheck(Verdict.DEFER, reason, detail)


def check_header(header: Header, network: Network) -> BlockCheck:
    """Everything about a non-genesis header that needs no other block."""
    if header.version != HEADER_VERSION:
        return invalid(BlockReject.BAD_VERSION, f"version {header.version}")
    # The exact target needs the parent's chain (check_header_context), but no valid
    # block is easier than the network's limit: checking that here keeps a block with
    # an unknown parent from proving "work" at a target of 2^256 - 1.
    if not 0 < header.target <= network.difficulty.max_target:
        return invalid(BlockReject.BAD_TARGET, f"{header.target:#x} above the limit")
    try:
        seal = header.decoded_seal()
    except DecodeError as exc:
        return invalid(BlockReject.BAD_SEAL_ENCODING, str(exc))
    result = verify_seal(network.pouw, header.work_statement(), seal)
    if not result.ok:
        assert result.reason is not None
        return invalid(BlockReject.BAD_SEAL, result.reason.value)
    return VALID


def check_block_body(block: Block, network: Network) -> BlockCheck:
    """Transactions and their commitment; the header is checked separately."""
    if len(block.txs) > MAX_BLOCK_TXS:
        return invalid(BlockReject.TOO_MANY_TXS, f"{len(block.txs)} > {MAX_BLOCK_TXS}")
    if block.tx_bytes > MAX_BLOCK_TX_BYTES:
        return invalid(BlockReject.BLOCK_TOO_LARGE, f"{block.tx_bytes} tx bytes")
    seen: set[bytes] = set()
    for tx in block.txs:
        if tx.txid in seen:
            return invalid(BlockReject.DUPLICATE_TX, tx.txid.hex())
        seen.add(tx.txid)
    if block.computed_tx_root() != block.header.tx_root:
        return invalid(BlockReject.BAD_TX_ROOT)
    for tx in block.txs:
        check = check_transaction(tx, network.chain_id)
        if not check.ok:
            assert check.reject is not None
            return invalid(BlockReject.BAD_TX, f"{tx.txid.hex()}: {check.reject.value}")
    return VALID


@dataclass(frozen=True)
class ParentContext:
    """What the header-context rules need to know about the parent's chain."""

    height: int
    timestamp: int
    recent_timestamps: tuple[int, ...]  # up to the last 11 block times, oldest first, parent last
    anchor_time: int | None  # timestamp of the chain's block 1 (None if parent is genesis)


def expected_target(network: Network, parent: ParentContext) -> int:
    """The target the child of ``parent`` must carry (ASERT anchored at block 1).

    Block 1 carries the genesis target; it is the anchor, with an anchor parent time
    of its own time minus one spacing, so a genesis time far in the past does not
    skew the schedule.
    """
    params = network.difficulty
    if parent.anchor_time is None:
        return params.genesis_target
    return next_target(
        params,
        anchor_target=params.genesis_target,
        anchor_parent_time=parent.anchor_time - params.target_spacing_s,
        anchor_height=1,
        parent_time=parent.timestamp,
        parent_height=parent.height,
    )


def check_header_context(
    header: Header, network: Network, parent: ParentContext, now: int
) -> BlockCheck:
    if header.height != parent.height + 1:
        return invalid(BlockReject.BAD_HEIGHT, f"{header.height} after {parent.height}")
    mtp = median_time_past(parent.recent_timestamps)
    if header.timestamp <= mtp:
        return invalid(BlockReject.TIME_TOO_OLD, f"{header.timestamp} <= median {mtp}")
    if header.timestamp > now + MAX_FUTURE_BLOCK_TIME_S:
        return defer(BlockReject.TIME_TOO_NEW, f"{header.timestamp - now} s ahead")
    want = expected_target(network, parent)
    if header.target != want:
        return invalid(BlockReject.BAD_TARGET, f"{header.target:#x} != {want:#x}")
    return VALID
