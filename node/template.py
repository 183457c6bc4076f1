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
from chain.jobs import BlockClock, check_named_job
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
    transaction waits, with its sender's later txs, for what it depends on further down
    the list: the JOB_SUBMIT (of another sender) that creates its job, and for a claim,
    the claim of the same job with the lowest txid. Miners claim jobs whose submit is
    still in the pool and may race for one (docs/MARKET.md, "Delivery before
    confirmation"); the pool orders senders by fee, not by what they depend on, and
    the lowest txid winning is what lets racing miners agree on who computes. Should
    these waits form a cycle, the claim order gives way first, then the submit order.

    A job transaction whose market rule fails is still applicable (it is included as
    failed). A tx that does not apply at all (its sender can no longer pay the fee, a
    nonce the pool got wrong), and the later txs of its sender that then have a nonce
    gap, are left out instead of making the template invalid.
    """
    net = chain.network
    if header.job_id != NO_JOB:
        check_named_job(chain.state_get, header)
    state = Overlay(chain.state_get)
    clock = BlockClock(header.height, chain.mtp_after(chain.tip), net.difficulty.target_spacing_s)
    waits = _dependencies(txs)
    pending = list(txs)
    level = 2  # 2: submits and claim order, 1: submits only, 0: the list as it is
    kept: list[Transaction] = []
    while pending:
        unprocessed = {tx.txid for tx in pending}
        blocked: set[bytes] = set()  # senders whose next tx waits
        later: list[Transaction] = []
        for tx in pending:
            needs = waits.get(tx.txid, ())[: level]
            if tx.sender in blocked or any(dep in unprocessed for dep in needs if dep):
                blocked.add(tx.sender)
                later.append(tx)
                continue
            unprocessed.discard(tx.txid)
            mark = state.mark()
            try:
                apply_transaction(state, tx, clock, net)
            except StateError:
                state.rollback(mark)
                continue
            kept.append(tx)
        if len(later) == len(pending):
            level -= 1  # nothing could go: a cycle of waits
        pending = later
    return kept


def _dependencies(txs: list[Transaction]) -> dict[bytes, tuple[bytes | None, bytes | None]]:
    """txid -> (the submit that creates its job, if another sender's and in ``txs``;
    for a claim, the lowest-txid claim of the same job in ``txs``, if not itself)."""
    submits = {tx.txid: tx.sender for tx in txs if tx.kind == TxKind.JOB_SUBMIT}
    jobs: dict[bytes, bytes] = {}
    first_claim: dict[bytes, bytes] = {}
    for tx in txs:
        if tx.kind in (TxKind.TRANSFER, TxKind.JOB_SUBMIT):
            continue
        try:
            payload = decode_job_payload(tx.kind, tx.payload)
        except JobPayloadError:
            continue
        job_id = getattr(payload, "job_id", None)
        if job_id is None:
            continue
        jobs[tx.txid] = job_id
        if tx.kind == TxKind.JOB_CLAIM:
            first_claim[job_id] = min(first_claim.get(job_id, tx.txid), tx.txid)
    out: dict[bytes, tuple[bytes | None, bytes | None]] = {}
    for tx in txs:
        job_id = jobs.get(tx.txid)
        if job_id is None:
            continue
        submit = job_id if submits.get(job_id, tx.sender) != tx.sender else None
        first = first_claim.get(job_id) if tx.kind == TxKind.JOB_CLAIM else None
        if submit is not None or (first is not None and first != tx.txid):
            out[tx.txid] = (submit, first if first != tx.txid else None)
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
