"""The compute market's state rules: a job's transitions and its timers (the record
itself, its keys and encoding: chain/job_record.py).

Life of a job (docs/MARKET.md; byte layouts in docs/PROTOCOL.md):

    OPEN --claim--> CLAIMED --commit--> COMMITTED --window closes--> PAID
      |  <--deadline passes (bond to buyer)--'       |--wrong entry proven--> REFUNDED
      |--reclaim--> RECLAIMED                        '--probe unanswered----> REFUNDED
      '--expires--> EXPIRED

A buyer escrows a bounty (JOB_SUBMIT). One worker at a time takes the job with a claim
that escrows a bond (JOB_CLAIM) and holds it until a deadline scaled to the product's
size. It commits C's root (JOB_COMMIT); for ``challenge_s`` anyone may prove one entry
wrong (JOB_CHALLENGE) or ask for one chunk of C (JOB_PROBE), which the claimant must
publish (JOB_REVEAL) within ``reveal_s``. When the window closes, the claimant is paid
the bounty and gets its bond back, win or lose the block lottery: payment never
depends on which block carried the product.

Time is median-time-past (``mtp``, the median of the 11 timestamps before the block),
and every window also spans ``min_window_blocks`` blocks. Deadlines fire from timers
at the end of a block: a job has one wake-up height at a time (``wake_height``); the
timer list of a height may also hold stale entries (the job was rescheduled), which
are skipped. A wake-up whose time has not come yet reschedules itself by the time
left over the target spacing, so a deadline costs a handful of wake-ups at most.

Every function here raises ``StateError`` with a named reason; chain/transition.py
turns a failing job transaction into a failed-but-included one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from chain.header import Header
from chain.job_payloads import (
    JobChallenge,
    JobClaim,
    JobCommit,
    JobPayload,
    JobPayloadError,
    JobProbe,
    JobReveal,
    JobSubmit,
    decode_job_payload,
)
from chain.job_record import (
    HELD_STATUSES,
    NO_PROBE,
    ZERO_ADDRESS,
    Job,
    JobStatus,
    get_job,
    job_key,
    timer_count_key,
    timer_key,
)
from chain.state import (
    Account,
    Overlay,
    StateError,
    StateGet,
    StateReject,
    account_key,
    add_contribution,
)
from chain.tx import Transaction
from chain.txkind import TxKind
from consensus.ints import U64_MAX
from consensus.params import MarketParams, PouwParams
from consensus.result import chunk_count, verify_challenge, verify_chunk
from consensus.seal import check_shape

# A timer looks again after 1/WAKE_SPLIT of the time left (in target spacings): with
# the whole of it, blocks slower than the target overshot a deadline by the shortfall
# (an hour's expiry at half the target rate fired half an hour late). Costs about
# ln(time left / spacing) / ln(4/3) looks per window: 28 for an hour at 1 s blocks.
WAKE_SPLIT = 4


@dataclass(frozen=True)
class BlockClock:
    """When a block happens, for the market's windows, and which claim of each job in
    it wins (``lowest_claims``: empty outside a block)."""

    height: int
    mtp: int  # median time past of the block (its parent's last 11 timestamps)
    spacing_s: int  # the network's target spacing, to estimate when a time comes
    lowest_claims: Mapping[bytes, bytes] = field(default_factory=dict)

    def passed(self, when: int, min_height: int) -> bool:
        return self.mtp >= when and self.height >= min_height

    def wake_height(self, when: int, min_height: int) -> int:
        """A height from which a timer should look again at a deadline: a quarter of
        the blocks that the time left would take at the target spacing (at least one),
        so that blocks up to four times slower than the target still meet the deadline
        within a block or so; each look reschedules what is left the same way."""
        left = max(0, when - self.mtp)
        blocks = -(-left // (WAKE_SPLIT * self.spacing_s))
        return max(min_height, self.height + max(1, blocks))


# --- helpers ---------------------------------------------------------------------------


def claim_lapsed(job: Job, clock: BlockClock) -> bool:
    """The job's claimant can no longer commit in a block with this clock: its claim
    lapsed. The market's timer reopens the job and gives the bond to the buyer at the
    first block at or after its wake height whose clock has passed too, which can be a
    few blocks later. Miners ask it of the next block's clock before they commit (a
    commit then fails and costs its fee)."""
    return job.status == JobStatus.CLAIMED and clock.passed(
        job.claim_deadline, job.claim_min_height
    )


def _reject(reason: StateReject, detail: str = "") -> StateError:
    return StateError(reason, detail)


def _put(state: Overlay, job_id: bytes, job: Job) -> None:
    state.put(job_key(job_id), job.to_bytes())


def _credit(state: Overlay, address: bytes, amount: int) -> None:
    if amount == 0:
        return
    acct = state.account(address)
    if acct.balance + amount > U64_MAX:
        raise StateError(StateReject.BALANCE_OVERFLOW)
    state.set_account(address, Account(acct.balance + amount, acct.nonce))


def _schedule(
    state: Overlay, job_id: bytes, job: Job, clock: BlockClock, when: int, min_height: int
) -> Job:
    """Give the job its one live timer entry, at a height from which ``when`` may pass."""
    height = clock.wake_height(when, min_height)
    count_raw = state.get(timer_count_key(height))
    count = int.from_bytes(count_raw, "big") if count_raw else 0
    state.put(timer_key(height, count), job_id)
    state.put(timer_count_key(height), (count + 1).to_bytes(4, "big"))
    return replace(job, wake_height=height)


def _load(state: Overlay, job_id: bytes) -> Job:
    job = get_job(state.get, job_id)
    if job is None:
        raise _reject(StateReject.JOB_UNKNOWN, job_id.hex())
    return job


def _expect(job: Job, *statuses: JobStatus) -> None:
    if job.status not in statuses:
        want = " or ".join(s.name.lower() for s in statuses)
        raise _reject(StateReject.JOB_BAD_STATUS, f"status {job.status.name.lower()}, needs {want}")


def _window_open(job: Job, clock: BlockClock) -> None:
    if clock.passed(job.window_end, job.window_min_height):
        raise _reject(StateReject.JOB_WINDOW_CLOSED, f"the window closed at mtp {job.window_end}")


# --- a block naming a job --------------------------------------------------------------


def check_named_job(get: StateGet, header: Header) -> Job:
    """A header may name a job only if its miner holds the job's claim and the header
    carries exactly the job's shape and commitments. Changes nothing."""
    job = get_job(get, header.job_id)
    if job is None:
        raise StateError(StateReject.JOB_UNKNOWN, header.job_id.hex())
    if job.status not in (JobStatus.CLAIMED, JobStatus.COMMITTED):
        raise StateError(StateReject.JOB_NOT_CLAIMED, f"status {job.status.name.lower()}")
    if job.claimant != header.miner:
        raise StateError(StateReject.JOB_NOT_CLAIMANT, "only the job's claimant may name it")
    if (header.m, header.k, header.n, header.h_a, header.h_b) != (
        job.m, job.k, job.n, job.h_a, job.h_b
    ):  # fmt: skip
        raise StateError(StateReject.JOB_MISMATCH, "shape or commitments are not the job's")
    return job


# --- transactions ----------------------------------------------------------------------


def lowest_claims(
    get: StateGet, txs: Sequence[Transaction], mtp: int, market: MarketParams
) -> dict[bytes, bytes]:
    """job id -> the lowest txid among the *standing* JOB_CLAIMs of it in a block's
    ``txs``, read against the state before the block (``get``) and the block's ``mtp``.

    Only that claim of a job can succeed in the block, wherever the claims stand in it:
    miners whose claims crossed in flight agree on who computes the job by comparing
    txids, without knowing the order a block will give them. A claim stands when
    nothing in the block's order can make it fail: its job is open before the block
    (or created by a JOB_SUBMIT of the block), ``mtp < expires``, it escrows at least
    ``bond_for(bounty)``, and its sender's balance before the block covers the amounts
    and fees of all its sender's txs in the block. So a claim that fails on its own (a
    bond of 1, an empty account) can never block the job's other claims; a job with no
    standing claim takes its claims in block order."""
    claims = [tx for tx in txs if tx.kind == TxKind.JOB_CLAIM]
    if not claims:  # most blocks: nothing to read
        return {}
    spent: dict[bytes, int] = {}
    submits: dict[bytes, Transaction] = {}  # job id -> the block's submit creating it
    for tx in txs:
        spent[tx.sender] = spent.get(tx.sender, 0) + tx.amount + tx.fee
        if tx.kind == TxKind.JOB_SUBMIT:
            submits[tx.txid] = tx
    out: dict[bytes, bytes] = {}
    covered: dict[bytes, bool] = {}  # sender -> its balance covers its txs in the block
    for tx in claims:
        job_id = bytes(tx.payload[:32])  # a valid claim's payload is its job id
        job = get_job(get, job_id)
        if job is not None:
            terms = (job.bounty, job.expires) if job.status == JobStatus.OPEN else None
        else:
            terms = _submitted_terms(submits.get(job_id))
        if terms is None or mtp >= terms[1] or tx.amount < market.bond_for(terms[0]):
            continue
        if tx.sender not in covered:  # one read per sender, however many claims
            balance = Account.from_bytes(get(account_key(tx.sender))).balance
            covered[tx.sender] = balance >= spent[tx.sender]
        if not covered[tx.sender]:
            continue
        best = out.get(job_id)
        if best is None or tx.txid < best:
            out[job_id] = tx.txid
    return out


def _submitted_terms(submit: Transaction | None) -> tuple[int, int] | None:
    """(bounty, expires) of the job a block's JOB_SUBMIT creates; None without one."""
    if submit is None:
        return None
    try:
        payload = decode_job_payload(submit.kind, submit.payload)
    except JobPayloadError:
        return None
    return (submit.amount, payload.expires) if isinstance(payload, JobSubmit) else None


def apply_job_action(
    state: Overlay,
    sender: bytes,
    txid: bytes,
    amount: int,
    payload: JobPayload,
    clock: BlockClock,
    pouw: PouwParams,
    market: MarketParams,
) -> None:
    """The market effect of a job transaction whose sender already paid ``amount``
    (a bounty, bond or deposit, else 0). Raises StateError with a named reason."""
    if isinstance(payload, JobSubmit):
        _submit(state, sender, txid, amount, payload, clock, pouw, market)
        return
    job = _load(state, payload.job_id)
    jid = payload.job_id
    if isinstance(payload, JobClaim):
        lowest = clock.lowest_claims.get(jid, txid)
        if lowest != txid:  # racing claims: the lowest standing txid wins, in any order
            raise _reject(StateReject.JOB_CLAIM_OUTBID, f"claim {lowest.hex()} takes the job")
        _expect(job, JobStatus.OPEN)
        if clock.mtp >= job.expires:
            raise _reject(StateReject.JOB_EXPIRED, f"expired at mtp {job.expires}")
        need = market.bond_for(job.bounty)
        if amount < need:
            raise _reject(StateReject.JOB_BOND_LOW, f"bond {amount} < {need}")
        deadline = clock.mtp + market.claim_seconds(job.multiply_adds)
        min_height = clock.height + market.min_window_blocks
        job = replace(
            job, status=JobStatus.CLAIMED, claimant=sender, bond=amount, claim_deadline=deadline,
            claim_min_height=min_height, claims=job.claims + 1,
        )  # fmt: skip
        _put(state, jid, _schedule(state, jid, job, clock, deadline, min_height))
    elif isinstance(payload, JobCommit):
        _expect(job, JobStatus.CLAIMED)
        if sender != job.claimant:
            raise _reject(StateReject.JOB_NOT_CLAIMANT, "only the job's claimant may commit")
        if claim_lapsed(job, clock):
            raise _reject(StateReject.JOB_CLAIM_EXPIRED, f"deadline was mtp {job.claim_deadline}")
        end = clock.mtp + market.challenge_s
        min_height = clock.height + market.min_window_blocks
        job = replace(
            job, status=JobStatus.COMMITTED, result_root=payload.result_root,
            committed_height=clock.height, window_end=end, window_min_height=min_height,
            result_url=payload.url,
        )  # fmt: skip
        _put(state, jid, _schedule(state, jid, job, clock, end, min_height))
    elif isinstance(payload, JobChallenge):
        _expect(job, JobStatus.COMMITTED)
        _window_open(job, clock)
        reject = verify_challenge(
            job.m, job.k, job.n, job.h_a, job.h_b, job.result_root, payload.challenge
        )
        if reject is not None:
            raise _reject(StateReject(reject.value))
        _refund(state, jid, job, bond_to=sender)
    elif isinstance(payload, JobProbe):
        _expect(job, JobStatus.COMMITTED)
        _window_open(job, clock)
        if job.probe_open:
            raise _reject(StateReject.JOB_PROBE_OPEN, f"row {job.probe_row} is being probed")
        if not (payload.row < job.m and payload.chunk < chunk_count(job.n)):
            raise _reject(StateReject.JOB_PROBE_BAD_INDEX, f"({payload.row}, {payload.chunk})")
        if amount < market.probe_deposit:
            raise _reject(StateReject.JOB_DEPOSIT_LOW, f"{amount} < {market.probe_deposit}")
        deadline = clock.mtp + market.reveal_s
        min_height = clock.height + market.min_window_blocks
        job = replace(
            job, probe_by=sender, probe_deposit=amount, probe_row=payload.row,
            probe_chunk=payload.chunk, probe_deadline=deadline, probe_min_height=min_height,
            # Whoever probed must have the time to use the revealed chunk.
            window_end=max(job.window_end, deadline),
            window_min_height=max(job.window_min_height, min_height),
        )  # fmt: skip
        _put(state, jid, _schedule(state, jid, job, clock, deadline, min_height))
    elif isinstance(payload, JobReveal):
        _expect(job, JobStatus.COMMITTED)
        if not job.probe_open:
            raise _reject(StateReject.JOB_NO_PROBE, "no chunk is being probed")
        if sender != job.claimant:
            raise _reject(StateReject.JOB_NOT_CLAIMANT, "only the job's claimant may reveal")
        if clock.passed(job.probe_deadline, job.probe_min_height):
            raise _reject(StateReject.JOB_REVEAL_LATE, f"deadline was mtp {job.probe_deadline}")
        reject = verify_chunk(
            job.m, job.n, job.result_root, job.probe_row, job.probe_chunk, payload.data,
            payload.chunk_branch, payload.result_branch,
        )  # fmt: skip
        if reject is not None:
            raise _reject(StateReject(reject.value))
        _credit(state, job.claimant, job.probe_deposit)  # answered: the deposit pays for it
        job = replace(
            job, probe_by=ZERO_ADDRESS, probe_deposit=0, probe_row=NO_PROBE, probe_chunk=0,
            probe_deadline=0, probe_min_height=0,
        )  # fmt: skip
        _put(state, jid, _schedule(state, jid, job, clock, job.window_end, job.window_min_height))
    else:  # JobReclaim
        if sender != job.buyer:
            raise _reject(StateReject.JOB_NOT_BUYER, "only the buyer may reclaim a job")
        _expect(job, JobStatus.OPEN)
        _credit(state, job.buyer, job.bounty)
        _put(state, jid, replace(job, status=JobStatus.RECLAIMED))


def _submit(
    state: Overlay, sender: bytes, txid: bytes, amount: int, p: JobSubmit, clock: BlockClock,
    pouw: PouwParams, market: MarketParams,
) -> None:  # fmt: skip
    shape = check_shape(pouw, p.m, p.k, p.n)
    if not shape.ok:
        assert shape.reason is not None
        raise _reject(StateReject.JOB_BAD_SHAPE, shape.reason.value)
    if not clock.mtp < p.expires <= clock.mtp + market.max_open_s:
        raise _reject(StateReject.JOB_BAD_EXPIRY, f"expires {p.expires} at mtp {clock.mtp}")
    job = submitted_job(sender, amount, p, clock.height)
    _put(state, txid, _schedule(state, txid, job, clock, p.expires, clock.height + 1))


def pooled_submit_job(tx: Transaction) -> Job | None:
    """The job a JOB_SUBMIT still in a mempool would create (height 0), or None when
    ``tx`` is not a well-formed submit. Miners and the RPC read pending jobs with it."""
    if tx.kind != TxKind.JOB_SUBMIT:
        return None
    try:
        payload = decode_job_payload(tx.kind, tx.payload)
    except JobPayloadError:
        return None
    if not isinstance(payload, JobSubmit):
        return None
    return submitted_job(tx.sender, tx.amount, payload, 0)


def submitted_job(buyer: bytes, bounty: int, p: JobSubmit, height: int) -> Job:
    """The open job a JOB_SUBMIT creates at ``height`` (its id is the submit's txid).
    Also how a miner or the RPC reads a submit still waiting in the pool (height 0)."""
    return Job(
        buyer=buyer, m=p.m, k=p.k, n=p.n, h_a=p.h_a, h_b=p.h_b, bounty=bounty,
        expires=p.expires, submitted=height, data_url=p.url,
    )  # fmt: skip


def _refund(state: Overlay, job_id: bytes, job: Job, bond_to: bytes) -> None:
    """C is wrong or withheld: the buyer gets the bounty, ``bond_to`` the bond, an open
    probe's deposit goes back to whoever probed, and the claimant's ledger counts it."""
    _credit(state, job.buyer, job.bounty)
    _credit(state, bond_to, job.bond)
    _credit(state, job.probe_by, job.probe_deposit)
    add_contribution(state, job.claimant, challenges_lost=1)
    _put(state, job_id, replace(job, status=JobStatus.REFUNDED))


# --- timers (end of every block) -------------------------------------------------------


def run_timers(state: Overlay, clock: BlockClock) -> None:
    """End of block ``clock.height``: act on every job whose deadline this block passes."""
    count_raw = state.get(timer_count_key(clock.height))
    if count_raw is None:
        return
    state.put(timer_count_key(clock.height), None)
    for index in range(int.from_bytes(count_raw, "big")):
        key = timer_key(clock.height, index)
        job_id = state.get(key)
        state.put(key, None)
        assert job_id is not None, "a timer entry below its count must exist"
        job = get_job(state.get, job_id)
        if job is None or job.wake_height != clock.height or job.status not in HELD_STATUSES:
            continue  # stale: the job was rescheduled or has ended
        _wake(state, job_id, job, clock)


def _wake(state: Overlay, jid: bytes, job: Job, clock: BlockClock) -> None:
    def later(job: Job, when: int, min_height: int) -> None:
        _put(state, jid, _schedule(state, jid, job, clock, when, min_height))

    if job.status == JobStatus.OPEN:
        if not clock.passed(job.expires, job.submitted + 1):
            return later(job, job.expires, job.submitted + 1)
        _credit(state, job.buyer, job.bounty)
        _put(state, jid, replace(job, status=JobStatus.EXPIRED))
    elif job.status == JobStatus.CLAIMED:
        if not clock.passed(job.claim_deadline, job.claim_min_height):
            return later(job, job.claim_deadline, job.claim_min_height)
        # The claimant vanished: its bond goes to the buyer and the job reopens.
        _credit(state, job.buyer, job.bond)
        add_contribution(state, job.claimant, challenges_lost=1)
        job = replace(
            job, status=JobStatus.OPEN, claimant=ZERO_ADDRESS, bond=0, claim_deadline=0,
            claim_min_height=0,
        )  # fmt: skip
        later(job, job.expires, job.submitted + 1)
    elif job.probe_open:
        if not clock.passed(job.probe_deadline, job.probe_min_height):
            return later(job, job.probe_deadline, job.probe_min_height)
        _refund(state, jid, job, bond_to=job.probe_by)
    else:
        if not clock.passed(job.window_end, job.window_min_height):
            return later(job, job.window_end, job.window_min_height)
        _credit(state, job.claimant, job.bounty + job.bond)
        add_contribution(state, job.claimant, delivered=job.multiply_adds, bounties=job.bounty)
        _put(state, jid, replace(job, status=JobStatus.PAID))
