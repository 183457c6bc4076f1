"""Relay: inventory announcements, getdata/notfound, transactions, what was already
judged (recent rejects), and transactions held until their sender's nonce gap fills
(orphans, p2p/orphans.py)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chain.block import Block
from chain.mempool import MAX_NONCE_GAP
from chain.mempool_result import MempoolReject
from chain.tx import Transaction
from p2p.api import TipChangeLike
from p2p.lograte import UNLIMITED
from p2p.orphans import Orphan, OrphanTxs
from p2p.peer import BAN_SCORE, UNREQUESTED_SCORE, Peer
from p2p.peers import SEND_LOW_WATER
from p2p.protocol import (
    MAX_INV,
    GetData,
    Inv,
    InvType,
    MsgType,
    NotFound,
    TxMsg,
)

if TYPE_CHECKING:
    from p2p.service import P2PService

log = logging.getLogger("pouw.p2p")

MAX_BLOCKS_PER_GETDATA = 64  # blocks served per getdata; the rest answered notfound
MAX_PENDING_GETDATA = 128  # requested blocks waiting to be sent to one peer
MAX_RECENT_REJECTS = 20_000  # txids/wtxids judged invalid or policy-rejected, newest kept
MAX_TX_REQUESTS = 2000  # txs asked of one peer and not yet delivered
RESENT_REJECT_SCORE = 10  # a tx we already rejected, sent again though we did not ask
POLICY_WASTE_SCORE = 10  # a policy reject once the peer's allowance is spent
IBD_LAG = 16  # tip this many blocks behind the best header: do not announce each block
# Txs of disconnected blocks announced again after a reorg to a peer we had answered
# notfound (``_announce_readded``): ten full invs; a deeper reorg's reach it in blocks.
MAX_READDED_ANNOUNCED = 10 * MAX_INV
# What an adopted orphan may meet that says nothing against its peer: another copy came
# first, or a block confirmed it (or a rival of the same nonce) meanwhile.
_ORPHAN_OVERTAKEN = {MempoolReject.ALREADY_KNOWN, MempoolReject.NONCE_TOO_LOW}
_CONSENSUS_TX_REJECTS = {
    MempoolReject.UNKNOWN_KIND, MempoolReject.KIND_NOT_ACTIVE, MempoolReject.WRONG_CHAIN_ID,
    MempoolReject.PAYLOAD_TOO_LARGE, MempoolReject.ZERO_AMOUNT, MempoolReject.AMOUNT_OVERFLOW,
    MempoolReject.BAD_SIGNATURE,
}  # fmt: skip


class Relay:
    def __init__(self, svc: P2PService) -> None:
        self.svc = svc
        self.pm = svc.pm
        # Judged transactions, never fetched or checked again: policy rejects by txid
        # (cleared when the tip moves, as they may become valid), consensus-invalid ones
        # by txid, or by wtxid when only the signature was bad (the txid does not
        # cover it, so a forged copy must not block the real transaction).
        self.recent_rejects: OrderedDict[bytes, None] = OrderedDict()
        self.policy_rejects: OrderedDict[bytes, None] = OrderedDict()
        # Txs too far ahead of their sender's nonce, until the gap fills (p2p/orphans.py).
        self.orphans = OrphanTxs()
        self._adopt_senders: set[bytes] = set()
        self._adoption_scheduled = False

    # --- announcements -------------------------------------------------------------

    def on_tip_changed(self, change: TipChangeLike) -> None:
        if change.disconnected:
            self._announce_readded(change.disconnected, self.svc.chain.tip.hash)
        if not change.connected:
            return
        chain = self.svc.chain
        tip = chain.tip
        log.info("new tip height=%d hash=%s", tip.height, tip.hash.hex(), extra=UNLIMITED)
        self.policy_rejects.clear()
        self._expire_orphans()
        if self.orphans:  # a block moves its senders' nonces: their orphans may fit now
            self._adopt_orphans({tx.sender for block in change.connected for tx in block.txs})
        if self.svc.sync.dl.target_height() - tip.height > IBD_LAG:
            return  # catching up: announce when done
        h = tip.hash
        for peer in self.pm.ready_peers():
            if h not in peer.known:
                peer.learn(h)
                self.pm.send(peer, Inv(((InvType.BLOCK, h),)))

    def on_tx_accepted(self, tx: Transaction) -> None:
        self.announce_tx(tx)
        if self.orphans.has_sender(tx.sender):
            self._adopt_orphans({tx.sender})

    def announce_tx(self, tx: Transaction) -> None:
        """An inv of the tx to every ready peer that does not know it yet."""
        txid = tx.txid
        for peer in self.pm.ready_peers():
            if txid not in peer.known:
                peer.learn(txid)
                self.pm.send(peer, Inv(((InvType.TX, txid),)))

    def peer_closed(self, peer: Peer) -> None:
        for gone in self.orphans.drop_peer(peer.id):
            remember(self.policy_rejects, gone.txid)

    def _announce_readded(self, blocks: Iterable[Block], tip: bytes) -> None:
        """After a reorg: the txs of the disconnected blocks that came back to our pool
        are announced again to the peers that asked us for them and got notfound (we
        had just mined them: they had left the pool), and to those on the new branch
        (they know its tip: it came from them) that never heard of them from us or
        from themselves (a peer that mined apart from us, whose chain we reorged to:
        it never saw them), lowest nonces first, MAX_READDED_ANNOUNCED at most. A peer
        still on the old branch (it has them confirmed) is not told: it would fetch
        and reject them. Without this, every later tx of their sender
        waited behind the nonce gap at such a peer until a block carried the tx (seen:
        a miner's claims unseen by the other miners for 25 s after its own block was
        reorged away, and computed by them too). Other peers have them, or had them
        from the block and will from whoever they asked: announcing to everyone made
        peers fetch txs they had confirmed meanwhile, and spent their allowance of
        rejected txs (seen: two miners discouraged their hub): a peer that announced a
        tx to us, or was told of it, is not told again unless it asked."""
        mempool = self.svc.node.mempool
        back = sorted(
            (tx for block in blocks for tx in block.txs if tx.txid in mempool),
            key=lambda tx: tx.nonce,
        )[:MAX_READDED_ANNOUNCED]
        for peer in self.pm.ready_peers():
            on_new_branch = tip in peer.known
            txids = [
                tx.txid for tx in back
                if peer.tx_notfound.pop(tx.txid, 0) is None
                or (on_new_branch and tx.txid not in peer.known)
            ]  # fmt: skip
            for start in range(0, len(txids), MAX_INV):
                chunk = txids[start : start + MAX_INV]
                for txid in chunk:
                    peer.learn(txid)
                self.pm.send(peer, Inv(tuple((InvType.TX, txid) for txid in chunk)))

    def send_mempool_inventory(self, peer: Peer) -> None:
        """Announce our pending transactions to a new peer, so a transaction accepted
        while we had no peers (or before this one came) still reaches the miners."""
        txids = self.svc.node.mempool.txids()[:MAX_INV]
        for txid in txids:
            peer.learn(txid)
        if txids:
            self.pm.send(peer, Inv(tuple((InvType.TX, txid) for txid in txids)))

    # --- inventory -----------------------------------------------------------------

    def judged_tx(self, txid: bytes) -> bool:
        """Rejected, or held as an orphan: not to be fetched again."""
        return txid in self.recent_rejects or txid in self.policy_rejects or txid in self.orphans

    def on_inv(self, peer: Peer, msg: Inv) -> None:
        sync = self.svc.sync
        want_tx: list[tuple[InvType, bytes]] = []
        want_blocks: list[bytes] = []
        more_blocks = False
        for kind, h in msg.items:
            peer.learn(h)
            if kind is InvType.BLOCK:
                if not sync.wants_block(h):
                    continue
                if len(peer.inflight) + len(want_blocks) < self.svc.settings.inflight_per_peer:
                    want_blocks.append(h)
                else:
                    more_blocks = True  # over the in-flight cap: learn them by headers
            elif (
                h not in self.svc.node.mempool
                and not self.judged_tx(h)
                and h not in peer.tx_requested
                and len(peer.tx_requested) < MAX_TX_REQUESTS
            ):
                peer.tx_requested[h] = time.monotonic()
                want_tx.append((InvType.TX, h))
        if want_blocks:
            sync.request_blocks(peer, want_blocks)
        if more_blocks and peer.headers_requested is None:
            sync.request_headers(peer)
        if want_tx:
            self.pm.send(peer, GetData(tuple(want_tx)))

    def on_getdata(self, peer: Peer, msg: GetData) -> None:
        """Transactions are sent at once; blocks are queued and sent as the peer reads
        (``serve_pending``), so a getdata never holds more than one block in memory."""
        missing: list[tuple[InvType, bytes]] = []
        taken = 0
        for kind, h in msg.items:
            if kind is InvType.BLOCK:
                if taken >= MAX_BLOCKS_PER_GETDATA or len(peer.getdata) >= MAX_PENDING_GETDATA:
                    missing.append((kind, h))
                else:
                    taken += 1
                    peer.getdata.append(h)
            else:
                tx = self.svc.node.mempool.get(h)
                if tx is None:
                    missing.append((kind, h))
                    peer.answered_notfound(h)
                else:
                    self.pm.send(peer, TxMsg(tx))
        if missing:
            self.pm.send(peer, NotFound(tuple(missing)))
        self.serve_pending(peer)

    def serve_pending(self, peer: Peer) -> None:
        """Queue requested blocks while the peer's send queue is short."""
        missing: list[tuple[InvType, bytes]] = []
        db = self.svc.chain.db
        while peer.getdata and not peer.closed and peer.queued_bytes < SEND_LOW_WATER:
            h = peer.getdata.popleft()
            raw = db.get_block(h)
            if raw is None:
                missing.append((InvType.BLOCK, h))
                continue
            peer.learn(h)
            self.pm.send_raw(peer, MsgType.BLOCK, raw)
        if missing:
            self.pm.send(peer, NotFound(tuple(missing)))

    def on_notfound(self, peer: Peer, msg: NotFound) -> None:
        sync = self.svc.sync
        for kind, h in msg.items:
            if kind is InvType.BLOCK and h in peer.inflight:
                peer.inflight.discard(h)
                peer.no_have.add(h)
                sync.dl.requeue(h)
            else:
                peer.tx_requested.pop(h, None)
        sync.schedule()

    # --- transactions --------------------------------------------------------------

    def on_tx(self, peer: Peer, msg: TxMsg) -> None:
        tx = msg.tx
        txid = tx.txid
        requested = peer.tx_requested.pop(txid, None) is not None
        if not requested and not peer.unrequested.take():
            self.pm.misbehave(peer, UNREQUESTED_SCORE, "unrequested transaction flood")
            return
        peer.learn(txid)
        self._expire_orphans()
        if txid in self.orphans:  # another copy of one we hold: nothing to do yet
            return
        wtxid = hashlib.sha256(tx.to_bytes()).digest()
        if self.judged_tx(txid) or wtxid in self.recent_rejects:
            if not requested:  # we never ask for these: the peer pushed waste
                self.pm.misbehave(peer, RESENT_REJECT_SCORE, "re-sent a rejected transaction")
            return
        if not peer.tx_waste.available():
            self.pm.misbehave(peer, POLICY_WASTE_SCORE, "too many rejected transactions")
            return
        result = self.svc.node.submit_transaction(tx)
        if result.ok or result.reject is MempoolReject.ALREADY_KNOWN:
            return
        peer.tx_waste.take()
        if result.reject is MempoolReject.NONCE_GAP:  # signed, but too early: hold it
            self._hold_orphan(peer, tx, txid)
            return
        if result.reject is MempoolReject.BAD_SIGNATURE:
            remember(self.recent_rejects, wtxid)
        elif result.reject in _CONSENSUS_TX_REJECTS:
            remember(self.recent_rejects, txid)
        else:
            remember(self.policy_rejects, txid)
        if result.reject in _CONSENSUS_TX_REJECTS:
            self.pm.misbehave(peer, BAN_SCORE, f"invalid transaction: {result.reject}")

    # --- orphans -------------------------------------------------------------------

    def _hold_orphan(self, peer: Peer, tx: Transaction, txid: bytes) -> None:
        """Keep a tx the pool found too far ahead of its sender's nonce. Its peer stays
        charged for it (one token of its waste allowance) until it is adopted; what the
        buffer evicts to make room is remembered as rejected, as before it existed."""
        self._store_orphan(tx, txid, peer.id, time.monotonic())
        log.debug("holding tx %s from peer %d: nonce %d is ahead of the pool's window",
                  txid.hex(), peer.id, tx.nonce)  # fmt: skip

    def _store_orphan(self, tx: Transaction, txid: bytes, peer_id: int, arrived: float) -> None:
        for gone in self.orphans.add(tx, txid, peer_id, arrived):
            remember(self.policy_rejects, gone.txid)

    def _expire_orphans(self) -> None:
        for gone in self.orphans.expire(time.monotonic()):
            remember(self.policy_rejects, gone.txid)

    def _adopt_orphans(self, senders: set[bytes]) -> None:
        """Offer the pool, soon, the orphans of ``senders`` that fit its nonce window.

        Soon, not now: this runs inside the event that moved the window (a tx accepted,
        a block connected), whose other listeners (the market miner, RPC subscriptions)
        must see that tx before the ones it lets in, and the new block is announced
        first. Without an event loop (unit tests call the relay directly) it runs now."""
        self._adopt_senders |= {s for s in senders if self.orphans.has_sender(s)}
        if not self._adopt_senders or self._adoption_scheduled:
            return  # nothing to offer, or a run is due that picks these senders up
        self._adoption_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._run_adoption)
        except RuntimeError:
            self._run_adoption()

    def _run_adoption(self) -> None:
        """An adopted tx enters like any other (signature checked, announced), which may
        move its sender's window again: the loop runs until no sender has more to give.
        Each orphan is taken out only as it is offered: should the pool raise (a storage
        fault), the others stay held."""
        try:
            mempool = self.svc.node.mempool
            while self._adopt_senders:
                sender = self._adopt_senders.pop()
                while True:
                    window_end = mempool.pending_nonce(sender) + MAX_NONCE_GAP
                    ready = self.orphans.take(sender, window_end, limit=1)
                    if not ready:
                        break
                    self._adopt(ready[0])
        finally:
            self._adoption_scheduled = False

    def _adopt(self, orphan: Orphan) -> None:
        result = self.svc.node.submit_transaction(orphan.tx)
        origin = self.pm.peers.get(orphan.peer_id)
        if result.ok or result.reject in _ORPHAN_OVERTAKEN:
            if origin is not None:  # it was honest: the peer gets its token back
                origin.tx_waste.give_back()
            return
        remember(self.policy_rejects, orphan.txid)


def remember(table: OrderedDict[bytes, None], h: bytes) -> None:
    """Add ``h`` to a bounded table of judged hashes (oldest forgotten)."""
    table[h] = None
    table.move_to_end(h)
    if len(table) > MAX_RECENT_REJECTS:
        table.popitem(last=False)
