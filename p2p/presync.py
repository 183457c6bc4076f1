"""Headers presync (Bitcoin Core's headerssync, in spirit): a header chain that has not
yet shown more work than ours is checked but never stored.

A peer's chain forks from a header we know (the *start*). While its cumulative work
does not beat our floor (our tip's work and the network's minimum chain work), each
header it sends is checked in full (parent link, height, median time past, the 2 h
future limit, the ASERT target, the seal) against a rolling context of constant size,
and only a compact commitment is kept: one salted bit of the hash of every
``period``-th header (at an offset only this node knows). Once the work suffices the
same headers are downloaded again from the start: each is checked again, its bit
compared with the commitment, and it is held back in a buffer of ``buffer`` headers
before it is released to the header store, so a peer that swaps chains between the
two passes must match ``buffer / period`` secret bits before anything of the new
chain is stored. Once the redownloaded chain itself beats the floor, the rest is
released at once and sync goes on as usual.

Memory per peer: the rolling context, one bit per ``period`` headers (at most the
longest chain the median-time-past rule allows since the start: 6 blocks per second),
and the buffer of ``buffer`` compact entries during the second pass.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chain.header import Header
from chain.network import Network
from chain.validation import (
    BlockCheck,
    ParentContext,
    Verdict,
    check_header,
    check_header_context,
)
from consensus.difficulty import (
    MAX_FUTURE_BLOCK_TIME_S,
    MEDIAN_TIME_SPAN,
    block_work,
    median_time_past,
)
from p2p.sync import HeaderEntry

COMMIT_PERIOD = 64  # one commitment bit per this many presynced headers
REDOWNLOAD_BUFFER = 1536  # headers held back in the second pass: 24 bits vouch for each
MAX_BLOCKS_PER_S = 6  # the median-time-past rule lets a valid chain grow at most this fast


class Phase(enum.Enum):
    PRESYNC = "presync"  # accumulating work, storing nothing
    REDOWNLOAD = "redownload"  # the same chain again, checked against the commitments
    DONE = "done"  # the redownloaded chain beats the floor: sync goes on as usual


@dataclass
class Cursor:
    """The last header of a pass and what the next header's checks need."""

    hash: bytes
    height: int
    timestamp: int
    times: deque[int]  # the last MEDIAN_TIME_SPAN timestamps, oldest first
    anchor: int | None  # timestamp of block 1 on this chain (None at genesis)
    work: int  # cumulative

    def context(self) -> ParentContext:
        return ParentContext(self.height, self.timestamp, tuple(self.times), self.anchor)

    def copy(self) -> Cursor:
        return Cursor(
            self.hash, self.height, self.timestamp, deque(self.times, MEDIAN_TIME_SPAN),
            self.anchor, self.work,
        )  # fmt: skip


@dataclass
class Step:
    """What one headers message led to."""

    release: list[HeaderEntry] = field(default_factory=list)  # checked: store them now
    next_from: bytes | None = None  # ask for the headers after this hash next
    invalid: BlockCheck | None = None  # a header broke a consensus rule: punish
    abort: str | None = None  # give up on this chain, not punished (why)


class HeadersPresync:
    """One peer's presync of the chain that forks from ``start_hash``."""

    def __init__(
        self,
        network: Network,
        start_hash: bytes,
        start: ParentContext,
        start_work: int,
        floor: Callable[[], int],
        now: int,
        period: int = COMMIT_PERIOD,
        buffer: int = REDOWNLOAD_BUFFER,
        salt: bytes | None = None,
    ) -> None:
        self.network = network
        self.floor = floor
        self.period = max(1, period)
        self.buffer_cap = max(0, buffer)
        self.salt = os.urandom(32) if salt is None else salt
        self.offset = int.from_bytes(hashlib.sha256(self.salt).digest()[:4], "big") % self.period
        times = deque(start.recent_timestamps[-MEDIAN_TIME_SPAN:], MEDIAN_TIME_SPAN)
        self.start = Cursor(
            start_hash, start.height, start.timestamp, times, start.anchor_time, start_work
        )
        self.pre = self.start.copy()
        self.redo = self.start.copy()
        self.phase = Phase.PRESYNC
        # A valid chain cannot be longer than the median-time-past rule allows between
        # the start and now (+ the future limit): bounds the commitments kept.
        span = max(0, now + MAX_FUTURE_BLOCK_TIME_S - median_time_past(start.recent_timestamps))
        self.max_headers = MAX_BLOCKS_PER_S * span + MEDIAN_TIME_SPAN
        self.bits = bytearray()  # packed commitment bits, first header first
        self.nbits = 0
        self.checked = 0  # headers checked in both passes
        self.buffer: deque[HeaderEntry] = deque()

    def _bit(self, h: bytes) -> int:
        return hashlib.sha256(self.salt + h).digest()[0] & 1

    def _committed(self, height: int) -> bool:
        return height % self.period == self.offset

    def _advance(self, cur: Cursor, header: Header, now: int) -> BlockCheck | str | None:
        """Check ``header`` as the child of ``cur`` and move ``cur`` to it. Returns None
        when it passed, a BlockCheck when it is invalid or from the future, a string
        when it does not continue the chain (not a consensus matter)."""
        if header.parent != cur.hash:
            return f"header at height {header.height} does not continue the chain"
        check = check_header_context(header, self.network, cur.context(), now)
        if check.ok:
            check = check_header(header, self.network)
        if not check.ok:
            return check
        self.checked += 1
        cur.hash = header.hash
        cur.height = header.height
        cur.timestamp = header.timestamp
        cur.times.append(header.timestamp)
        if header.height == 1:
            cur.anchor = header.timestamp
        cur.work += block_work(header.target)
        return None

    @staticmethod
    def _failed(why: BlockCheck | str) -> Step:
        if isinstance(why, str):
            return Step(abort=why)
        if why.verdict is Verdict.DEFER:
            return Step(abort=f"header from the future ({why})")
        return Step(invalid=why)

    def feed(self, headers: tuple[Header, ...], now: int) -> Step:
        """One non-empty headers message that answers our last request."""
        if self.phase is Phase.PRESYNC:
            return self._presync(headers, now)
        if self.phase is Phase.REDOWNLOAD:
            return self._redownload(headers, now)
        return Step(abort="presync already done")

    def _presync(self, headers: tuple[Header, ...], now: int) -> Step:
        for header in headers:
            why = self._advance(self.pre, header, now)
            if why is not None:
                return self._failed(why)
            if self._committed(header.height):
                if self.nbits // 8 >= len(self.bits):
                    self.bits.append(0)
                self.bits[self.nbits // 8] |= self._bit(header.hash) << (self.nbits % 8)
                self.nbits += 1
            if self.pre.height - self.start.height > self.max_headers:
                return Step(abort="chain longer than the median-time-past rule allows")
        if self.pre.work > self.floor():
            self.phase = Phase.REDOWNLOAD
            return Step(next_from=self.start.hash)
        return Step(next_from=self.pre.hash)

    def _redownload(self, headers: tuple[Header, ...], now: int) -> Step:
        step = Step()
        for header in headers:
            why = self._advance(self.redo, header, now)
            if why is not None:
                return self._failed(why)
            height = self.redo.height
            if height <= self.pre.height and self._committed(height):
                i = self._index_of(height)
                if (self.bits[i // 8] >> (i % 8)) & 1 != self._bit(header.hash):
                    return Step(abort=f"header at height {height} is not the chain presynced")
            r = self.redo
            self.buffer.append(
                HeaderEntry(r.hash, header.parent, r.height, r.timestamp, r.work, r.anchor)
            )
            if self.phase is Phase.REDOWNLOAD and r.work > self.floor():
                self.phase = Phase.DONE  # the rest of the chain needs no commitments
            elif self.phase is Phase.REDOWNLOAD and height >= self.pre.height:
                return Step(abort="the chain no longer has more work than ours")
        if self.phase is Phase.DONE:
            step.release = list(self.buffer)
            self.buffer.clear()
        else:
            while len(self.buffer) > self.buffer_cap:
                step.release.append(self.buffer.popleft())
        step.next_from = self.redo.hash
        return step

    def _index_of(self, height: int) -> int:
        """Index of the commitment bit of the header at ``height`` (a committed one)."""
        first = self.start.height + 1
        first_committed = first + (self.offset - first) % self.period
        return (height - first_committed) // self.period

    @property
    def work(self) -> int:
        """Work the peer's chain has shown so far (first pass)."""
        return self.pre.work

    @property
    def height(self) -> int:
        return self.pre.height
