"""Which miner claims a fresh job first: an order every miner computes alike.

When a buyer's submit (or a batch of them, one per part of a product) reaches idle
miners, they used to wait a random 10-160 ms each, so that one claimed and the others
saw its claim; the pause sat on every product's path to its buyer. Now every miner
ranks the miners it knows for each fresh job the same way:

* the miners: our own address and every other address seen claiming a job within
  ``ALONE_AFTER_S`` (``Sightings``);
* rank 0, the designated miner: fresh jobs in a common order (better paying first,
  then by job id) are dealt out one at a time, each to the miner holding the fewest
  fresh jobs so far, the one whose ``sha256(address || job id)`` is lowest among
  them (a batch of three parts spreads over three miners). The fresh jobs a miner
  already claimed count as its own (the standalone miner counts those dealt in its
  batches of the last LOAD_WINDOW_S): a submit that arrives a few ms after the last
  goes to a miner that has none, not to one already computing the last; and the
  dealing of what is left stays the same when a claim of the batch is seen first;
* ranks 1, 2, ...: the other miners, lowest ``sha256(address || job id)`` first.

The miner of rank r may claim the job ``r * FALLBACK_STEP_S`` after it first saw the
submit: the designated miner at once, the next one if the designated miner was busy
or gone, and so on; a claim already in the pool takes the job off every list. Views
of the miner set can differ for a moment (a miner that just joined); then two miners
may claim the same job, and the lower txid wins as before (the other claim is
included as failed: its fee is lost, never a later transaction).

A miner that has seen no other claimant for ALONE_AFTER_S is alone: rank 0 for all.

The standalone `pouw miner` (node/remote_market.py) sees the node's jobs once a market
round, so its turns come in steps of two rounds (``TURN_STEP_S`` there) rather than
FALLBACK_STEP_S; the order is the same, so in-node and standalone miners deal a batch
alike (an in-node miner of rank 1 may still claim a standalone miner's job before that
one's next round: the lower txid wins, as above).

Jobs no longer fresh (a backlog: more open jobs than idle miners) are dealt out the
same way when busy miners claim work ahead, in steps of ``BACKLOG_STEP_S``: each miner
takes its share first, instead of every busy miner claiming the whole backlog at once
(they raced each other for every job, and an idle miner was left with none).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence

ALONE_AFTER_S = 600.0
# Between one rank and the next: longer than a claim's relay to every miner (tens of
# ms on a LAN), so the next miner sees the claim before its turn comes.
FALLBACK_STEP_S = 0.05
# Between ranks for a backlog job claimed ahead by busy miners: two of their claim
# rounds (node/market_miner CLAIM_ROUND_S), so the designated miner has its turn first.
BACKLOG_STEP_S = 0.5
# A claim still in the pool is computed only once it is this old: time for rival claims
# sent at the same moment to reach us (relayed within tens of ms on a LAN; measured
# here, without this wait 20 % of job products were computed twice). It overlaps the
# operands' download. The in-node miner skips it for a fresh job's designated miner
# claiming in its turn (no other miner's turn comes before FALLBACK_STEP_S), and when
# it has seen no other claimant within ALONE_AFTER_S.
RIVAL_WAIT_S = 0.1
# ... and longer when rival claims have lately been seen arriving later than that
# (``Crossings``): while blocks of a thousand transactions are validated, a claim took
# 0.3-0.7 s to reach the other miners here (2 cores, four nodes), and both computed the
# job. At most this long: a claim that reaches us later than this is not worth waiting
# for (its job is computed twice).
MAX_RIVAL_WAIT_S = 1.0
CLAIM_SAMPLES = 256  # recent claims of ours kept: the crossings are a share of them
# Recent crossings kept: as many as claims, so that the share the wait leaves out is a
# share of the claims however many of them crossed.
CROSSING_SAMPLES = CLAIM_SAMPLES
CROSSING_MEMORY_S = 300.0  # a crossing or claim older than this no longer counts
# The wait may leave this share of our recent claims crossed later than it: every
# claim waits, while a crossing it does not cover costs a product only when the rival
# also computes (about half of them). Measured with three standalone miners on 2 cores
# (bench_usefulness --standalone): about 5 % of claims crossed, at about 0.3 s; a wait
# covering 0.9 of the crossings put 0.33 s on every claim and gave useful_fraction
# 0.33-0.52, against 0.49-0.59 with this share (in-node with it: 0.996).
UNCOVERED_SHARE = 0.05
# A pooled submit is worth claiming only if its job stays open this long after the
# tip's median time past: time for the submit and the claim to confirm.
PENDING_MIN_LEFT_S = 30
# The in-node miner counts the claims of jobs still fresh (their submits arrived
# within its fresh window: market_claims IDLE_FIRST_S, 0.16 s, or every miner's turn
# where that is longer); the standalone miner counts the jobs it dealt in batches
# listed this long before the one it deals.
LOAD_WINDOW_S = 0.16
MAX_SIGHTINGS = 1024  # other miners remembered (oldest sighting dropped first)
# A miner's claim of its designated job reaches us some time after the submit did:
# 10-13 ms from an in-node miner near us, 44-93 ms (median 58) from a standalone `pouw
# miner` (its round wakes on its node's long-poll, it claims over RPC, the claim is
# relayed; measured here on one host). The miners after it in line wait that much
# longer (``Sightings.lateness``), so that they do not claim a job whose designated
# claim is still on its way: both would compute it. Claims slower than MAX_LATENESS_S
# are turns or backlog, not latency (not counted): a busy miner that claims only late
# adds nothing to anyone's wait.
MAX_LATENESS_S = 0.25
LATENESS_SAMPLES = 8  # recent claim delays kept a miner; its lateness is their median
RETRY_FAILED_S = 60.0  # a job whose operands could not be had is skipped this long
PRICE_BAND = 1.25  # bounties per multiply-add within this factor rank as equal


def _weight(address: bytes, job_id: bytes) -> bytes:
    return hashlib.sha256(address + job_id).digest()


class Sightings:
    """Other miners' addresses, each with when it was last seen claiming a job."""

    def __init__(self, own: bytes) -> None:
        self.own = own
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._delays: dict[bytes, deque[float]] = {}

    def saw(self, address: bytes, now: float, delay: float | None = None) -> bool:
        """Note a claim by ``address``, ``delay`` seconds after we saw its job's submit
        (None: not known); True if that miner is new to us (not seen within
        ALONE_AFTER_S)."""
        if address == self.own:
            return False
        last = self._seen.pop(address, None)
        self._seen[address] = now
        while len(self._seen) > MAX_SIGHTINGS:
            self._delays.pop(self._seen.popitem(last=False)[0], None)
        if delay is not None and 0.0 <= delay < MAX_LATENESS_S:
            self._delays.setdefault(address, deque(maxlen=LATENESS_SAMPLES)).append(delay)
        return last is None or now - last >= ALONE_AFTER_S

    def lateness(self, address: bytes) -> float:
        """How long after its submit reaches us a fresh claim of ``address`` does: the
        median of its recent delays (0 when none is known). The next miner in line
        waits FALLBACK_STEP_S more than that, so a claim slower than the median by up
        to a step still comes first."""
        delays = sorted(self._delays.get(address, ()))
        return delays[len(delays) // 2] if delays else 0.0

    def others(self, now: float) -> list[bytes]:
        """Other miners seen within ALONE_AFTER_S."""
        return [a for a, t in self._seen.items() if now - t < ALONE_AFTER_S]

    def alone(self, now: float) -> bool:
        return not any(now - t < ALONE_AFTER_S for t in self._seen.values())


class Crossings:
    """How late rival claims of jobs we claimed arrive: the rival wait.

    A rival claim that arrives after ours was sent before its miner saw ours, so its
    age on arrival (how long after our claim) is bounded by the two claims' relay
    times: a wait as long as those ages lets the rivals arrive before we compute, and
    the lower txid computes alone. The wait covers the crossings of all but
    UNCOVERED_SHARE of our recent claims: rare late crossings are not worth a wait on
    every claim."""

    def __init__(self) -> None:
        self._ages: deque[tuple[float, float]] = deque(maxlen=CROSSING_SAMPLES)
        self._claims: deque[float] = deque(maxlen=CLAIM_SAMPLES)

    def claimed(self, now: float) -> None:
        """We sent a claim."""
        self._claims.append(now)

    def crossed(self, age: float, now: float) -> None:
        """A rival claim arrived ``age`` seconds after we sent ours."""
        if 0.0 <= age <= MAX_RIVAL_WAIT_S:
            self._ages.append((now, age))

    def rival_wait(self, now: float) -> float:
        """How old a pooled claim must be before we compute its job: RIVAL_WAIT_S, or,
        if longer, the shortest wait that leaves at most UNCOVERED_SHARE of our claims
        of the last CROSSING_MEMORY_S crossed later than it (MAX_RIVAL_WAIT_S at
        most)."""
        ages = sorted(
            (age for at, age in self._ages if now - at < CROSSING_MEMORY_S), reverse=True
        )  # fmt: skip
        claims = sum(now - at < CROSSING_MEMORY_S for at in self._claims)
        uncovered = int(UNCOVERED_SHARE * max(claims, len(ages)))
        if uncovered >= len(ages):
            return RIVAL_WAIT_S
        return min(MAX_RIVAL_WAIT_S, max(RIVAL_WAIT_S, ages[uncovered]))


def lowest_standing(claims: Iterable[tuple[bytes, int]], bond_needed: int) -> bytes | None:
    """The lowest txid among pooled claims given as (txid, bond) that escrow the bond
    the job needs: of a job's standing claims in a block only that one can succeed
    (chain/jobs.lowest_claims); a claim with less fails on its own and takes no job."""
    return min((txid for txid, bond in claims if bond >= bond_needed), default=None)


def designated(
    miners: Sequence[bytes], job_ids: Sequence[bytes], loads: Mapping[bytes, int] | None = None
) -> dict[bytes, bytes]:
    """job id -> its designated miner, for jobs given in the common order: each to the
    miner with the fewest fresh jobs so far, the lowest ``sha256(address || job id)``
    among them. ``loads``: fresh jobs each miner already claimed (not in ``job_ids``);
    with none, a batch goes one job per miner, round after round."""
    load = {a: (loads or {}).get(a, 0) for a in miners}
    out: dict[bytes, bytes] = {}
    for job_id in job_ids:
        least = min(load.values())
        pick = min((a for a in miners if load[a] == least), key=lambda a: _weight(a, job_id))
        load[pick] += 1
        out[job_id] = pick
    return out


def dealing_order(jobs: Sequence[tuple[bytes, int]]) -> list[bytes]:
    """The common order of (job id, price band) pairs: better paying first, then by id."""
    return [job_id for job_id, _ in sorted(jobs, key=lambda item: (-item[1], item[0]))]


def rank_of(me: bytes, miners: Sequence[bytes], job_id: bytes, first: bytes) -> int:
    """Our rank for a job whose designated miner is ``first`` (0 when it is us)."""
    if me == first:
        return 0
    rest = sorted((a for a in miners if a != first), key=lambda a: _weight(a, job_id))
    return 1 + rest.index(me) if me in rest else len(rest) + 1


def claimable_after(
    me: bytes,
    others: Sequence[bytes],
    jobs: Sequence[tuple[bytes, int]],
    step: float = FALLBACK_STEP_S,
    lateness: Callable[[bytes], float] | None = None,
    loads: Mapping[bytes, int] | None = None,
) -> dict[bytes, float]:
    """For jobs given as (job id, price band) pairs: job id -> seconds after the job
    was first seen at which we may claim it (``step`` per rank, plus the designated
    miner's ``lateness`` for the ranks after it). ``loads``: as for ``designated``."""
    if not others:
        return {job_id: 0.0 for job_id, _ in jobs}
    miners = [me, *others]
    order = dealing_order(jobs)
    first = designated(miners, order, loads)
    after = {}
    for j in order:
        rank = rank_of(me, miners, j, first[j])
        after[j] = rank * step + (lateness(first[j]) if rank and lateness else 0.0)
    return after


def horizon(others: Sequence[bytes], step: float = FALLBACK_STEP_S) -> float:
    """How long a job stays fresh: after this every miner may claim it."""
    return (len(others) + 1) * step if others else 0.0


def price_band(bounty: int, multiply_adds: int) -> int:
    """Bounty per multiply-add in steps of PRICE_BAND: jobs in one step rank as equal."""
    return math.floor(math.log(bounty / multiply_adds) / math.log(PRICE_BAND))
