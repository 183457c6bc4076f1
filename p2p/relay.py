"""Relay: inventory announcements, getdata/notfound, transactions, and what was
already judged (recent rejects)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from chain.mempool import MempoolReject
from chain.tx import Transaction
from p2p.api import TipChangeLike
from p2p.peer import BAN_SCORE, Peer
from p2p.protocol import (
    MAX_HEADERS,
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
MAX_RECENT_REJECTS = 20_000
IBD_LAG = 16  # tip this many blocks behind the best header: do not announce each block
_CONSENSUS_TX_REJECTS = {
    MempoolReject.UNKNOWN_KIND, MempoolReject.KIND_NOT_ACTIVE, MempoolReject.WRONG_CHAIN_ID,
    MempoolReject.PAYLOAD_TOO_LARGE, MempoolReject.ZERO_AMOUNT, MempoolReject.AMOUNT_OVERFLOW,
    MempoolReject.BAD_SIGNATURE,
}  # fmt: skip


class Relay:
    def __init__(self, svc: P2PService) -> None:
        self.svc = svc
        self.pm = svc.pm
        self.recent_rejects: OrderedDict[bytes, None] = OrderedDict()

    # --- announcements -------------------------------------------------------------

    def on_tip_changed(self, change: TipChangeLike) -> None:
        if not change.connected:
            return
        chain = self.svc.chain
        tip = chain.tip
        log.info("new tip height=%d hash=%s", tip.height, tip.hash.hex())
        if self.svc.sync.dl.target_height() - tip.height > IBD_LAG:
            return  # catching up: announce when done
        h = tip.hash
        for peer in self.pm.ready_peers():
            if h not in peer.known:
                peer.learn(h)
                self.pm.send(peer, Inv(((InvType.BLOCK, h),)))

    def on_tx_accepted(self, tx: Transaction) -> None:
        txid = tx.txid
        for peer in self.pm.ready_peers():
            if txid not in peer.known:
                peer.learn(txid)
                self.pm.send(peer, Inv(((InvType.TX, txid),)))

    def send_mempool_inventory(self, peer: Peer) -> None:
        """Announce our pending transactions to a new peer, so a transaction accepted
        while we had no peers (or before this one came) still reaches the miners."""
        txids = self.svc.node.mempool.txids()[:MAX_INV]
        for txid in txids:
            peer.learn(txid)
        if txids:
            self.pm.send(peer, Inv(tuple((InvType.TX, txid) for txid in txids)))

    # --- inventory -----------------------------------------------------------------

    def on_inv(self, peer: Peer, msg: Inv) -> None:
        sync = self.svc.sync
        want_tx: list[tuple[InvType, bytes]] = []
        for kind, h in msg.items:
            peer.learn(h)
            if kind is InvType.BLOCK:
                if sync.store.known(h) or h in sync.dl.inflight or h in sync.store.invalid:
                    continue
                sync.request_blocks(peer, [h])
            elif (
                h not in self.svc.node.mempool
                and h not in self.recent_rejects
                and h not in peer.tx_requested
                and len(peer.tx_requested) < 4 * MAX_HEADERS
            ):
                peer.tx_requested[h] = time.monotonic()
                want_tx.append((InvType.TX, h))
        if want_tx:
            self.pm.send(peer, GetData(tuple(want_tx)))

    def on_getdata(self, peer: Peer, msg: GetData) -> None:
        missing: list[tuple[InvType, bytes]] = []
        served = 0
        chain = self.svc.chain
        for kind, h in msg.items:
            if kind is InvType.BLOCK:
                raw = chain.db.get_block(h) if served < MAX_BLOCKS_PER_GETDATA else None
                if raw is None:
                    missing.append((kind, h))
                    continue
                served += 1
                peer.learn(h)
                self.pm.send_raw(peer, MsgType.BLOCK, raw)
            else:
                tx = self.svc.node.mempool.get(h)
                if tx is None:
                    missing.append((kind, h))
                else:
                    self.pm.send(peer, TxMsg(tx))
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
        if peer.tx_requested.pop(txid, None) is None and not peer.unrequested.take():
            self.pm.misbehave(peer, 20, "unrequested transaction flood")
            return
        peer.learn(txid)
        if txid in self.recent_rejects:
            return
        result = self.svc.node.submit_transaction(tx)
        if result.ok or result.reject is MempoolReject.ALREADY_KNOWN:
            return
        if result.reject in _CONSENSUS_TX_REJECTS:
            self.remember_reject(txid)
            self.pm.misbehave(peer, BAN_SCORE, f"invalid transaction: {result.reject}")

    def remember_reject(self, h: bytes) -> None:
        self.recent_rejects[h] = None
        if len(self.recent_rejects) > MAX_RECENT_REJECTS:
            self.recent_rejects.popitem(last=False)
