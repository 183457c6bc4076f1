"""chain/mempool.py: admission rules, pending/queued, eviction, expiry, selection, reorgs.

Every transaction here is really signed (devnet keys) and goes through
check_transaction; chain state is a dict behind account_lookup.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from chain.address import address_from_pubkey
from chain.keys import PrivateKey, devnet_key
from chain.mempool import (
    DEFAULT_EXPIRY_S,
    DEFAULT_MAX_BYTES,
    MAX_NONCE_GAP,
    Mempool,
)
from chain.mempool_result import MempoolReject
from chain.tx import TX_FIXED_SIZE, Transaction, TxKind, TxReject, sign
from consensus.ints import U64_MAX

CHAIN_ID = 3
KEYS = [devnet_key(i) for i in range(8)]
ADDRS = [address_from_pubkey(k.public_key) for k in KEYS]
SINK = bytes.fromhex("ab" * 20)  # a recipient outside the test keys


class State:
    """Confirmed account state: address -> (balance, nonce)."""

    def __init__(self, funds: dict[bytes, int] | None = None) -> None:
        self.accounts: dict[bytes, tuple[int, int]] = {
            a: (bal, 0) for a, bal in (funds or {}).items()
        }
        self.lookups = 0

    def lookup(self, address: bytes) -> tuple[int, int]:
        self.lookups += 1
        return self.accounts.get(address, (0, 0))

    def apply(self, txs: list[Transaction], miner: bytes = SINK) -> None:
        """The state transition for transfers; asserts each tx is valid in order."""
        for tx in txs:
            bal, nonce = self.accounts.get(tx.sender, (0, 0))
            assert tx.nonce == nonce, f"nonce {tx.nonce} != {nonce}"
            assert bal >= tx.amount + tx.fee, "overdraft"
            self.accounts[tx.sender] = (bal - tx.amount - tx.fee, nonce + 1)
            rbal, rnonce = self.accounts.get(tx.recipient, (0, 0))
            self.accounts[tx.recipient] = (rbal + tx.amount, rnonce)
            mbal, mnonce = self.accounts.get(miner, (0, 0))
            self.accounts[miner] = (mbal + tx.fee, mnonce)


def mk(
    key: int | PrivateKey,
    nonce: int,
    fee: int = 10,
    amount: int = 100,
    to: bytes = SINK,
    payload: bytes = b"",
    chain_id: int = CHAIN_ID,
    kind: int = TxKind.TRANSFER,
) -> Transaction:
    k = KEYS[key] if isinstance(key, int) else key
    tx = Transaction(
        chain_id=chain_id,
        kind=kind,
        sender_pubkey=k.public_key,
        nonce=nonce,
        fee=fee,
        recipient=to,
        amount=amount,
        payload=payload,
    )
    return sign(tx, k)


def pool(state: State, **kw: int) -> Mempool:
    return Mempool(CHAIN_ID, state.lookup, **kw)


def rich(n: int = len(KEYS), balance: int = 10**9) -> State:
    return State({ADDRS[i]: balance for i in range(n)})


def ok(mp: Mempool, tx: Transaction, now: int = 0) -> None:
    r = mp.add(tx, now)
    assert r.ok, (r.reject, r.detail)
    mp._check_consistency()


def rejected(mp: Mempool, tx: Transaction, reason: MempoolReject, now: int = 0) -> None:
    r = mp.add(tx, now)
    assert r.reject is reason, (r.reject, r.detail)
    assert not r.ok and r.detail and r.txid == tx.txid
    mp._check_consistency()


# --- basics and queries ----------------------------------------------------------------


def test_defaults_are_named_constants() -> None:
    mp = Mempool(CHAIN_ID, rich().lookup)
    assert mp.max_bytes == DEFAULT_MAX_BYTES == 64 * 1024 * 1024
    assert mp.expiry_s == DEFAULT_EXPIRY_S == 14 * 24 * 3600
    assert mp.min_fee == 1 and mp.replace_bump_percent == 10
    assert MAX_NONCE_GAP == 1024


def test_accept_and_queries() -> None:
    state = rich()
    mp = pool(state)
    tx = mk(0, 0, payload=b"memo")
    r = mp.add(tx, 5)
    assert r.ok and r.pending and r.replaced is None and r.removed == () and r.txid == tx.txid
    assert tx.txid in mp and mp.get(tx.txid) == tx and mp.get(b"\0" * 32) is None
    assert len(mp) == 1 and mp.bytes_used == len(tx.to_bytes()) == TX_FIXED_SIZE + 4
    assert mp.txids() == [tx.txid]
    assert mp.is_pending(tx.txid)
    assert mp.pending_nonce(ADDRS[0]) == 1 and mp.pending_nonce(ADDRS[1]) == 0
    info = mp.info()
    assert info["size"] == 1 and info["bytes"] == mp.bytes_used and info["pending"] == 1
    assert info["queued"] == 0 and info["min_fee"] == 1 and info["min_relay_fee"] == 1
    assert info["usage"] == mp.bytes_used / DEFAULT_MAX_BYTES and info["accounts"] == 1


def test_constructor_rejects_nonsense() -> None:
    for kw in ({"max_bytes": 0}, {"expiry_s": 0}, {"min_fee": -1}, {"replace_bump_percent": -1}):
        with pytest.raises(ValueError):
            Mempool(CHAIN_ID, rich().lookup, **kw)


# --- every reject reason ---------------------------------------------------------------


def test_every_tx_reject_has_a_mempool_reason() -> None:
    for r in TxReject:
        assert MempoolReject(r.value).value == r.value


def _context_free_bad(reason: TxReject) -> Transaction:
    if reason is TxReject.UNKNOWN_KIND:
        return mk(0, 0, kind=99)
    if reason is TxReject.KIND_NOT_ACTIVE:
        return mk(0, 0, kind=TxKind.JOB_SUBMIT)
    if reason is TxReject.WRONG_CHAIN_ID:
        return mk(0, 0, chain_id=CHAIN_ID + 1)
    if reason is TxReject.JOB_RECIPIENT:
        return mk(0, 0, kind=TxKind.JOB_RECLAIM)
    if reason is TxReject.JOB_AMOUNT:
        return mk(0, 0, kind=TxKind.JOB_RECLAIM, to=bytes(20))
    if reason is TxReject.JOB_BAD_PAYLOAD:
        return mk(0, 0, kind=TxKind.JOB_RECLAIM, to=bytes(20), amount=0)
    if reason is TxReject.PAYLOAD_TOO_LARGE:
        return mk(0, 0, payload=b"x" * 1025)
    if reason is TxReject.ZERO_AMOUNT:
        return mk(0, 0, amount=0)
    if reason is TxReject.AMOUNT_OVERFLOW:
        return mk(0, 0, amount=U64_MAX, fee=1)
    if reason is TxReject.BAD_SIGNATURE:
        return dataclasses.replace(mk(0, 0), amount=101)  # signature is over amount=100
    raise AssertionError(f"no test case for {reason}")


@pytest.mark.parametrize("reason", list(TxReject))
def test_context_free_rejects_pass_through(
    reason: TxReject, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reason is TxReject.KIND_NOT_ACTIVE:  # every kind is active: narrow the set
        import chain.tx

        monkeypatch.setattr(chain.tx, "ACTIVE_KINDS", frozenset({TxKind.TRANSFER}))
    mp = pool(rich())
    rejected(mp, _context_free_bad(reason), MempoolReject(reason.value))
    assert len(mp) == 0


def test_already_known() -> None:
    mp = pool(rich())
    tx = mk(0, 0)
    ok(mp, tx)
    rejected(mp, tx, MempoolReject.ALREADY_KNOWN)


def test_nonce_too_low() -> None:
    state = rich()
    state.accounts[ADDRS[0]] = (10**9, 5)
    mp = pool(state)
    rejected(mp, mk(0, 4), MempoolReject.NONCE_TOO_LOW)
    ok(mp, mk(0, 5))


def test_nonce_gap_is_relative_to_the_next_expected_nonce() -> None:
    mp = pool(rich())
    rejected(mp, mk(0, MAX_NONCE_GAP + 1), MempoolReject.NONCE_GAP)
    ok(mp, mk(0, MAX_NONCE_GAP))  # exactly MAX_NONCE_GAP ahead is fine (queued)
    for n in range(3):
        ok(mp, mk(0, n))
    assert mp.pending_nonce(ADDRS[0]) == 3
    rejected(mp, mk(0, 3 + MAX_NONCE_GAP + 1), MempoolReject.NONCE_GAP)
    ok(mp, mk(0, 3 + MAX_NONCE_GAP))


def test_a_tx_too_far_ahead_is_refused_for_fee_or_balance_first() -> None:
    """NONCE_GAP is the last reason before the pool's room: a tx refused for it alone
    pays the minimum fee and is affordable, so a relay may hold it for later
    (p2p/orphans.py); a broke sender's or a low fee's is refused for that."""
    far = MAX_NONCE_GAP + 1
    mp = pool(State({ADDRS[0]: 10**9}), min_fee=5)
    rejected(mp, mk(1, far), MempoolReject.INSUFFICIENT_BALANCE)
    rejected(mp, mk(0, far, fee=4), MempoolReject.FEE_TOO_LOW)
    rejected(mp, mk(0, far, amount=10**9), MempoolReject.INSUFFICIENT_BALANCE)
    rejected(mp, mk(0, far), MempoolReject.NONCE_GAP)


def test_fee_below_min_fee() -> None:
    mp = pool(rich(), min_fee=5)
    rejected(mp, mk(0, 0, fee=4), MempoolReject.FEE_TOO_LOW)
    ok(mp, mk(0, 0, fee=5))


def test_insufficient_balance_counts_earlier_txs() -> None:
    state = State({ADDRS[0]: 330})
    mp = pool(state)
    rejected(mp, mk(0, 0, amount=321, fee=10), MempoolReject.INSUFFICIENT_BALANCE)
    ok(mp, mk(0, 0, amount=100, fee=10))
    ok(mp, mk(0, 1, amount=100, fee=10))
    rejected(mp, mk(0, 2, amount=101, fee=10), MempoolReject.INSUFFICIENT_BALANCE)
    ok(mp, mk(0, 2, amount=100, fee=10))  # exactly the balance
    rejected(mp, mk(0, 3, amount=1, fee=1), MempoolReject.INSUFFICIENT_BALANCE)
    # A queued tx is checked against the txs below it that are pooled (gap or not).
    rejected(mp, mk(0, 5, amount=1, fee=1), MempoolReject.INSUFFICIENT_BALANCE)
    rejected(mp, mk(1, 0), MempoolReject.INSUFFICIENT_BALANCE)  # unknown account: (0, 0)


def test_replacement_needs_the_bump() -> None:
    mp = pool(rich())
    first = mk(0, 0, fee=100)
    ok(mp, first)
    rejected(mp, mk(0, 0, fee=109, amount=7), MempoolReject.REPLACEMENT_FEE_TOO_LOW)
    assert first.txid in mp
    better = mk(0, 0, fee=110, amount=7)
    r = mp.add(better, 1)
    assert r.ok and r.replaced == first.txid and r.pending
    assert first.txid not in mp and better.txid in mp and len(mp) == 1
    assert mp.bytes_used == len(better.to_bytes())
    mp._check_consistency()


def test_replacement_bump_rounds_up_and_is_strict_for_tiny_fees() -> None:
    mp = pool(rich(), min_fee=0)
    ok(mp, mk(0, 0, fee=0))
    rejected(mp, mk(0, 0, fee=0, amount=5), MempoolReject.REPLACEMENT_FEE_TOO_LOW)
    ok(mp, mk(0, 0, fee=1, amount=5))  # 0 -> 1 is a raise
    rejected(mp, mk(0, 0, fee=1, amount=6), MempoolReject.REPLACEMENT_FEE_TOO_LOW)
    ok(mp, mk(0, 0, fee=2, amount=6))  # 1 * 1.1 rounds up to 2


def test_double_spend_is_a_replacement_attempt() -> None:
    mp = pool(rich())
    pay_a = mk(0, 0, fee=10, to=ADDRS[1])
    pay_b = mk(0, 0, fee=10, to=ADDRS[2])
    ok(mp, pay_a)
    rejected(mp, pay_b, MempoolReject.REPLACEMENT_FEE_TOO_LOW)
    assert pay_a.txid in mp and pay_b.txid not in mp and len(mp) == 1


def test_replacement_drops_later_txs_that_no_longer_fit() -> None:
    state = State({ADDRS[0]: 1000})
    mp = pool(state)
    txs = [mk(0, n, amount=190, fee=10) for n in range(5)]  # 5 x 200 = 1000
    for tx in txs:
        ok(mp, tx)
    bigger = mk(0, 1, amount=390, fee=20)  # +210: nonces 3 and 4 no longer fit
    r = mp.add(bigger, 1)
    assert r.ok and r.replaced == txs[1].txid
    assert set(r.removed) == {txs[3].txid, txs[4].txid}
    assert [t.txid for t in mp.select()] == [txs[0].txid, bigger.txid, txs[2].txid]
    assert mp.pending_nonce(ADDRS[0]) == 3
    mp._check_consistency()
    # A replacement that does not fit even without the later txs is refused outright.
    rejected(mp, mk(0, 1, amount=800, fee=30), MempoolReject.INSUFFICIENT_BALANCE)


def test_queued_set_is_capped() -> None:
    mp = pool(rich(), max_queued=2)
    ok(mp, mk(0, 0))
    ok(mp, mk(0, 2))
    ok(mp, mk(1, 3))
    rejected(mp, mk(2, 1), MempoolReject.POOL_FULL)  # would be a third queued tx
    ok(mp, mk(0, 2, fee=20))  # replacing a queued tx adds none
    ok(mp, mk(2, 0))  # pending txs are not limited by it
    ok(mp, mk(0, 1))  # a gap fill promotes nonce 2: room for one queued again
    ok(mp, mk(2, 5))
    assert mp.queued_count == 2 and mp.pending_count == 4
    default = Mempool(CHAIN_ID, rich().lookup)
    assert default.max_queued == 64 * 1024 * 1024 // 4 // 1173
    assert Mempool(CHAIN_ID, rich().lookup, max_bytes=1000).max_queued == MAX_NONCE_GAP


def test_pool_full_when_nothing_can_be_evicted() -> None:
    one = len(mk(0, 0).to_bytes())
    mp = pool(rich(), max_bytes=3 * one)
    for n in range(3):
        ok(mp, mk(0, n, fee=10))
    # The only candidates are the sender's own lower nonces: evicting them would
    # strand the newcomer, so there is no room at any fee.
    rejected(mp, mk(0, 3, fee=1000), MempoolReject.POOL_FULL)
    big = mk(1, 0, fee=1000, payload=b"x" * 1000)
    rejected(pool(rich(), max_bytes=len(big.to_bytes()) - 1), big, MempoolReject.POOL_FULL)


# --- pending vs queued -----------------------------------------------------------------


def test_gap_then_fill_promotes_queued() -> None:
    mp = pool(rich())
    t0, t1, t2, t3 = (mk(0, n) for n in range(4))
    ok(mp, t0)
    r2 = mp.add(t2, 0)
    r3 = mp.add(t3, 0)
    assert r2.ok and not r2.pending and r3.ok and not r3.pending
    assert mp.info()["pending"] == 1 and mp.info()["queued"] == 2
    assert not mp.is_pending(t2.txid) and mp.pending_nonce(ADDRS[0]) == 1
    assert mp.select() == [t0]  # queued txs are never selected
    r1 = mp.add(t1, 0)
    assert r1.ok and r1.pending
    assert mp.info()["pending"] == 4 and mp.info()["queued"] == 0
    assert mp.is_pending(t3.txid) and mp.pending_nonce(ADDRS[0]) == 4
    assert mp.select() == [t0, t1, t2, t3]
    mp._check_consistency()


def test_gap_fill_drops_later_txs_that_no_longer_fit() -> None:
    state = State({ADDRS[0]: 500})
    mp = pool(state)
    ok(mp, mk(0, 0, amount=90, fee=10))
    late = mk(0, 2, amount=290, fee=10)  # fits with nonce 0 alone: 100 + 300
    ok(mp, late)
    fill = mk(0, 1, amount=190, fee=10)  # 100 + 200 fits, but then nonce 2 does not
    r = mp.add(fill, 0)
    assert r.ok and r.removed == (late.txid,)
    assert mp.pending_nonce(ADDRS[0]) == 2
    mp._check_consistency()


# --- size cap and eviction -------------------------------------------------------------


def test_eviction_takes_lowest_fee_tail_first() -> None:
    one = len(mk(0, 0).to_bytes())
    mp = pool(rich(), max_bytes=4 * one)
    a0, a1 = mk(0, 0, fee=1), mk(0, 1, fee=50)  # A's cheapest tx is not its tail
    b0 = mk(1, 0, fee=20)
    c0 = mk(2, 0, fee=30)
    for tx in (a0, a1, b0, c0):
        ok(mp, tx)
    assert mp.info()["min_fee"] == 21  # a minimal tx must beat the cheapest tail (B)
    # Full. A newcomer paying 25 evicts B (20), the cheapest tail; A's fee-1 tx
    # is protected by its fee-50 child, and evicting a1 (50) would need fee > 50.
    d0 = mk(3, 0, fee=25)
    r = mp.add(d0, 0)
    assert r.ok and r.removed == (b0.txid,)
    mp._check_consistency()
    # Never evict to admit a lower (or equal) fee: the cheapest tail is now D (25).
    rejected(mp, mk(4, 0, fee=25), MempoolReject.FEE_TOO_LOW)
    rejected(mp, mk(4, 0, fee=3), MempoolReject.FEE_TOO_LOW)
    # Fee 60 beats D (25), then C (30), then a1 (50): with A's tail gone a0 (1)
    # becomes a candidate. A big newcomer needs room for three small txs.
    big = mk(5, 0, fee=60, payload=b"x" * (one + 1))  # 2 * one + 1 bytes
    r = mp.add(big, 0)
    assert r.ok and r.removed == (d0.txid, c0.txid, a1.txid)
    assert a0.txid in mp and mp.pending_nonce(ADDRS[0]) == 1
    mp._check_consistency()


def test_eviction_needing_many_txs_aborts_on_one_too_expensive() -> None:
    one = len(mk(0, 0).to_bytes())
    mp = pool(rich(), max_bytes=3 * one)
    cheap, mid, dear = mk(0, 0, fee=5), mk(1, 0, fee=10), mk(2, 0, fee=100)
    for tx in (cheap, mid, dear):
        ok(mp, tx)
    big = mk(3, 0, fee=50, payload=b"x" * (one + 1))  # 2 * one + 1 bytes: needs all three gone
    rejected(mp, big, MempoolReject.FEE_TOO_LOW)
    assert len(mp) == 3  # nothing was evicted by the failed attempt
    ok(mp, mk(3, 0, fee=11))  # a small one replaces just the cheapest
    assert cheap.txid not in mp and mid.txid in mp


def test_equal_fees_evict_the_latest_arrival() -> None:
    one = len(mk(0, 0).to_bytes())
    mp = pool(rich(), max_bytes=2 * one)
    early, late = mk(0, 0, fee=10), mk(1, 0, fee=10)
    ok(mp, early, now=1)
    ok(mp, late, now=2)
    r = mp.add(mk(2, 0, fee=11), 3)
    assert r.ok and r.removed == (late.txid,)


def test_newcomer_may_evict_its_own_later_nonces() -> None:
    one = len(mk(0, 0).to_bytes())
    mp = pool(rich(), max_bytes=3 * one)
    ok(mp, mk(0, 0, fee=50))
    queued = mk(0, 5, fee=1)
    ok(mp, queued)
    ok(mp, mk(1, 0, fee=50))
    r = mp.add(mk(0, 1, fee=10), 0)  # fills nothing, but may push out its own nonce 5
    assert r.ok and r.removed == (queued.txid,)
    mp._check_consistency()


def test_replacement_in_a_full_pool_reuses_the_old_space() -> None:
    one = len(mk(0, 0).to_bytes())
    mp = pool(rich(), max_bytes=2 * one)
    ok(mp, mk(0, 0, fee=100))
    ok(mp, mk(1, 0, fee=1))
    r = mp.add(mk(0, 0, fee=200), 0)
    assert r.ok and r.removed == () and len(mp) == 2


# --- expiry ----------------------------------------------------------------------------


def test_expiry_drops_old_txs_and_their_descendants() -> None:
    day = 24 * 3600
    mp = pool(rich(), expiry_s=14 * day)
    a0, a1 = mk(0, 0), mk(0, 1)
    b0 = mk(1, 0)
    ok(mp, a0, now=0)
    ok(mp, b0, now=1 * day)
    ok(mp, a1, now=10 * day)  # young, but it cannot run without a0
    assert mp.expire(14 * day - 1) == 0
    assert mp.expire(14 * day) == 2  # a0 is exactly 14 days old
    assert a0.txid not in mp and a1.txid not in mp and b0.txid in mp
    mp._check_consistency()
    assert mp.expire(15 * day) == 1 and len(mp) == 0
    assert mp.expire(100 * day) == 0


def test_replacement_restarts_the_expiry_clock() -> None:
    mp = pool(rich(), expiry_s=100)
    ok(mp, mk(0, 0, fee=10), now=0)
    ok(mp, mk(0, 0, fee=20), now=50)
    assert mp.expire(100) == 0 and len(mp) == 1
    assert mp.expire(150) == 1


# --- selection -------------------------------------------------------------------------


def test_select_prefers_fees_across_accounts_in_nonce_order() -> None:
    mp = pool(rich())
    a = [mk(0, 0, fee=5), mk(0, 1, fee=100)]  # the 100 needs the 5 first
    b = [mk(1, 0, fee=50), mk(1, 1, fee=40)]
    c = [mk(2, 0, fee=50)]  # same fee as b[0], arrives later
    for tx in b + c + list(reversed(a)):
        ok(mp, tx)
    assert mp.select() == [b[0], c[0], b[1], a[0], a[1]]
    assert mp.select(max_count=2) == [b[0], c[0]]
    assert mp.select(max_count=0) == []
    state = State()
    state.accounts = {ADDRS[i]: (10**9, 0) for i in range(3)}
    state.apply(mp.select())  # the template is valid in order


def test_select_respects_bytes_and_skips_an_account_that_does_not_fit() -> None:
    mp = pool(rich())
    big = mk(0, 0, fee=100, payload=b"x" * 1000)
    after_big = mk(0, 1, fee=100)
    small = mk(1, 0, fee=1)
    for tx in (big, after_big, small):
        ok(mp, tx)
    room = len(small.to_bytes()) + 10
    assert mp.select(max_bytes=room) == [small]  # big does not fit, so neither does its child
    assert mp.select(max_bytes=len(big.to_bytes())) == [big]


def test_select_rereads_state_and_respects_the_balance() -> None:
    state = State({ADDRS[0]: 1000, ADDRS[1]: 1000})
    mp = pool(state)
    a = [mk(0, n, amount=290, fee=10) for n in range(3)]
    b = [mk(1, 0, fee=1)]
    for tx in a + b:
        ok(mp, tx)
    # The chain moved on without telling the pool: A spent elsewhere and now holds 650.
    state.accounts[ADDRS[0]] = (650, 0)
    assert mp.select() == [a[0], a[1], b[0]]
    # A's nonce advanced past a[0] (another tx with nonce 0 confirmed).
    state.accounts[ADDRS[0]] = (1000, 1)
    assert mp.select() == [a[1], a[2], b[0]]


# --- block events ----------------------------------------------------------------------


def test_remove_confirmed_and_readd_round_trip() -> None:
    state = State({ADDRS[0]: 10_000, ADDRS[1]: 10_000})
    mp = pool(state)
    a = [mk(0, n, fee=20 + n) for n in range(4)]
    b = [mk(1, n, fee=10) for n in range(3)]
    for tx in a + b:
        ok(mp, tx)
    ok(mp, mk(1, 5))  # queued behind a gap
    block = mp.select(max_count=4)
    assert block == a
    snapshot = dict(state.accounts)
    state.apply(block)
    assert mp.remove_confirmed(block) == 4
    mp._check_consistency()
    assert all(tx.txid not in mp for tx in block) and len(mp) == 4
    assert mp.pending_nonce(ADDRS[0]) == 4
    # Reorg: the block is disconnected; its txs come back.
    state.accounts = snapshot
    assert mp.readd(list(reversed(block)), now=7) == 4
    mp._check_consistency()
    assert len(mp) == 8 and mp.select(max_count=4) == a
    assert mp.readd(block, now=8) == 0  # already there


def test_remove_confirmed_drops_conflicts_and_promotes() -> None:
    state = State({ADDRS[0]: 10_000})
    mp = pool(state)
    ours = mk(0, 0, fee=10, to=ADDRS[1])
    ok(mp, ours)
    ok(mp, mk(0, 2))
    ok(mp, mk(0, 3))
    assert mp.info()["queued"] == 2
    # A block confirms a *different* nonce-0 tx and a nonce-1 tx the pool never saw.
    theirs = [mk(0, 0, fee=10, to=ADDRS[2]), mk(0, 1, fee=10)]
    state.apply(theirs)
    assert mp.remove_confirmed(theirs) == 1  # ours: nonce now too low
    assert ours.txid not in mp
    assert mp.info()["pending"] == 2 and mp.info()["queued"] == 0
    assert mp.pending_nonce(ADDRS[0]) == 4
    mp._check_consistency()


def test_remove_confirmed_drops_what_the_new_balance_cannot_pay() -> None:
    state = State({ADDRS[0]: 1000})
    mp = pool(state)
    txs = [mk(0, n, amount=290, fee=10) for n in range(3)]
    for tx in txs:
        ok(mp, tx)
    # A conflicting, bigger nonce-0 spend confirms: 500 left, room for one more tx.
    other = mk(0, 0, amount=490, fee=10)
    state.apply([other])
    assert mp.remove_confirmed([other]) == 2  # txs[0] (conflict) and txs[2] (overdraft)
    assert [t.txid for t in mp.select()] == [txs[1].txid]
    mp._check_consistency()


def test_readd_skips_invalid_and_refreshes_recipients() -> None:
    state = State({ADDRS[0]: 1000})
    mp = pool(state)
    pay = mk(0, 0, amount=500, fee=10, to=ADDRS[1])
    state.apply([pay])  # confirmed before the pool saw it
    spend = mk(1, 0, amount=400, fee=10)  # B spends what A sent
    ok(mp, spend)
    assert mp.readd([mk(0, 0, fee=999)], now=0) == 0  # nonce too low now: skipped silently
    # Reorg: the block with `pay` is disconnected, and B's funds vanish with it.
    state.accounts = {ADDRS[0]: (1000, 0)}
    assert mp.readd([pay], now=1) == 1
    assert pay.txid in mp and spend.txid not in mp  # B was re-read as a recipient
    mp._check_consistency()


def test_revalidate_rereads_named_or_all_accounts() -> None:
    state = State({ADDRS[0]: 1000, ADDRS[1]: 1000})
    mp = pool(state)
    ok(mp, mk(0, 0, amount=500))
    ok(mp, mk(1, 0, amount=500))
    state.accounts = {}
    assert mp.revalidate([ADDRS[0], SINK]) == 1
    assert mp.revalidate() == 1 and len(mp) == 0
    mp._check_consistency()


def test_add_refreshes_a_stale_sender() -> None:
    state = State({ADDRS[0]: 100})
    mp = pool(state)
    ok(mp, mk(0, 0, amount=50, fee=10))
    rejected(mp, mk(0, 1, amount=100, fee=10), MempoolReject.INSUFFICIENT_BALANCE)
    state.accounts[ADDRS[0]] = (1000, 0)  # funds arrived in a block the pool did not see
    ok(mp, mk(0, 1, amount=100, fee=10))


# --- randomized invariants -------------------------------------------------------------


def test_random_operations_keep_invariants_and_valid_templates() -> None:
    rng = random.Random(1234)
    n_keys = 6
    state = State({ADDRS[i]: rng.randrange(2_000, 20_000) for i in range(n_keys)})
    one = len(mk(0, 0).to_bytes())
    mp = pool(state, max_bytes=40 * one, expiry_s=500)
    now = 0
    results: set[MempoolReject | None] = set()
    for _ in range(600):
        now += rng.randrange(0, 5)
        op = rng.random()
        if op < 0.8:
            i = rng.randrange(n_keys)
            base = mp.pending_nonce(ADDRS[i])
            nonce = max(0, base + rng.randrange(-2, 6))
            tx = mk(
                i,
                nonce,
                fee=rng.randrange(1, 60),
                amount=rng.randrange(1, 800),
                to=ADDRS[rng.randrange(n_keys)],
                payload=b"p" * rng.randrange(0, 3) * 40,
            )
            results.add(mp.add(tx, now).reject)
        elif op < 0.9:
            block = mp.select(max_bytes=rng.randrange(one, 12 * one), max_count=rng.randrange(8))
            snapshot = dict(state.accounts)
            state.apply(block)  # asserts the template is valid
            mp.remove_confirmed(block)
            mp._check_consistency()
            if block and rng.random() < 0.3:  # disconnect it again
                state.accounts = snapshot
                mp.readd(block, now)
        else:
            mp.expire(now)
        mp._check_consistency()
        assert not (set(mp.txids()) - {t.txid for t in mp.select()} - _queued_or_unfit(mp))
    assert None in results and len(results) >= 4


def _queued_or_unfit(mp: Mempool) -> set[bytes]:
    return {txid for txid in mp.txids() if not mp.is_pending(txid)}


def test_many_txs_are_fast() -> None:
    keys = [PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(50)]
    state = State({address_from_pubkey(k.public_key): 10**12 for k in keys})
    mp = pool(state)
    txs = [mk(k, n, fee=1 + (n * 7 + j) % 97) for j, k in enumerate(keys) for n in range(40)]
    for tx in txs:
        assert mp.add(tx, 0).ok
    assert len(mp) == 2000 and mp.info()["pending"] == 2000
    block = mp.select()
    assert len(block) == 2000
    state.apply(block[:1000])
    assert mp.remove_confirmed(block[:1000]) == 1000
    mp._check_consistency()


def test_job_index_follows_adds_replacements_and_removals() -> None:
    """job_actions(job) lists exactly the pooled txs acting on that job, whatever path
    took them out (confirmed, replaced by fee, resynced); the whole-pool check agrees."""
    from chain.job_payloads import JobCommit, JobSubmit
    from chain.job_record import ZERO_ADDRESS

    state = rich()
    mp = pool(state)
    job_a, job_b = bytes([1]) * 32, bytes([2]) * 32
    claim_a = mk(1, 0, amount=50, to=ZERO_ADDRESS, payload=job_a, kind=TxKind.JOB_CLAIM)
    commit = JobCommit(job_a, bytes(32), b"http://m").to_payload()
    commit_a = mk(1, 1, amount=0, to=ZERO_ADDRESS, payload=commit, kind=TxKind.JOB_COMMIT)
    claim_b = mk(2, 0, amount=50, to=ZERO_ADDRESS, payload=job_b, kind=TxKind.JOB_CLAIM)
    rival_a = mk(3, 0, amount=50, to=ZERO_ADDRESS, payload=job_a, kind=TxKind.JOB_CLAIM)
    shape = JobSubmit(64, 128, 64, bytes([7]) * 32, bytes([8]) * 32, 10**9).to_payload()
    submit = mk(5, 0, amount=1000, to=ZERO_ADDRESS, payload=shape, kind=TxKind.JOB_SUBMIT)
    for tx in (claim_a, commit_a, submit, claim_b, rival_a, mk(4, 0)):
        ok(mp, tx)
    assert mp.job_actions(job_a) == [claim_a, commit_a, rival_a]
    assert mp.job_actions(job_b) == [claim_b]
    assert mp.job_actions(bytes(32)) == []
    # the market's share of the pool, in arrival order: no plain transfer
    assert mp.market_txs() == [claim_a, commit_a, submit, claim_b, rival_a]
    # a fee bump replaces the rival claim with a plain transfer: the index drops it
    ok(mp, mk(3, 0, fee=100))
    assert mp.job_actions(job_a) == [claim_a, commit_a]
    ok(mp, mk(5, 0, fee=100))  # and the submit
    assert mp.market_txs() == [claim_a, commit_a, claim_b]
    mp._check_consistency()
    # the claim and commit confirm: gone from the index with the pool
    state.accounts[ADDRS[1]] = (10**9, 2)
    mp.remove_confirmed([claim_a, commit_a])
    mp._check_consistency()
    assert mp.job_actions(job_a) == []
    # a state nonce jump (resync) drops claim_b too
    state.accounts[ADDRS[2]] = (10**9, 1)
    mp.revalidate([ADDRS[2]])
    mp._check_consistency()
    assert mp.job_actions(job_b) == []
