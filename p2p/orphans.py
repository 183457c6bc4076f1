"""Transactions that came from peers too far ahead of their sender's nonce: held for a
while, and offered to the pool again once the sender's earlier transactions arrive.

The pool takes a tx at most ``chain.mempool.MAX_NONCE_GAP`` past its sender's next
nonce. An honest sender's burst relayed over several paths can still arrive out of
order beyond that window; before this buffer such a tx was rejected, remembered as
rejected (so never fetched again, and every later tx of its sender queued behind the
gap at this node until a block carried it) and charged to the relaying peer as waste.
Bitcoin Core keeps an orphan pool for the same reason (txs whose parents have not
arrived yet). Everything here is bounded by counts and bytes a peer cannot raise: a
peer at its own cap evicts its own orphans, a full buffer loses those of the peer
holding the most, and a peer's orphans leave with it (the relay drops them when it
disconnects), so reconnecting does not spread one peer's flood over fresh caps.

Pure bookkeeping: no I/O, no clock (callers pass ``now`` in monotonic seconds).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from chain.tx import MAX_PLAIN_TX_SIZE, Transaction

# Bitcoin Core's DEFAULT_MAX_ORPHAN_TRANSACTIONS is 100 for a chain whose blocks hold a
# few thousand txs; a market buyer here sends a product's submits (up to 256) at once.
MAX_ORPHANS = 512
# Below a peer's allowance of rejected txs (P2PSettings.tx_waste_burst, 200): an orphan
# is charged to its peer until it is adopted, so an honest peer's orphans alone never
# spend that allowance.
MAX_ORPHANS_PER_PEER = 100
# Room for every orphan at the size of an ordinary tx; a few market challenges (up to
# 266 KB each) fit too, at the expense of the count.
MAX_ORPHAN_BYTES = MAX_ORPHANS * MAX_PLAIN_TX_SIZE
# Bitcoin Core's ORPHAN_TX_EXPIRE_TIME: a gap not filled in 20 minutes will not be.
ORPHAN_EXPIRY_S = 20 * 60.0


@dataclass(frozen=True)
class Orphan:
    tx: Transaction
    txid: bytes
    peer_id: int  # the peer it came from (charged for it until it is adopted)
    size: int
    arrived: float


class OrphanTxs:
    """Orphan transactions by txid, oldest first, capped in count, bytes and per peer."""

    def __init__(
        self,
        max_count: int = MAX_ORPHANS,
        max_per_peer: int = MAX_ORPHANS_PER_PEER,
        max_bytes: int = MAX_ORPHAN_BYTES,
        expiry_s: float = ORPHAN_EXPIRY_S,
    ) -> None:
        if min(max_count, max_per_peer, max_bytes) <= 0 or expiry_s <= 0:
            raise ValueError("orphan caps and expiry must be positive")
        self.max_count = max_count
        self.max_per_peer = max_per_peer
        self.max_bytes = max_bytes
        self.expiry_s = expiry_s
        self._by_id: dict[bytes, Orphan] = {}  # insertion order: oldest first
        self._by_sender: dict[bytes, set[bytes]] = {}
        self._per_peer: Counter[int] = Counter()
        self.bytes = 0

    def __contains__(self, txid: object) -> bool:
        return txid in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def has_sender(self, sender: bytes) -> bool:
        return sender in self._by_sender

    def held_by(self, peer_id: int) -> int:
        return self._per_peer[peer_id]

    def add(self, tx: Transaction, txid: bytes, peer_id: int, now: float) -> list[Orphan]:
        """Hold ``tx`` from peer ``peer_id``. Returns what left to make room (oldest of
        the same peer once it holds ``max_per_peer``, else oldest of the peer holding the
        most); that is the newcomer itself when it is larger than the whole buffer."""
        if txid in self._by_id:
            return []
        orphan = Orphan(tx, txid, peer_id, len(tx.to_bytes()), now)
        if orphan.size > self.max_bytes:
            return [orphan]
        evicted: list[Orphan] = []
        while self._per_peer[peer_id] >= self.max_per_peer:
            evicted.append(self._evict_oldest_of(peer_id))
        while len(self._by_id) >= self.max_count or self.bytes + orphan.size > self.max_bytes:
            heaviest = max(self._per_peer, key=lambda p: (self._per_peer[p], p == peer_id))
            evicted.append(self._evict_oldest_of(heaviest))
        self._by_id[txid] = orphan
        self._by_sender.setdefault(tx.sender, set()).add(txid)
        self._per_peer[peer_id] += 1
        self.bytes += orphan.size
        return evicted

    def take(self, sender: bytes, max_nonce: int, limit: int | None = None) -> list[Orphan]:
        """Remove and return ``sender``'s orphans with a nonce up to ``max_nonce``, lowest
        nonce first (the order the pool wants them), at most ``limit`` of them."""
        txids = self._by_sender.get(sender)
        if not txids:
            return []
        ready = sorted(
            (self._by_id[t] for t in txids if self._by_id[t].tx.nonce <= max_nonce),
            key=lambda o: o.tx.nonce,
        )[:limit]
        for orphan in ready:
            self._remove(orphan)
        return ready

    def drop_peer(self, peer_id: int) -> list[Orphan]:
        """Remove and return what peer ``peer_id`` sent (it disconnected): a peer that
        reconnects starts from nothing, so connections cannot add up to more than their
        caps (Bitcoin Core's EraseForPeer)."""
        if peer_id not in self._per_peer:
            return []
        gone = [o for o in self._by_id.values() if o.peer_id == peer_id]
        for orphan in gone:
            self._remove(orphan)
        return gone

    def expire(self, now: float) -> list[Orphan]:
        """Remove and return the orphans held for ``expiry_s`` or longer."""
        cutoff = now - self.expiry_s
        gone: list[Orphan] = []
        for orphan in self._by_id.values():  # oldest first: stop at the first young one
            if orphan.arrived > cutoff:
                break
            gone.append(orphan)
        for orphan in gone:
            self._remove(orphan)
        return gone

    def _evict_oldest_of(self, peer_id: int) -> Orphan:
        victim = next(o for o in self._by_id.values() if o.peer_id == peer_id)
        self._remove(victim)
        return victim

    def _remove(self, orphan: Orphan) -> None:
        del self._by_id[orphan.txid]
        sender = orphan.tx.sender
        same = self._by_sender[sender]
        same.discard(orphan.txid)
        if not same:
            del self._by_sender[sender]
        self._per_peer[orphan.peer_id] -= 1
        if self._per_peer[orphan.peer_id] <= 0:
            del self._per_peer[orphan.peer_id]
        self.bytes -= orphan.size
