"""The mempool's bookkeeping: its entries by txid and by account (nonce lists, the
pending run, running costs), the byte and pending counts, the lazy-deletion heaps
and the job index, kept in step by insert, remove and resync. The policy (what
enters, what is evicted or expires, what a block takes) is chain/mempool.py's.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from chain.mempool_jobs import JobIndex
from chain.tx import Transaction

AccountLookup = Callable[[bytes], tuple[int, int]]


@dataclass(eq=False, slots=True)
class Entry:
    tx: Transaction
    txid: bytes
    sender: bytes
    nonce: int
    fee: int
    cost: int  # amount + fee: what the sender is debited
    size: int  # encoded bytes, what the cap counts
    time: int  # when it entered the pool
    seq: int  # arrival order, unique per entry


@dataclass(eq=False, slots=True)
class Account:
    address: bytes
    balance: int  # confirmed, as last read from account_lookup
    nonce: int  # confirmed
    pending_end: int  # first nonce >= self.nonce that has no tx here
    txs: dict[int, Entry] = field(default_factory=dict)
    nonces: list[int] = field(default_factory=list)  # sorted keys of txs
    total_cost: int = 0
    counted: int = 0  # this account's share of PoolIndex._n_pending


class PoolIndex:
    """Pooled entries by txid and by account, with the counts and heaps that follow
    them; ``account_lookup(address20) -> (balance, nonce)`` is the confirmed state."""

    def __init__(self, account_lookup: AccountLookup) -> None:
        self._lookup = account_lookup
        self._by_id: dict[bytes, Entry] = {}
        self._accounts: dict[bytes, Account] = {}
        self._bytes = 0
        self._n_pending = 0
        self._seq = 0
        # Lazy-deletion heaps: stale items are skipped when they surface, and the
        # heaps are rebuilt when stale items outnumber live ones.
        # (fee, -seq, txid) for each account's highest-nonce tx: eviction candidates.
        self._evict_heap: list[tuple[int, int, bytes]] = []
        # (time, seq, txid) for every entry: expiry order.
        self._expiry_heap: list[tuple[int, int, bytes]] = []
        self._jobs = JobIndex()  # pooled market actions by job (chain/mempool_jobs.py)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _recount(self, acc: Account) -> None:
        pending = acc.pending_end - acc.nonce if acc.txs else 0
        self._n_pending += pending - acc.counted
        acc.counted = pending

    def _is_tail_item(self, item: tuple[int, int, bytes]) -> bool:
        entry = self._by_id.get(item[2])
        if entry is None or entry.seq != -item[1]:
            return False
        return self._accounts[entry.sender].nonces[-1] == entry.nonce

    def _synced(self, address: bytes) -> Account:
        """The account with fresh confirmed state; a detached one if not pooled."""
        balance, nonce = self._lookup(address)
        acc = self._accounts.get(address)
        if acc is None:
            return Account(address=address, balance=balance, nonce=nonce, pending_end=nonce)
        if acc.balance != balance or acc.nonce != nonce:
            self._resync(acc, balance, nonce)
        return acc

    def _resync(self, acc: Account, balance: int, nonce: int) -> None:
        old_nonce, old_end = acc.nonce, acc.pending_end
        acc.balance, acc.nonce = balance, nonce
        nonces = acc.nonces
        cut = bisect.bisect_left(nonces, nonce)
        if cut:  # now too low: confirmed, or conflicting with what was confirmed
            for n in nonces[:cut]:
                entry = acc.txs.pop(n)
                del self._by_id[entry.txid]
                self._jobs.remove(entry.tx, entry.txid)
                acc.total_cost -= entry.cost
                self._bytes -= entry.size
            del nonces[:cut]
        # [old_nonce, old_end) was all present, and nothing at or above nonce went.
        end = old_end if old_nonce <= nonce <= old_end else nonce
        while end in acc.txs:
            end += 1
        acc.pending_end = end
        if not nonces:
            del self._accounts[acc.address]
        elif acc.total_cost > balance:
            self._trim(acc, 0, 0)
        self._recount(acc)

    def _insert(self, acc: Account, entry: Entry) -> None:
        self._accounts[entry.sender] = acc
        self._by_id[entry.txid] = entry
        self._jobs.add(entry.tx, entry.txid)
        nonces = acc.nonces
        if not nonces or entry.nonce > nonces[-1]:
            nonces.append(entry.nonce)
            heapq.heappush(self._evict_heap, (entry.fee, -entry.seq, entry.txid))
        else:
            bisect.insort(nonces, entry.nonce)
        acc.txs[entry.nonce] = entry
        acc.total_cost += entry.cost
        self._bytes += entry.size
        heapq.heappush(self._expiry_heap, (entry.time, entry.seq, entry.txid))
        if entry.nonce == acc.pending_end:  # extends the pending run, maybe fills a gap
            end = entry.nonce + 1
            while end in acc.txs:
                end += 1
            acc.pending_end = end
        self._recount(acc)

    def _remove(self, entry: Entry) -> None:
        acc = self._accounts[entry.sender]
        del self._by_id[entry.txid]
        self._jobs.remove(entry.tx, entry.txid)
        del acc.txs[entry.nonce]
        nonces = acc.nonces
        was_tail = nonces[-1] == entry.nonce
        if was_tail:
            nonces.pop()
        else:
            del nonces[bisect.bisect_left(nonces, entry.nonce)]
        acc.total_cost -= entry.cost
        self._bytes -= entry.size
        if acc.nonce <= entry.nonce < acc.pending_end:
            acc.pending_end = entry.nonce  # txs after it are queued now
        if not nonces:
            del self._accounts[entry.sender]
        elif was_tail:
            tail = acc.txs[nonces[-1]]
            heapq.heappush(self._evict_heap, (tail.fee, -tail.seq, tail.txid))
        self._recount(acc)

    def _remove_suffix(self, acc: Account, index: int) -> list[bytes]:
        """Remove the account's txs from position ``index`` in nonce order onward."""
        removed: list[bytes] = []
        for n in reversed(acc.nonces[index:]):
            entry = acc.txs[n]
            self._remove(entry)
            removed.append(entry.txid)
        return removed

    def _trim(self, acc: Account, index: int, cumulative: int) -> list[bytes]:
        """From position ``index`` (``cumulative`` = cost of the txs before it), drop the
        first tx that overdraws the balance and every tx after it."""
        nonces, txs, balance = acc.nonces, acc.txs, acc.balance
        for i in range(index, len(nonces)):
            cumulative += txs[nonces[i]].cost
            if cumulative > balance:
                return self._remove_suffix(acc, i)
        return []

    def _maybe_compact(self) -> None:
        limit = 2 * len(self._by_id) + 1024
        if len(self._evict_heap) > limit:
            self._evict_heap = [
                (e.fee, -e.seq, e.txid)
                for e in (a.txs[a.nonces[-1]] for a in self._accounts.values())
            ]
            heapq.heapify(self._evict_heap)
        if len(self._expiry_heap) > limit:
            self._expiry_heap = [(e.time, e.seq, e.txid) for e in self._by_id.values()]
            heapq.heapify(self._expiry_heap)
