"""Block and header messages: header-first sync with one header peer at a time, block
download spread over peers (p2p/sync.py holds the headers and the download queue),
serving headers, stall handling and progress logs."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from chain.block import Block
from chain.header import Header
from chain.validation import BlockReject, Verdict
from consensus.difficulty import block_work
from p2p.headerpace import HEADER_WIRE_BYTES, reply_bytes
from p2p.lograte import UNLIMITED
from p2p.lowwork import LowWork
from p2p.peer import BAN_SCORE, UNREQUESTED_SCORE, Peer
from p2p.protocol import (
    HEADERS_BYTES_VERSION,
    HEADERS_SOFT_BYTES,
    MAX_HEADERS,
    MAX_LOCATOR,
    BlockMsg,
    GetData,
    GetHeaders,
    Headers,
    InvType,
)
from p2p.sync import Downloader, HeaderStore

if TYPE_CHECKING:
    from p2p.service import P2PService

log = logging.getLogger("pouw.p2p")

MAX_UNSOLICITED_HEADERS = 8  # headers a peer may push without being asked
MAX_UNCONNECTING = 10  # unconnecting headers messages answered with a getheaders
PROGRESS_LOG_S = 2.0  # seconds between "sync progress" lines
MAX_JUDGED_ORPHANS = 20_000  # hashes of blocks seen without a known parent, newest kept
RESENT_BLOCK_SCORE = 20  # pushing a block already judged (invalid, orphan, stored)


class BlockSync:
    def __init__(self, svc: P2PService) -> None:
        self.svc = svc
        self.pm = svc.pm
        self.chain = svc.chain
        s = svc.settings
        self.settings = s
        self.store = HeaderStore(self.chain)
        self.dl = Downloader(self.store, s.block_window, s.inflight_per_peer, s.block_stall)
        self.sync_peer: Peer | None = None
        self.low_work = LowWork(self)
        # Blocks that came without a known parent: not checked (only their headers can
        # make them wanted), never fetched again by hash.
        self.orphans: OrderedDict[bytes, None] = OrderedDict()
        self._progress = (time.monotonic(), self.chain.tip.height)
        self._last_height, self._last_advance = self.chain.tip.height, time.monotonic()
        self.headers_timeouts = 0  # headers replies that timed out since the last one came

    def peer_closed(self, peer: Peer) -> None:
        for h in list(peer.inflight):
            if self.dl.inflight.get(h, (0, 0))[0] == peer.id:
                self.dl.requeue(h)
        peer.inflight.clear()
        if peer.presync is not None:
            self.low_work.drop(peer)
            self.store.prune()
        if self.sync_peer is peer:
            self.sync_peer = None

    # --- blocks --------------------------------------------------------------------

    def judged(self, h: bytes) -> bool:
        """Already stored, known invalid, or seen as an orphan."""
        return h in self.chain.index or h in self.store.invalid or h in self.orphans

    def wants_block(self, h: bytes) -> bool:
        """Worth a getdata when announced: unknown, not asked, not judged before."""
        return not (self.store.known(h) or h in self.dl.inflight or self.judged(h))

    def wants_body(self, peer: Peer, header: Header) -> bool:
        """Judge a block by its header before its body is decoded: False (and handled)
        for a block already judged, an unrequested one past the allowance, or an
        orphan; ``on_block`` then sees only blocks worth decoding."""
        h = header.hash
        if h in peer.inflight or h in self.store.entries:
            if header.parent in self.chain.index or h in self.store.entries:
                return True
        elif self.judged(h):
            peer.learn(h)
            if not peer.excused(h):  # else a late copy of a block asked again: ignored
                self.pm.misbehave(peer, RESENT_BLOCK_SCORE, "re-sent an already judged block")
            return False
        elif header.parent in self.chain.index:
            return True
        elif not peer.unrequested.take():
            self.pm.misbehave(peer, UNREQUESTED_SCORE, "unrequested block flood")
            return False
        self._release(peer, h)
        self._orphan(h, peer)
        return False

    def _release(self, peer: Peer, h: bytes) -> None:
        """``h`` came from ``peer``: no longer in flight."""
        peer.learn(h)
        peer.inflight.discard(h)
        if self.dl.inflight.get(h, (0, 0))[0] == peer.id:
            self.dl.inflight.pop(h, None)

    def on_block(self, peer: Peer, msg: BlockMsg) -> None:
        block = msg.block
        h = block.hash
        peer.learn(h)
        requested = h in peer.inflight
        peer.inflight.discard(h)
        late = not requested and peer.excused(h)  # asked, stalled, maybe asked again
        if not requested:
            if h not in self.store.entries and self.judged(h):
                if not late:
                    self.pm.misbehave(peer, RESENT_BLOCK_SCORE, "re-sent an already judged block")
                return
            if not late and not peer.unrequested.take():
                self.pm.misbehave(peer, UNREQUESTED_SCORE, "unrequested block flood")
                return
        peer.last_block = time.monotonic()
        if self.dl.inflight.get(h, (0, 0))[0] == peer.id:
            self.dl.inflight.pop(h, None)
            self.dl.block_arrived()
        if h in self.store.entries:
            self.dl.add_block(block, peer.id)
            self.drain()
        elif block.header.parent not in self.chain.index:
            self._orphan(h, peer)
        else:
            self.submit(block, peer)
        self.schedule()

    def _orphan(self, h: bytes, peer: Peer) -> None:
        """A block whose parent we lack: remembered by hash, not checked; its headers are
        asked for, and it is fetched again only once they connect (not punished)."""
        self.orphans[h] = None
        if len(self.orphans) > MAX_JUDGED_ORPHANS:
            self.orphans.popitem(last=False)
        if not peer.closed and peer.headers_requested is None:
            self.request_headers(peer)

    def submit(self, block: Block, peer: Peer | None) -> bool:
        result = self.svc.node.submit_block(block)
        check = result.check
        self.store.forget(block.hash)
        if check.verdict is Verdict.INVALID:
            self.store.mark_invalid(block.hash)
            self.dl.retarget()
            if peer is not None and check.reason is not BlockReject.PARENT_INVALID:
                self.pm.misbehave(
                    peer, BAN_SCORE, f"invalid block {block.hash.hex()[:16]}: {check}"
                )
            elif peer is not None:
                self.pm.misbehave(peer, BAN_SCORE, "block on an invalid chain")
            return False
        if check.verdict is Verdict.DEFER and check.reason is BlockReject.UNKNOWN_PARENT:
            if peer is not None and not peer.closed and peer.headers_requested is None:
                self.request_headers(peer)  # fill the gap; not punished
        rec = self.chain.index.get(block.hash)
        if peer is not None and rec is not None:  # it has this block: its chain reaches it
            self.shown(peer, rec.cumulative_work, rec.height)
        return True

    def drain(self) -> None:
        while True:
            ready = self.dl.ready()
            if not ready:
                return
            for block, pid in ready:
                self.submit(block, self.pm.peers.get(pid))

    def request_blocks(self, peer: Peer, hashes: list[bytes]) -> None:
        now = time.monotonic()
        for h in hashes:
            self.dl.inflight[h] = (peer.id, now)
            peer.inflight.add(h)
        self.pm.send(peer, GetData(tuple((InvType.BLOCK, h) for h in hashes)))

    # --- headers -------------------------------------------------------------------

    def request_headers(self, peer: Peer, start: bytes | None = None) -> None:
        """getheaders from ``start``, else from our best held header (what an earlier
        peer gave us is kept), then our active chain's locator."""
        if start is None and peer.presync is not None:
            return  # a presync asks for its own headers
        if start is None:
            best = self.store.best()
            start = best.hash if best is not None else None
        locator = ([start] if start is not None else []) + self.locator()
        v = peer.version
        max_bytes = peer.header_pace.request(v is not None and v.protocol >= HEADERS_BYTES_VERSION)
        peer.headers_requested = time.monotonic()
        self.pm.send(peer, GetHeaders(tuple(locator[:MAX_LOCATOR]), bytes(32), max_bytes))

    def locator(self) -> list[bytes]:
        out: list[bytes] = []
        height, step = self.chain.tip.height, 1
        while height > 0 and len(out) < MAX_LOCATOR - 2:
            h = self.chain.active_hash(height)
            if h is not None:
                out.append(h)
            if len(out) >= 10:
                step *= 2
            height -= step
        out.append(self.chain.genesis.hash)
        return out

    def on_getheaders(self, peer: Peer, msg: GetHeaders) -> None:
        """Served within the peer's header allowance; with nothing left, the request
        waits (only the latest one per peer) and is served as the allowance refills."""
        allowance = min(MAX_HEADERS, peer.getheaders_bucket.available())
        if allowance < 1:
            peer.waiting_getheaders = msg
            return
        peer.waiting_getheaders = None
        start = 1
        for h in msg.locator:
            rec = self.chain.index.get(h)
            if rec is not None and self.chain.active_hash(rec.height) == h:
                start = rec.height + 1
                break
        headers: list[Header] = []
        size = 2
        limit = min(HEADERS_SOFT_BYTES, msg.max_bytes or HEADERS_SOFT_BYTES)
        end = min(self.chain.tip.height, start + allowance - 1)
        for height in range(start, end + 1):
            bh = self.chain.active_hash(height)
            if bh is None:
                break
            try:  # (its own key: the body is neither read nor checked whole)
                header = self.chain.get_header(bh)
            except KeyError:
                break
            n = HEADER_WIRE_BYTES + len(header.seal)
            if headers and size + n > limit:
                break
            headers.append(header)
            size += n
            if bh == msg.stop:
                break
        peer.getheaders_bucket.take(len(headers))
        self.pm.send(peer, Headers(tuple(headers)))

    def on_headers(self, peer: Peer, msg: Headers) -> None:
        asked = peer.headers_requested
        solicited = asked is not None
        peer.headers_requested = None
        headers = msg.headers
        if asked is not None:
            peer.header_pace.replied(reply_bytes(headers), time.monotonic() - asked)
        if not solicited and len(headers) > MAX_UNSOLICITED_HEADERS:
            self.pm.misbehave(peer, BAN_SCORE, f"{len(headers)} unrequested headers")
            return
        if solicited:
            self.headers_timeouts = 0
            if peer.presync is not None:
                self.low_work.step(peer, headers)
                self.schedule()
                return
        if not headers:
            if self.sync_peer is peer:
                self.sync_peer = None
            self.store.prune()
            self.dl.retarget()
            return
        new = next((i for i, hd in enumerate(headers) if not self.store.known(hd.hash)), None)
        if new is not None and self.store.known(headers[new].parent):
            # The work the headers claim (their targets; a false one fails the checks):
            # a chain that does not beat our floor is not stored (presync, below).
            claimed = self.store.work_of(headers[new].parent) or 0
            claimed += sum(block_work(hd.target) for hd in headers[new:] if hd.target)
            if claimed <= self.store.floor():
                self.low_work.headers(peer, headers[new:], solicited)
                return
        res = self.store.add_chain(headers)
        if res.invalid is not None:
            self.pm.misbehave(peer, BAN_SCORE, f"invalid header: {res.invalid}")
            return
        if res.unconnecting:
            peer.unconnecting += 1
            if peer.unconnecting <= MAX_UNCONNECTING and peer.presync is None:
                self.request_headers(peer)  # not punished: ask from our locator
            return
        if res.last is not None:
            self.shown(peer, self.store.work_of(res.last) or 0, self.store.height_of(res.last))
        if res.added:
            self.dl.retarget()
        if solicited and res.last is not None and not res.full and not res.deferred:
            self.request_headers(peer, res.last)
        elif self.sync_peer is peer:
            self.sync_peer = None
        self.schedule()

    @staticmethod
    def shown(peer: Peer, work: int, height: int | None) -> None:
        """The peer's chain has been shown to reach ``work`` at ``height``."""
        if work > peer.best_work:
            peer.best_work = work
        peer.best_height = max(peer.best_height, height or 0)

    def maybe_sync(self) -> None:
        if self.sync_peer is not None and not self.sync_peer.closed:
            return
        best = self.store.best()
        floor = max(self.chain.tip.cumulative_work, best.work if best else 0)
        cands = [
            p for p in self.pm.ready_peers()
            if p.best_work > floor and p.headers_requested is None and p.presync is None
        ]  # fmt: skip
        if not cands:
            return
        peer = max(cands, key=lambda p: p.best_work)
        self.sync_peer = peer
        self.request_headers(peer)

    def schedule(self) -> None:
        if not self.dl.want:
            return
        peers = sorted(self.pm.ready_peers(), key=lambda p: len(p.inflight))
        for peer in peers:
            budget = self.settings.inflight_per_peer - len(peer.inflight)
            if budget <= 0:
                continue

            def can_serve(h: bytes, height: int, peer: Peer = peer) -> bool:
                return h not in peer.no_have and peer.best_height >= height

            hashes = self.dl.next_for(can_serve, budget)
            if hashes:
                self.request_blocks(peer, hashes)

    # --- periodic ------------------------------------------------------------------

    def headers_deadline(self, peer: Peer) -> float:
        """Seconds a headers reply may take: the base timeout plus the bytes asked at
        the peer's measured rate (p2p/headerpace.py), doubled per earlier timeout."""
        base = peer.header_pace.timeout(self.settings.headers_timeout)
        return base * 2 ** min(self.headers_timeouts, 4)

    def tick(self, now: float) -> None:
        s = self.settings
        for peer in self.pm.ready_peers():
            waiting = peer.waiting_getheaders
            if waiting is not None and peer.getheaders_bucket.available() >= 1:
                self.on_getheaders(peer, waiting)
            asked = peer.headers_requested
            if asked is not None and now - asked > self.headers_deadline(peer):
                self.headers_timeouts += 1  # kept across reconnects, like the headers
                self.pm.drop(peer, "headers request timed out")
        stalls = self.dl.stalled(now, self._last_block_of)
        if stalls:
            self.dl.stall_seen()
        for h, pid in stalls:
            slow = self.pm.peers.get(pid)
            self.dl.requeue(h)
            if slow is None:
                continue
            slow.inflight.discard(h)
            slow.stalled(h)
            slow.stalls += 1
            others = [p for p in self.pm.ready_peers() if p is not slow and p.best_height > 0]
            log.info(
                "block %s stalled on peer %d: asking again (stall window %.0fs)",
                h.hex()[:16], pid, self.dl.stall_s,
            )  # fmt: skip
            if others:
                slow.no_have.add(h)  # let another peer have it first
            if slow.stalls >= s.max_stalls and others:
                self.pm.drop(slow, "stalling block download")
        self.maybe_sync()
        self.schedule()
        self.log_progress(now)

    def _last_block_of(self, peer_id: int) -> float:
        peer = self.pm.peers.get(peer_id)
        return peer.last_block if peer is not None else 0.0

    def log_progress(self, now: float) -> None:
        target = self.dl.target_height()
        height = self.chain.tip.height
        if height != self._last_height or target <= height:
            self._last_height, self._last_advance = height, now
        elif now - self._last_advance > self.settings.sync_warn_s:
            log.warning(
                "sync is not progressing: height %d of %d for %.0fs (%d peers, %d blocks "
                "in flight, stall window %.0fs)", height, target, now - self._last_advance,
                len(self.pm.ready_peers()), len(self.dl.inflight), self.dl.stall_s,
            )  # fmt: skip
            self._last_advance = now
        t0, h0 = self._progress
        if target <= height or now - t0 < PROGRESS_LOG_S:
            if target <= height:
                self._progress = (now, height)
            return
        rate = (height - h0) / (now - t0)
        eta = (target - height) / rate if rate > 0 else float("inf")
        log.info(
            "sync progress height=%d/%d progress=%.1f%% rate=%.1f blocks/s eta=%s peers=%d",
            height, target, 100.0 * height / max(target, 1), rate,
            f"{eta:.0f}s" if eta != float("inf") else "?", len(self.pm.ready_peers()),
            extra=UNLIMITED,
        )  # fmt: skip
        self._progress = (now, height)
