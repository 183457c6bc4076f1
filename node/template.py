"""Block templates: everything of the next block but its operands' commitments and seal.

A template fixes the parent, time, target, transactions, miner and the product's
shape, and precomputes the state root the block will commit to (the state change
depends on the shape through the contribution ledger, not on the operands). The
mining engine then supplies hA and hB through ``statement`` and, if a tile wins,
``block_with_seal`` assembles the block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chain.block import Block
from chain.chainstate import ChainState
from chain.header import HEADER_VERSION, NO_JOB, Header
from chain.job_payloads import JobPayloadError, decode_job_payload
from chain.jobs import BlockClock, check_named_job, lowest_claims
from chain.state import Overlay, StateError
from chain.transition import apply_transaction
from chain.tx import Transaction, transactions_root
from chain.txkind import TxKind
from chain.validation import expected_target
from consensus.difficulty import median_time_past
from consensus.seal import Seal, WorkStatement


class TemplateShapeError(ValueError):
    """The engine was handed operands of another shape than the template's."""


@dataclass(frozen=True)
class BlockTemplate:
    header: Header  # h_a, h_b and seal still blank
    txs: tuple[Transaction, ...]

    @property
    def target(self) -> int:
        return self.header.target

    def header_for(self, h_a: bytes, h_b: bytes) -> Header:
        if self.header.job_id != NO_JOB and (h_a, h_b) != (self.header.h_a, self.header.h_b):
            raise TemplateShapeError("the operands' commitments are not the job's hA, hB")
        return replace(self.header, h_a=h_a, h_b=h_b)

    def statement(self, m: int, k: int, n: int, h_a: bytes, h_b: bytes) -> WorkStatement:
        if (m, k, n) != (self.header.m, self.header.k, self.header.n):
            raise TemplateShapeError(
                f"operands are {m}x{k}x{n}, the template was built for "
                f"{self.header.m}x{self.header.k}x{self.header.n}"
            )
        return self.header_for(h_a, h_b).work_statement()

    def block_with_seal(self, work: WorkStatement, seal: Seal) -> Block:
        header = self.header_for(work.h_a, work.h_b).with_seal(seal)
        return Block(header, self.txs)


def next_timestamp(chain: ChainState, now: int) -> int:
    """Our clock, but always above the median time past of the tip."""
    return max(now, median_time_past(chain.parent_context(chain.tip).recent_timestamps) + 1)


def applicable_txs(chain: ChainState, header: Header, txs: list[Transaction]) -> list[Transaction]:
    """The txs that apply on the tip, checking first the job ``header`` names, if any
    (JobNameError: the caller picks other work).

    The pool's order is kept (per sender, nonce order always), except that a job
    transaction waits, with its sender's later txs, for the JOB_SUBMIT (of another
    sender) further down the list that creates its job: miners claim and commit jobs
    whose submit is still in the pool (docs/MARKET.md, "Delivery before confirmation"),
    and the pool orders senders by fee, not by what they depend on. Should such waits
    form a cycle, the first waiting tx goes ahead (and fails: its job does not exist
    yet). After MAX_WAIT_PASSES passes the rest goes as listed, so a pool crafted into
    long chains of waits costs bounded time. Racing claims of one job need no order:
    the lowest txid among the standing ones wins wherever it stands
    (``jobs.lowest_claims``). Should a tx be left out, and that change which claims
    stand (a left-out claim, or a sender's total), the rest is judged again, so that
    the outcome is computed for the block's own txs, as validation computes it.

    A job transaction whose market rule fails is still applicable (it is included as
    failed). A tx that does not apply at all (its sender can no longer pay the fee, a
    nonce the pool got wrong), and the later txs of its sender that then have a nonce
    gap, are left out instead of making the template invalid.
    """
    net = chain.network
    if header.job_id != NO_JOB:
        check_named_job(chain.state_get, header)
    mtp = chain.mtp_after(chain.tip)
    while True:
        lowest = lowest_claims(chain.state_get, txs, mtp, net.market)
        clock = BlockClock(header.height, mtp, net.difficulty.target_spacing_s, lowest)
        kept = _in_order(chain, clock, txs)
        if len(kept) == len(txs) or lowest_claims(chain.state_get, kept, mtp, net.market) == lowest:
            return kept
        txs = kept  # a tx left out changed which claims stand: judge the rest again


# Passes over the list that honour the waits at most: ordinary pools need a few (one
# per step of a chain of waits pointing further down the list).
MAX_WAIT_PASSES = 64


def _in_order(chain: ChainState, clock: BlockClock, txs: list[Transaction]) -> list[Transaction]:
    """The txs that apply, each job tx after its pooled submit (``applicable_txs``)."""
    state = Overlay(chain.state_get)
    waits = _submits_awaited(txs)
    pending = list(txs)
    kept: list[Transaction] = []
    passes = 0
    while pending:
        unprocessed = {tx.txid for tx in pending}
        blocked: set[bytes] = set()  # senders whose next tx waits
        later: list[Transaction] = []
        for tx in pending:
            submit = waits.get(tx.txid) if passes < MAX_WAIT_PASSES else None
            if tx.sender in blocked or submit in unprocessed:
                blocked.add(tx.sender)
                later.append(tx)
                continue
            unprocessed.discard(tx.txid)
            mark = state.mark()
            try:
                apply_transaction(state, tx, clock, chain.network)
            except StateError:
                state.rollback(mark)
                continue
            kept.append(tx)
        if len(later) == len(pending):  # nothing could go: a cycle of waits
            waits.pop(later[0].txid)  # the first (its sender's next tx) goes ahead
        pending = later
        passes += 1
    return kept


def _submits_awaited(txs: list[Transaction]) -> dict[bytes, bytes]:
    """txid -> the JOB_SUBMIT in ``txs`` that creates its job, where that is another
    sender's (a sender's own submit comes before its job txs by nonce)."""
    submits = {tx.txid: tx.sender for tx in txs if tx.kind == TxKind.JOB_SUBMIT}
    out: dict[bytes, bytes] = {}
    for tx in txs:
        if tx.kind in (TxKind.TRANSFER, TxKind.JOB_SUBMIT):
            continue
        try:
            payload = decode_job_payload(tx.kind, tx.payload)
        except JobPayloadError:
            continue
        job_id = getattr(payload, "job_id", None)
        if job_id is not None and submits.get(job_id, tx.sender) != tx.sender:
            out[tx.txid] = job_id
    return out


def build_template(
    chain: ChainState,
    miner: bytes,
    txs: list[Transaction],
    shape: tuple[int, int, int],
    now: int,
    job: JobRef | None = None,
) -> BlockTemplate:
    """A template on the current tip; ``txs`` come from mempool.select (in order).

    With ``job``, the header names that job and carries its hA, hB (which the
    operands' commitments must then reproduce); ``shape`` must be the job's. Raises
    StateError (JobNameError) if the job cannot be mined on this tip.
    """
    m, k, n = shape
    tip = chain.tip
    header = Header(
        version=HEADER_VERSION,
        height=tip.height + 1,
        parent=tip.hash,
        timestamp=next_timestamp(chain, now),
        target=expected_target(chain.network, chain.parent_context(tip)),
        tx_root=bytes(32),
        state_root=bytes(32),
        miner=miner,
        job_id=NO_JOB if job is None else job.job_id,
        m=m,
        k=k,
        n=n,
        h_a=bytes(32) if job is None else job.h_a,
        h_b=bytes(32) if job is None else job.h_b,
    )
    txs = applicable_txs(chain, header, list(txs))
    header = replace(header, tx_root=transactions_root(txs))
    changes = chain.block_changes(header, txs)
    header = replace(header, state_root=chain.state_root_after(changes))
    return BlockTemplate(header, tuple(txs))


@dataclass(frozen=True)
class JobRef:
    """The job a template names: its id and the commitments the header must carry."""

    job_id: bytes
    h_a: bytes
    h_b: bytes
    # False: the claim is not on chain yet, so the header may not name the job; the
    # product is mined as the miner's own work (the lottery rides on it all the same).
    named: bool = True
