"""Header-first sync: verified sealed headers in memory, then bodies from several peers.

``HeaderStore`` keeps, for headers whose block we do not have yet, only what the
download and the context rules need (hash, parent, height, timestamp, work, anchor
time); every header is checked with ``check_header_context`` and then
``check_header`` (the seal) before it is held. ``Downloader`` turns the best header
chain that has more work than our tip into a queue of block requests, spreads them
over peers within a bounded window above the tip, moves a request that stalls to
another peer, buffers blocks that arrive out of order and submits them in order.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from chain.block import Block
from chain.chainstate import ChainState
from chain.header import Header
from chain.index_record import BlockStatus
from chain.validation import (
    BlockCheck,
    ParentContext,
    Verdict,
    check_header,
    check_header_context,
)
from consensus.difficulty import MEDIAN_TIME_SPAN, block_work

log = logging.getLogger("pouw.p2p")

MAX_STALL_S = 64.0  # the block-stalling window doubles up to this (Bitcoin Core: 64 s)
STALL_DECAY = 0.85  # each block received shrinks the window back towards its base
MAX_INVALID_HELD = 100_000  # hashes judged invalid, newest kept (forgotten: checked again)
MAX_HEADERS_HELD = 200_000  # verified headers waiting for their body (~150 bytes each)
# Cumulative work a header chain must exceed before its blocks are downloaded, besides
# beating our tip (Bitcoin Core's -minimumchainwork); raise per network as it grows.
MIN_CHAIN_WORK: dict[str, int] = {"devnet": 0, "testnet": 0, "mainnet": 0}


class RecentSet:
    """A set of hashes that forgets its oldest past ``cap`` (bounded memory against
    floods of invalid data from many addresses)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, h: object) -> bool:
        return h in self.items

    def __len__(self) -> int:
        return len(self.items)

    def add(self, h: bytes) -> None:
        self.items[h] = None
        self.items.move_to_end(h)
        if len(self.items) > self.cap:
            self.items.popitem(last=False)


@dataclass(frozen=True)
class HeaderEntry:
    hash: bytes
    parent: bytes
    height: int
    timestamp: int
    work: int  # cumulative
    anchor: int | None  # timestamp of block 1 on this chain


class HeaderResult:
    """Outcome of ``HeaderStore.add_chain``: how many were new, and a verdict."""

    def __init__(self) -> None:
        self.added = 0
        self.new: list[bytes] = []  # hashes this call added, in order
        self.last: bytes | None = None
        self.invalid: BlockCheck | None = None
        self.unconnecting = False
        self.deferred = False
        self.full = False


class HeaderStore:
    def __init__(self, chain: ChainState, clock: Callable[[], float] = time.time) -> None:
        self.chain = chain
        self.clock = clock
        self.entries: dict[bytes, HeaderEntry] = {}
        self.invalid = RecentSet(MAX_INVALID_HELD)
        # Per peer, the last header a presync's second pass released (p2p/presync.py):
        # its chain may not beat the tip yet, but prune() keeps it until the pass ends.
        self.pins: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def known(self, h: bytes) -> bool:
        return h in self.entries or h in self.chain.index

    def work_of(self, h: bytes) -> int | None:
        e = self.entries.get(h)
        if e is not None:
            return e.work
        rec = self.chain.index.get(h)
        return rec.cumulative_work if rec is not None else None

    def height_of(self, h: bytes) -> int | None:
        e = self.entries.get(h)
        if e is not None:
            return e.height
        rec = self.chain.index.get(h)
        return rec.height if rec is not None else None

    def context(self, parent: bytes) -> ParentContext:
        """What the header-context rules need about a known header ``parent``."""
        rec = self.chain.index.get(parent)
        if rec is not None:
            return self.chain.parent_context(rec)
        e = self.entries[parent]
        times: list[int] = []
        cur: bytes | None = parent
        while cur is not None and len(times) < MEDIAN_TIME_SPAN:
            se = self.entries.get(cur)
            if se is not None:
                times.append(se.timestamp)
                cur = se.parent
                continue
            for anc in self.chain.ancestors(cur):
                times.append(anc.timestamp)
                if len(times) == MEDIAN_TIME_SPAN:
                    break
            break
        return ParentContext(e.height, e.timestamp, tuple(reversed(times)), e.anchor)

    def _anchor(self, header: Header) -> int | None:
        if header.height == 1:
            return header.timestamp
        pe = self.entries.get(header.parent)
        if pe is not None:
            return pe.anchor
        return self.chain.anchor_time(header.parent)

    def add_chain(self, headers: tuple[Header, ...]) -> HeaderResult:
        """Verify and hold a run of headers, each the child of the one before; all or
        nothing when one is invalid (a false claim of work in a later header must not
        get the low-work headers before it stored)."""
        res = self._add_chain(headers)
        if res.invalid is not None:
            for h in res.new:
                self.entries.pop(h, None)
            res.added = 0
        return res

    def _add_chain(self, headers: tuple[Header, ...]) -> HeaderResult:
        res = HeaderResult()
        if not headers:
            return res
        if not self.known(headers[0].parent):
            res.unconnecting = True
            return res
        network = self.chain.network
        prev: bytes | None = None
        for header in headers:
            h = header.hash
            if prev is not None and header.parent != prev:
                res.invalid = BlockCheck(Verdict.INVALID, None, "headers do not form a chain")
                return res
            prev = h
            if h in self.invalid or header.parent in self.invalid:
                self.invalid.add(h)
                res.invalid = BlockCheck(Verdict.INVALID, None, "header of an invalid chain")
                return res
            rec = self.chain.index.get(h)
            if rec is not None or h in self.entries:
                res.last = h
                continue
            prec = self.chain.index.get(header.parent)
            if prec is not None and prec.status & BlockStatus.INVALID:
                self.invalid.add(h)
                res.invalid = BlockCheck(Verdict.INVALID, None, "child of an invalid block")
                return res
            if len(self.entries) >= MAX_HEADERS_HELD:
                self.prune()  # make room by dropping what cannot beat the tip
                if len(self.entries) >= MAX_HEADERS_HELD:
                    res.full = True
                    return res
            check = check_header_context(
                header, network, self.context(header.parent), int(self.clock())
            )
            if check.verdict is Verdict.DEFER:
                res.deferred = True  # a header from the future: not punished, not held
                return res
            if check.ok:
                check = check_header(header, network)
            if not check.ok:
                self.invalid.add(h)
                res.invalid = check
                return res
            parent_work = self.work_of(header.parent)
            assert parent_work is not None
            self.entries[h] = HeaderEntry(
                h, header.parent, header.height, header.timestamp,
                parent_work + block_work(header.target), self._anchor(header),
            )  # fmt: skip
            res.added += 1
            res.new.append(h)
            res.last = h
        return res

    def add_verified(self, entries: list[HeaderEntry]) -> bool:
        """Hold entries a presync already checked in full, in chain order; False when one
        does not connect or the store is full."""
        for e in entries:
            if e.hash in self.entries or e.hash in self.chain.index:
                continue
            if not self.known(e.parent) or e.parent in self.invalid:
                return False
            if len(self.entries) >= MAX_HEADERS_HELD:
                self.prune()
                if len(self.entries) >= MAX_HEADERS_HELD:
                    return False
            self.entries[e.hash] = e
        return True

    def best(self) -> HeaderEntry | None:
        return max(self.entries.values(), key=lambda e: e.work, default=None)

    def forget(self, h: bytes) -> None:
        self.entries.pop(h, None)

    def mark_invalid(self, h: bytes) -> int:
        """Drop ``h`` and every held descendant; returns how many were dropped."""
        self.invalid.add(h)
        bad = {h}
        changed = True
        while changed:
            changed = False
            for e in list(self.entries.values()):
                if e.parent in bad and e.hash not in bad:
                    bad.add(e.hash)
                    changed = True
        for b in bad:
            self.entries.pop(b, None)
        for b in bad:
            self.invalid.add(b)
        return len(bad)

    def floor(self) -> int:
        """Work a header chain must beat to be worth its blocks."""
        return max(self.chain.tip.cumulative_work, MIN_CHAIN_WORK.get(self.chain.network.name, 0))

    def prune(self) -> int:
        """Drop held headers that cannot beat the tip (no held descendant does either),
        except the chains a presync is releasing (``pins``)."""
        floor = self.floor()
        keep: set[bytes] = set()
        pinned = set(self.pins.values())
        for e in self.entries.values():
            if (e.work > floor or e.hash in pinned) and e.hash not in keep:
                cur: bytes | None = e.hash
                while cur is not None and cur in self.entries and cur not in keep:
                    keep.add(cur)
                    cur = self.entries[cur].parent
        dropped = [h for h in self.entries if h not in keep or h in self.chain.index]
        for h in dropped:
            del self.entries[h]
        return len(dropped)


class Downloader:
    """Which block to ask of whom; ``request`` sends a getdata to a peer."""

    def __init__(
        self,
        store: HeaderStore,
        window: int,
        per_peer: int,
        stall_s: float,
    ) -> None:
        self.store = store
        self.chain = store.chain
        self.window = window
        self.per_peer = per_peer
        self.base_stall_s = stall_s
        self.stall_s = stall_s  # grows on each stall, shrinks back as blocks arrive
        self.target: bytes | None = None  # best header chain tip being downloaded
        self.want: deque[bytes] = deque()
        self.inflight: dict[bytes, tuple[int, float]] = {}  # hash -> (peer id, sent at)
        self.buffer: dict[bytes, tuple[Block, int]] = {}  # hash -> (block, peer id)
        self.by_parent: dict[bytes, list[bytes]] = {}

    def retarget(self) -> None:
        best = self.store.best()
        floor = max(self.chain.tip.cumulative_work, MIN_CHAIN_WORK.get(self.chain.network.name, 0))
        if best is None or best.work <= floor:
            self.target = None
            self.want.clear()
            return
        seg: list[bytes] = []
        cur = best.hash
        while cur in self.store.entries and cur != self.target:
            seg.append(cur)
            cur = self.store.entries[cur].parent
        seg.reverse()
        if self.target is not None and cur == self.target:
            self.want.extend(seg)
        else:
            self.want = deque(seg)
        self.target = best.hash

    def target_height(self) -> int:
        if self.target is None:
            return self.chain.tip.height
        h = self.store.height_of(self.target)
        return h if h is not None else self.chain.tip.height

    def requeue(self, h: bytes) -> None:
        self.inflight.pop(h, None)
        if h in self.store.entries and h not in self.buffer:
            self.want.appendleft(h)

    def next_for(self, can_serve: Callable[[bytes, int], bool], budget: int) -> list[bytes]:
        """Up to ``budget`` hashes (in height order, inside the window) for one peer."""
        limit = self.chain.tip.height + self.window
        out: list[bytes] = []
        skipped: list[bytes] = []
        while self.want and len(out) < budget:
            h = self.want[0]
            e = self.store.entries.get(h)
            if e is None or h in self.chain.index or h in self.buffer or h in self.inflight:
                self.want.popleft()
                continue
            if e.height > limit:
                break
            self.want.popleft()
            if can_serve(h, e.height):
                out.append(h)
            else:
                skipped.append(h)
            if len(skipped) > 64:
                break
        self.want.extendleft(reversed(skipped))
        return out

    def stalled(self, now: float, last_block: Callable[[int], float]) -> list[tuple[bytes, int]]:
        """Requests older than the stall window whose peer has not delivered any block
        within it either: a peer that keeps delivering over a slow link is not stalling."""
        s = self.stall_s
        return [
            (h, pid) for h, (pid, t) in self.inflight.items()
            if now - t > s and now - last_block(pid) > s
        ]  # fmt: skip

    def stall_seen(self) -> None:
        """Bitcoin Core's block-stalling window: double on each stall, up to a cap."""
        self.stall_s = min(MAX_STALL_S, self.stall_s * 2)

    def block_arrived(self) -> None:
        self.stall_s = max(self.base_stall_s, self.stall_s * STALL_DECAY)

    def add_block(self, block: Block, peer_id: int) -> None:
        h = block.hash
        self.inflight.pop(h, None)
        if h in self.buffer:
            return
        self.buffer[h] = (block, peer_id)
        self.by_parent.setdefault(block.header.parent, []).append(h)

    def ready(self) -> list[tuple[Block, int]]:
        """Buffered blocks whose parent is stored, taken out of the buffer."""
        out = []
        for parent in [p for p in self.by_parent if p in self.chain.index]:
            for h in self.by_parent.pop(parent):
                item = self.buffer.pop(h, None)
                if item is not None:
                    out.append(item)
        return out
