"""The transaction memory pool: unconfirmed transactions waiting for a block.

Modelled on go-ethereum's txpool (per-account nonce lists split into *pending*, the
executable run of contiguous nonces starting at the account's state nonce, and
*queued*, everything after a gap) with Bitcoin Core's pool policy: a size cap with
lowest-fee eviction, expiry after two weeks, and replacement by fee bump.

State. ``account_lookup(address20) -> (balance, nonce)`` gives the *confirmed* state
at the current tip. The pool caches it per account and refreshes it from the lookup
whenever it touches the account (every ``add``, the senders and recipients of
``remove_confirmed`` and ``readd``, and ``revalidate``); ``select`` re-reads it for
every account it draws from, so a block template is valid against the tip even if an
event was missed.

Invariants, for every account in the pool:

* all its txs have ``nonce >= state nonce``;
* the cumulative cost (``amount + fee``) of its txs in nonce order never exceeds its
  cached balance, so whatever prefix a miner takes is affordable. The check is
  conservative for self-transfers (it does not credit the amount back).

Fees are absolute (not per byte), the same unit as ``Transaction.fee``.

Everything is a pure function of the calls made: no I/O, no clock (callers pass
``now`` as integer seconds), no threads. Each ``add`` costs a signature check plus
O(log n) heap work (O(k) in the sender's own tx count when a tx is inserted below the
sender's highest nonce, which is rare).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from chain.block import MAX_BLOCK_TX_BYTES, MAX_BLOCK_TXS
from chain.mempool_index import Account, AccountLookup, Entry, PoolIndex
from chain.mempool_jobs import JobIndex
from chain.mempool_result import FROM_TX_REJECT, MempoolReject, MempoolResult, reject_result
from chain.tx import (
    MAX_PLAIN_TX_SIZE,
    TX_FIXED_SIZE,
    Transaction,
    check_transaction,
)
from chain.txkind import TxKind

# Bitcoin Core's -maxmempool default is 300 MB of *memory*; ours caps encoded bytes.
# 64 MiB is 16 full blocks of backlog (~450k minimal transfers).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Bitcoin Core's -mempoolexpiry default (336 hours).
DEFAULT_EXPIRY_S = 14 * 24 * 60 * 60
DEFAULT_MIN_FEE = 1
# go-ethereum's default price bump for a replacement.
DEFAULT_REPLACE_BUMP_PERCENT = 10
# A tx may be at most this far ahead of the sender's next expected nonce (the state
# nonce plus its pending txs). Bounds what one account can park in the queued set. It
# must cover an honest sender's burst arriving out of order over several relay paths:
# a buyer sends a product's submits at once (up to 256 parts, products back to back).
# At 64, a burst of 100 submits reached a miner's node 65 ahead through another peer:
# rejected, remembered as rejected (never fetched again: the sender's later txs queued
# there for good) and charged to the relaying peers as waste, until the node
# discouraged its peers on 127.0.0.1 (seen in bench_usefulness: 3 runs of 9).
MAX_NONCE_GAP = 1024
# Queued txs cannot be mined, so they never pay their fees: without a bound, high-fee
# queued txs could fill the pool for free and price real ones out (go-ethereum caps
# its queue for the same reason). By default the queued set holds at most what fits in
# this share of ``max_bytes`` at the largest tx size, and never fewer than one full
# nonce window.
QUEUED_SHARE_PERCENT = 25


class Mempool(PoolIndex):
    """Unconfirmed transactions, per account pending/queued, capped by encoded bytes."""

    def __init__(
        self,
        chain_id: int,
        account_lookup: AccountLookup,
        max_bytes: int = DEFAULT_MAX_BYTES,
        expiry_s: int = DEFAULT_EXPIRY_S,
        min_fee: int = DEFAULT_MIN_FEE,
        replace_bump_percent: int = DEFAULT_REPLACE_BUMP_PERCENT,
        max_queued: int | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if expiry_s <= 0:
            raise ValueError("expiry_s must be positive")
        if min_fee < 0 or replace_bump_percent < 0:
            raise ValueError("min_fee and replace_bump_percent must be >= 0")
        self.chain_id = chain_id
        self.max_bytes = max_bytes
        self.expiry_s = expiry_s
        self.min_fee = min_fee
        self.replace_bump_percent = replace_bump_percent
        if max_queued is None:
            max_queued = max(
                MAX_NONCE_GAP, max_bytes * QUEUED_SHARE_PERCENT // 100 // MAX_PLAIN_TX_SIZE
            )
        self.max_queued = max_queued
        super().__init__(account_lookup)

    # --- queries -------------------------------------------------------------------

    def __contains__(self, txid: object) -> bool:
        return txid in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, txid: bytes) -> Transaction | None:
        entry = self._by_id.get(txid)
        return None if entry is None else entry.tx

    @property
    def bytes_used(self) -> int:
        """Sum of the encoded sizes of the pooled txs (what ``max_bytes`` caps)."""
        return self._bytes

    @property
    def pending_count(self) -> int:
        return self._n_pending

    @property
    def queued_count(self) -> int:
        return len(self._by_id) - self._n_pending

    def txids(self) -> list[bytes]:
        return list(self._by_id)

    def entries(self) -> list[tuple[int, Transaction]]:
        """(time it entered, tx) of every pooled tx in arrival order: offered again in
        this order (node/mempool_file.py), each sender's txs come in the order the pool
        took them."""
        return [(e.time, e.tx) for e in sorted(self._by_id.values(), key=lambda e: e.seq)]

    def job_actions(self, job_id: bytes) -> list[Transaction]:
        """The pooled transactions that act on ``job_id`` (JOB_CLAIM, JOB_COMMIT,
        JOB_CHALLENGE, JOB_RECLAIM, JOB_PROBE, JOB_REVEAL; their payload starts with
        the job id), in arrival order."""
        entries = [self._by_id[t] for t in self._jobs.txids(job_id)]
        return [e.tx for e in sorted(entries, key=lambda e: e.seq)]

    def market_txs(self, queued_submits: bool = True) -> list[Transaction]:
        """The pooled job submits and market actions, in arrival order: the market's
        share of the pool, without a walk of every transaction. Without
        ``queued_submits``, a submit behind a nonce gap of its sender is left out: it
        cannot reach a block before the gap is filled, so a claim of its job would
        fail (what miners read to find jobs)."""
        entries = sorted((self._by_id[t] for t in self._jobs.market_txids()), key=lambda e: e.seq)
        if queued_submits:
            return [e.tx for e in entries]
        return [
            e.tx for e in entries
            if e.tx.kind != TxKind.JOB_SUBMIT or e.nonce < self._accounts[e.sender].pending_end
        ]  # fmt: skip

    def is_pending(self, txid: bytes) -> bool:
        """True if the tx is in the pool and executable now (not behind a nonce gap)."""
        entry = self._by_id.get(txid)
        if entry is None:
            return False
        acc = self._accounts[entry.sender]
        return acc.nonce <= entry.nonce < acc.pending_end

    def pending_nonce(self, address: bytes, confirmed: int | None = None) -> int:
        """The nonce a wallet should use next: confirmed nonce plus the pending run.
        ``confirmed``: the account's nonce at the tip, when the caller has just read it
        (saves the lookup)."""
        nonce = self._lookup(address)[1] if confirmed is None else confirmed
        acc = self._accounts.get(address)
        if acc is None:
            return nonce
        if acc.nonce == nonce:
            return acc.pending_end
        n = nonce  # the cache is stale; answer from the fresh nonce without mutating
        while n in acc.txs:
            n += 1
        return n

    def current_min_fee(self) -> int:
        """Fee a minimal-size tx needs to enter now (Bitcoin's ``mempoolminfee``)."""
        if self._bytes + TX_FIXED_SIZE <= self.max_bytes:
            return self.min_fee
        heap = self._evict_heap
        while heap and not self._is_tail_item(heap[0]):
            heapq.heappop(heap)
        if not heap:
            return self.min_fee
        return max(self.min_fee, heap[0][0] + 1)

    def info(self) -> dict[str, Any]:
        """Pool summary for getmempoolinfo.

        ``size`` txs, ``bytes`` encoded, ``usage`` fraction of ``max_bytes`` in use,
        ``min_fee`` what a minimal tx must pay to enter now, ``min_relay_fee`` the
        configured floor, ``pending``/``queued`` executable vs gapped tx counts.
        """
        size = len(self._by_id)
        return {
            "size": size,
            "bytes": self._bytes,
            "usage": self._bytes / self.max_bytes,
            "max_bytes": self.max_bytes,
            "min_fee": self.current_min_fee(),
            "min_relay_fee": self.min_fee,
            "pending": self._n_pending,
            "queued": size - self._n_pending,
            "max_queued": self.max_queued,
            "accounts": len(self._accounts),
        }

    # --- admission -----------------------------------------------------------------

    def add(self, tx: Transaction, now: int) -> MempoolResult:
        """Admit ``tx`` (received at time ``now``) or name why not. Never raises for a
        peer's bad transaction."""
        txid = tx.txid
        if txid in self._by_id:
            return reject_result(MempoolReject.ALREADY_KNOWN, "already in the pool", txid)
        check = check_transaction(tx, self.chain_id)
        if check.reject is not None:
            return reject_result(FROM_TX_REJECT[check.reject], check.detail, txid)
        result = self._admit(tx, txid, now)
        self._maybe_compact()
        return result

    def _admit(self, tx: Transaction, txid: bytes, now: int) -> MempoolResult:
        sender = tx.sender
        acc = self._synced(sender)
        nonce = tx.nonce
        if nonce < acc.nonce:
            return reject_result(
                MempoolReject.NONCE_TOO_LOW, f"nonce {nonce}, account nonce is {acc.nonce}", txid
            )
        if tx.fee < self.min_fee:
            return reject_result(
                MempoolReject.FEE_TOO_LOW,
                f"fee {tx.fee} is below the minimum {self.min_fee}: pay at least that (--fee)",
                txid,
            )
        old = acc.txs.get(nonce)
        if old is not None:
            bump = self.replace_bump_percent
            if tx.fee <= old.fee or tx.fee * 100 < old.fee * (100 + bump):
                return reject_result(
                    MempoolReject.REPLACEMENT_FEE_TOO_LOW,
                    f"replaces a tx paying {old.fee}: needs at least {bump}% more",
                    txid,
                )
        cost = tx.amount + tx.fee
        before = self._cost_before(acc, nonce)
        if before + cost > acc.balance:
            return reject_result(
                MempoolReject.INSUFFICIENT_BALANCE,
                f"balance {acc.balance} < {before} (earlier pooled txs) + {cost}",
                txid,
            )
        # Last of the checks that do not depend on the pool's room: a tx refused only for
        # being too far ahead is fee-paying and affordable, and a peer's relay may hold it
        # until the gap fills (p2p/orphans.py).
        if nonce > acc.pending_end + MAX_NONCE_GAP:
            return reject_result(
                MempoolReject.NONCE_GAP,
                f"nonce {nonce} is more than {MAX_NONCE_GAP} past the next expected "
                f"nonce {acc.pending_end}",
                txid,
            )
        if old is None and nonce > acc.pending_end and self.queued_count >= self.max_queued:
            return reject_result(
                MempoolReject.POOL_FULL,
                f"nonce {nonce} would be queued and the queued set is full ({self.max_queued} txs)",
                txid,
            )
        size = len(tx.to_bytes())
        evict: list[Entry] = []
        excess = self._bytes + size - (old.size if old is not None else 0) - self.max_bytes
        if excess > 0:
            if size > self.max_bytes:
                return reject_result(MempoolReject.POOL_FULL, "tx is larger than the pool", txid)
            plan = self._plan_eviction(excess, tx.fee, sender, nonce)
            if not isinstance(plan, list):
                return reject_result(plan[0], plan[1], txid)
            evict = plan

        removed: list[bytes] = []
        if old is not None:
            self._remove(old)
        for victim in evict:
            if self._by_id.get(victim.txid) is victim:
                self._remove(victim)
                removed.append(victim.txid)
        entry = Entry(tx, txid, sender, nonce, tx.fee, cost, size, now, self._next_seq())
        self._insert(acc, entry)
        # Txs after it were affordable without it (a gap fill) or with the old one (a
        # replacement); drop those that no longer fit.
        index = bisect.bisect_left(acc.nonces, nonce)
        removed += self._trim(acc, index, before)
        return MempoolResult(
            txid=txid,
            pending=nonce < acc.pending_end,
            replaced=old.txid if old is not None else None,
            removed=tuple(removed),
        )

    def pending_spend(self, address: bytes) -> int:
        """What the account's pending txs (the run from its confirmed nonce, executable
        now) debit it: amounts, bounties, bonds and fees. Queued txs are not counted."""
        acc = self._accounts.get(address)
        if acc is None:
            return 0
        return self._cost_before(acc, acc.pending_end)

    def _cost_before(self, acc: Account, nonce: int) -> int:
        """Total cost of the account's pooled txs with a lower nonce."""
        nonces = acc.nonces
        if not nonces or nonce > nonces[-1]:
            return acc.total_cost
        index = bisect.bisect_left(nonces, nonce)
        txs = acc.txs
        if index <= len(nonces) // 2:
            return sum(txs[n].cost for n in nonces[:index])
        return acc.total_cost - sum(txs[n].cost for n in nonces[index:])

    def _plan_eviction(
        self, excess: int, fee: int, sender: bytes, nonce: int
    ) -> list[Entry] | tuple[MempoolReject, str]:
        """The txs to evict to free ``excess`` bytes for a tx paying ``fee``, or why not.

        Candidates are each account's highest-nonce tx (so no gap opens), cheapest
        first (latest arrival first among equal fees); once a tail is planned its
        predecessor becomes a candidate. Every evicted tx must pay strictly less than
        the newcomer. The newcomer's own sender's txs at or below its nonce are never
        candidates (that would cut the ground from under it).
        """
        heap = self._evict_heap
        popped: list[tuple[int, int, bytes]] = []
        side: list[tuple[int, int, bytes]] = []
        taken: dict[bytes, int] = {}
        planned: set[bytes] = set()
        plan: list[Entry] = []
        freed = 0
        try:
            while freed < excess:
                while heap and not self._is_tail_item(heap[0]):
                    heapq.heappop(heap)
                if heap and (not side or heap[0] < side[0]):
                    item = heapq.heappop(heap)
                    popped.append(item)
                elif side:
                    item = heapq.heappop(side)
                else:
                    return (MempoolReject.POOL_FULL, "the pool is full and nothing can be evicted")
                victim = self._by_id[item[2]]
                if victim.txid in planned:
                    continue
                if victim.sender == sender and victim.nonce <= nonce:
                    continue
                if victim.fee >= fee:
                    return (
                        MempoolReject.FEE_TOO_LOW,
                        f"the pool is full: fee {fee} must exceed {victim.fee}, the lowest "
                        f"fee it would evict",
                    )
                plan.append(victim)
                planned.add(victim.txid)
                freed += victim.size
                acc = self._accounts[victim.sender]
                count = taken.get(victim.sender, 0) + 1
                taken[victim.sender] = count
                if count < len(acc.nonces):
                    prev = acc.txs[acc.nonces[-1 - count]]
                    heapq.heappush(side, (prev.fee, -prev.seq, prev.txid))
            return plan
        finally:
            for item in popped:  # the ones actually evicted go stale, and are skipped
                heapq.heappush(heap, item)

    # --- removal: expiry, block events ---------------------------------------------

    def expire(self, now: int) -> int:
        """Drop txs that entered at or before ``now - expiry_s``, with every later-nonce
        tx of the same sender (they could not execute without it). Returns the count."""
        heap = self._expiry_heap
        cutoff = now - self.expiry_s
        count = 0
        while heap and heap[0][0] <= cutoff:
            _, seq, txid = heapq.heappop(heap)
            entry = self._by_id.get(txid)
            if entry is None or entry.seq != seq:
                continue
            acc = self._accounts[entry.sender]
            count += len(self._remove_suffix(acc, bisect.bisect_left(acc.nonces, entry.nonce)))
        self._maybe_compact()
        return count

    def remove_confirmed(self, txs: Sequence[Transaction]) -> int:
        """After a block connects: drop its txs, the senders' txs whose nonce is now
        too low (conflicts) or that no longer fit the balance, and promote queued txs
        whose gap the block filled. Returns how many txs left the pool."""
        before = len(self._by_id)
        touched: dict[bytes, None] = {}
        for tx in txs:
            touched[tx.sender] = None
            touched[tx.recipient] = None
        for address in touched:
            if address in self._accounts:
                self._synced(address)
        for tx in txs:  # normally already gone as nonce-too-low
            entry = self._by_id.get(tx.txid)
            if entry is not None:
                self._remove(entry)
        self._maybe_compact()
        return before - len(self._by_id)

    def readd(self, txs: Iterable[Transaction], now: int) -> int:
        """During a reorg: offer the txs of disconnected blocks again. Those still valid
        against the current tip come back; the others are silently skipped. The txs
        passed block validation, so the context-free checks (signature) are not
        repeated. Returns how many were re-added.

        A disconnect also lowers balances the pool cannot see here (recipients are
        re-read; the disconnected blocks' miners are not): call ``revalidate`` with
        those addresses, or with none for all.
        """
        ordered = sorted(txs, key=lambda t: t.nonce)  # per sender, lowest nonce first
        count = 0
        for tx in ordered:
            txid = tx.txid
            if txid in self._by_id:
                continue
            if self._admit(tx, txid, now).ok:
                count += 1
        for address in {tx.recipient for tx in ordered}:
            if address in self._accounts:
                self._synced(address)
        self._maybe_compact()
        return count

    def revalidate(self, addresses: Iterable[bytes] | None = None) -> int:
        """Re-read the state of ``addresses`` (default: every account in the pool) and
        drop what no longer fits. Returns how many txs left the pool."""
        before = len(self._by_id)
        targets = list(self._accounts) if addresses is None else list(addresses)
        for address in targets:
            if address in self._accounts:
                self._synced(address)
        self._maybe_compact()
        return before - len(self._by_id)

    # --- block templates -----------------------------------------------------------

    def select(
        self, max_bytes: int = MAX_BLOCK_TX_BYTES, max_count: int = MAX_BLOCK_TXS
    ) -> list[Transaction]:
        """Txs for a block template, valid in this order against the tip's state.

        A heap over account heads, highest fee first (earliest arrival on ties); taking
        a head exposes the sender's next nonce. Only executable txs, each affordable
        after the sender's earlier ones (balance and nonce re-read from the lookup). A
        head that does not fit the remaining bytes retires its account.
        """
        heads: list[tuple[int, int, Entry]] = []
        budget: dict[bytes, int] = {}
        for address, acc in self._accounts.items():
            if acc.pending_end == acc.nonce:
                continue  # nothing executable
            balance, nonce = self._lookup(address)
            entry = acc.txs.get(nonce)
            if entry is None:
                continue
            heads.append((-entry.fee, entry.seq, entry))
            budget[address] = balance
        heapq.heapify(heads)
        out: list[Transaction] = []
        room = max_bytes
        while heads and len(out) < max_count and room >= TX_FIXED_SIZE:
            _, _, entry = heapq.heappop(heads)
            if entry.size > room:
                continue
            left = budget[entry.sender] - entry.cost
            if left < 0:
                continue
            budget[entry.sender] = left
            out.append(entry.tx)
            room -= entry.size
            nxt = self._accounts[entry.sender].txs.get(entry.nonce + 1)
            if nxt is not None:
                heapq.heappush(heads, (-nxt.fee, nxt.seq, nxt))
        return out

    # --- internals -----------------------------------------------------------------

    def _check_consistency(self) -> None:
        """Assert the internal invariants (for tests; O(n))."""
        total = 0
        n_pending = 0
        for address, acc in self._accounts.items():
            assert acc.txs, "empty account kept"
            assert acc.nonces == sorted(acc.txs), "nonce index out of sync"
            assert acc.nonces[0] >= acc.nonce, "tx below the state nonce"
            end = acc.nonce
            while end in acc.txs:
                end += 1
            assert acc.pending_end == end, "pending_end wrong"
            assert acc.counted == end - acc.nonce
            n_pending += acc.counted
            cumulative = 0
            for n in acc.nonces:
                entry = acc.txs[n]
                assert entry.sender == address and entry.nonce == n
                assert self._by_id[entry.txid] is entry
                cumulative += entry.cost
                total += entry.size
            assert cumulative == acc.total_cost and cumulative <= acc.balance, "overdraft"
        assert len(self._by_id) == sum(len(a.txs) for a in self._accounts.values())
        pooled = ((e.tx, e.txid) for e in self._by_id.values())
        assert JobIndex.rebuilt(pooled).same_as(self._jobs), "job index out of sync"
        assert total == self._bytes and self._bytes <= self.max_bytes
        assert n_pending == self._n_pending
