"""A peer's headers of a chain that does not beat ours: never stored. Pushed ones are
ignored within the unrequested allowance; a reply to our getheaders starts a headers
presync (p2p/presync.py) whose second pass releases the chain to the header store
once it has shown more work than ours."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from chain.header import Header
from p2p.peer import BAN_SCORE, UNREQUESTED_SCORE, Peer
from p2p.presync import HeadersPresync, Phase

if TYPE_CHECKING:
    from p2p.blocksync import BlockSync

log = logging.getLogger("pouw.p2p")


class LowWork:
    def __init__(self, sync: BlockSync) -> None:
        self.sync = sync
        self.pm = sync.pm

    def headers(self, peer: Peer, headers: tuple[Header, ...], solicited: bool) -> None:
        """Headers of a chain that does not beat our floor: never stored. Pushed ones
        are ignored (not checked) within the unrequested allowance; a reply starts a
        presync of the chain from the known header it forks from."""
        if not solicited:
            if not peer.unrequested.take():
                self.pm.misbehave(peer, UNREQUESTED_SCORE, "unrequested low-work headers")
            return
        if time.monotonic() < peer.presync_after or peer.presync is not None:
            if self.sync.sync_peer is peer:
                self.sync.sync_peer = None
            return
        start = headers[0].parent
        s, store = self.sync.settings, self.sync.store
        peer.presync = HeadersPresync(
            self.sync.chain.network, start, store.context(start), store.work_of(start) or 0,
            store.floor, int(time.time()), s.presync_period, s.presync_buffer,
        )  # fmt: skip
        log.info(
            "header presync with peer %d from height %d: its chain does not beat ours yet, "
            "headers are checked but not stored", peer.id, peer.presync.start.height,
        )  # fmt: skip
        self.step(peer, headers)

    def step(self, peer: Peer, headers: tuple[Header, ...]) -> None:
        ps = peer.presync
        assert ps is not None
        if not headers:
            self.end(peer, "the peer has no more headers", ended=True)
            return
        bad = self.sync.store.invalid
        if any(hd.hash in bad or hd.parent in bad for hd in headers):
            self.drop(peer)
            self.pm.misbehave(peer, BAN_SCORE, "invalid header: header of an invalid chain")
            return
        phase = ps.phase
        step = ps.feed(headers, int(time.time()))
        if step.invalid is not None:
            self.drop(peer)
            self.pm.misbehave(peer, BAN_SCORE, f"invalid header: {step.invalid}")
            return
        if step.abort is not None:
            self.end(peer, step.abort, ended=False)
            return
        if step.release:
            if not self.sync.store.add_verified(step.release):
                self.end(peer, "the header store cannot take its chain", ended=False)
                return
            last = step.release[-1]
            self.sync.store.pins[peer.id] = last.hash
            self.sync.shown(peer, last.work, last.height)
            self.sync.dl.retarget()
        if ps.phase is Phase.DONE:
            self.drop(peer)
            log.info(
                "header presync with peer %d done: its chain beats ours, headers stored to "
                "height %d (%d checked); syncing it", peer.id, ps.redo.height, ps.checked,
            )  # fmt: skip
            self.sync.request_headers(peer, ps.redo.hash)
            return
        if phase is Phase.PRESYNC and ps.phase is Phase.REDOWNLOAD:
            self.sync.shown(peer, ps.work, ps.height)
            log.info(
                "header presync with peer %d: its chain beats ours at height %d; "
                "downloading its headers again to store them", peer.id, ps.height,
            )  # fmt: skip
        self.sync.request_headers(peer, step.next_from)

    def drop(self, peer: Peer) -> None:
        peer.presync = None
        self.sync.store.pins.pop(peer.id, None)

    def end(self, peer: Peer, why: str, ended: bool) -> None:
        """Give up on the peer's chain: nothing more of it is stored; what a second pass
        had released is pruned unless it beats our tip. A chain that ended below the
        work the peer claimed (in its version or headers) is punished."""
        ps = peer.presync
        assert ps is not None
        self.drop(peer)
        peer.presync_after = time.monotonic() + self.sync.settings.presync_retry_s
        if self.sync.sync_peer is peer:
            self.sync.sync_peer = None
        self.sync.store.prune()
        self.sync.dl.retarget()
        if ended and ps.phase is Phase.PRESYNC and ps.work < peer.best_work:
            self.pm.misbehave(
                peer, BAN_SCORE, f"header chain with less work than it claimed ({ps.checked} "
                f"headers checked to height {ps.height}, none stored)",
            )  # fmt: skip
            return
        log.info(
            "header presync with peer %d ended at height %d: %s (%d headers checked, "
            "none stored)", peer.id, ps.height, why, ps.checked,
        )  # fmt: skip
