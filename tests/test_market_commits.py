"""The in-node market miner's commits and how its jobs end (in process: a real chain and
a real blob store; the miner's transactions go to a list that stands for the pool and
is mined into the next block). Once our claim lapsed, no commit is sent (it would fail
and cost its fee too) and the lost bond is said and counted, once; a claim that lapses
with no product is said the same way, not as a claim lost to a rival; a commit of ours
that left the pool while the claim holds is sent again, and confirms."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from chain.chainstate import ChainState
from chain.job_record import JobStatus, get_job
from chain.jobs import claim_lapsed
from chain.keys import devnet_key
from chain.txkind import TxKind
from consensus.result import result_root
from node.market_claims import MarketSettings
from node.market_commits import RESEND_COMMIT_S
from node.market_miner import MarketMiner
from tests.test_market_restore import (
    BOUNTY,
    MINER_KEY,
    NET,
    _exact,
    _mine,
    _Node,
    _nonce,
    _submitted,
)
from wallet.job_txs import claim_tx, commit_tx


def _claimed(tmp_path: Path) -> tuple[ChainState, _Node, MarketMiner, bytes, np.ndarray]:
    """A job claimed on chain by the miner's key, taken back and handed to the mining
    loop by a miner whose pool is ``node.sent``; returns C as well."""
    chain, store, a, b, job_id = _submitted(tmp_path)
    node = _Node(chain)
    bond = NET.market.bond_for(BOUNTY)
    node.mine(claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, bond))
    miner = MarketMiner(chain, store, MarketSettings(key=MINER_KEY), node.submit,
                        node.pending_nonce, pool_txs=lambda: list(node.sent))  # fmt: skip
    work = asyncio.run(miner.next_work())
    assert work is not None and work[0].job_id == job_id and work[0].named is True
    return chain, node, miner, job_id, _exact(a, b)


def _until_lapsed(chain: ChainState, node: _Node, job_id: bytes) -> None:
    """Empty blocks until the next one would reopen the job (the claim lapsed)."""
    for _ in range(100):
        job = get_job(chain.state_get, job_id)
        assert job is not None and job.status is JobStatus.CLAIMED
        if claim_lapsed(job, chain.clock_after(chain.tip)):
            return
        node.mine()
    raise AssertionError("the claim never lapsed")


def test_no_commit_once_the_claim_lapsed_and_c_claimed_again_once_the_job_reopens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    chain, node, miner, job_id, c = _claimed(tmp_path)
    _until_lapsed(chain, node, job_id)  # (the job is still ours on the tip)
    with caplog.at_level(logging.WARNING, logger="pouw.market"):
        assert miner.deliver(job_id, c) is None
        miner.on_tip()  # the same tip: nothing more said
    assert node.sent == [] and miner.counters.commits == 0
    assert miner.counters.bonds_lost == 1 and miner.held[job_id].ended
    assert caplog.text.count("claim lapsed before our commit was sent") == 1, caplog.text
    assert miner.store.find(result_root(c)) is not None  # C kept for a claim again
    node.mine()  # the block that reopens the job: forgotten, nothing more counted
    assert get_job(chain.state_get, job_id).status is JobStatus.OPEN  # type: ignore[union-attr]
    miner.on_tip()
    assert job_id not in miner.held
    assert miner.counters.bonds_lost == 1 and miner.counters.claims_lost == 0
    # the claim rounds claim it again with the C in hand, and commit that C
    miner._claim_more()  # noqa: SLF001
    assert [tx.kind for tx in node.sent] == [TxKind.JOB_CLAIM, TxKind.JOB_COMMIT]
    node.mine()
    job = get_job(chain.state_get, job_id)
    assert job is not None and job.status is JobStatus.COMMITTED
    assert job.result_root == result_root(c) and miner.counters.recomputed == 0


def test_a_claim_that_lapses_unproduced_is_a_lost_bond_not_a_lost_race(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    """Nor computed meanwhile; and a restart in the lapse window takes it back as lost."""
    chain, node, miner, job_id, c = _claimed(tmp_path)
    _until_lapsed(chain, node, job_id)
    with caplog.at_level(logging.WARNING, logger="pouw.market"):
        miner.on_tip()
        assert asyncio.run(miner.next_work()) is None  # too late to compute it
        restarted = MarketMiner(chain, miner.store, MarketSettings(key=MINER_KEY), node.submit,
                                node.pending_nonce)  # fmt: skip
        assert asyncio.run(restarted.next_work()) is None
        restarted.on_tip()
        node.mine()  # reopened
        miner.on_tip()
        miner.on_tip()
    assert miner.counters.bonds_lost == 1 and miner.counters.claims_lost == 0
    assert restarted.counters.bonds_lost == 1 and miner.counters.products == 0
    assert caplog.text.count("lapsed with no commit of ours") == 2, caplog.text  # one each


def test_a_lapsed_claim_whose_job_another_miner_claimed_is_a_lost_bond(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    """The job reopened and a rival claimed it before our product ended: no commit (it
    would fail), the bond said lost, not a claim lost to a race."""
    chain, node, miner, job_id, c = _claimed(tmp_path)
    _until_lapsed(chain, node, job_id)
    node.mine()  # reopened
    rival = devnet_key(2)
    node.mine(claim_tx(NET, rival, _nonce(chain, rival), job_id, NET.market.bond_for(BOUNTY)))
    assert get_job(chain.state_get, job_id).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="pouw.market"):
        assert miner.deliver(job_id, c) is None
        miner.on_tip()
    assert node.sent == [] and job_id not in miner.held
    assert miner.counters.bonds_lost == 1 and miner.counters.claims_lost == 0
    assert caplog.text.count("lapsed with no commit of ours") == 1, caplog.text


def test_a_commit_gone_from_the_pool_is_sent_again(tmp_path: Path) -> None:
    chain, node, miner, job_id, c = _claimed(tmp_path)
    first = miner.deliver(job_id, c)
    assert first is not None and node.sent == [first]
    node.sent.clear()  # evicted from the pool (or lost with it) before a block took it
    node.mine()
    held = miner.held[job_id]
    held.commit_sent_at = time.monotonic()  # (however slow the machine is)
    miner.on_tip()
    assert node.sent == []  # sent RESEND_COMMIT_S ago at most: not yet
    held.commit_sent_at -= RESEND_COMMIT_S
    miner.on_tip()
    (again,) = node.sent
    assert again.kind == TxKind.JOB_COMMIT and again.txid == first.txid  # the same nonce
    assert held.commit_txid == again.txid and miner.counters.commits == 2
    miner.on_tip()  # in the pool now: not sent a third time
    assert node.sent == [again]
    node.mine()
    job = get_job(chain.state_get, job_id)
    assert job is not None and job.status is JobStatus.COMMITTED
    assert job.result_root == result_root(c) and miner.counters.bonds_lost == 0


def test_a_commit_gone_with_its_c_computes_c_again(tmp_path: Path) -> None:
    chain, node, miner, job_id, c = _claimed(tmp_path)
    assert miner.deliver(job_id, c) is not None
    node.sent.clear()
    miner.store.delete(result_root(c))
    node.mine()
    held = miner.held[job_id]
    held.commit_sent_at -= RESEND_COMMIT_S
    miner.on_tip()
    assert node.sent == [] and not held.computed
    work = asyncio.run(miner.next_work())
    assert work is not None and work[0].job_id == job_id
    assert miner.deliver(job_id, c) is not None
    assert miner.counters.restored == 1 and miner.counters.recomputed == 0
    _mine(chain, node.sent)
    assert get_job(chain.state_get, job_id).status is JobStatus.COMMITTED  # type: ignore[union-attr]


def test_a_commit_of_ours_we_no_longer_knew_of_is_no_lapse(tmp_path: Path) -> None:
    """Our commit reached the chain from elsewhere (a pool lost with a crash, kept by a
    peer) while C was computed again: no second commit, no bond said lost."""
    chain, node, miner, job_id, c = _claimed(tmp_path)
    root = miner.store.put("c", c)  # stored before the crash that lost the pool
    node.mine(commit_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, root, "http://m"))
    assert asyncio.run(miner.next_work()) is None  # not computed again
    miner.on_tip()  # taken as computed, from the chain's root
    held = miner.held[job_id]
    assert held.computed and held.result_root == root and not held.ended
    assert miner.deliver(job_id, c) is None and node.sent == []  # (a product in flight)
    assert miner.counters.bonds_lost == 0 and miner.counters.commits == 0


def test_a_lapse_the_miner_never_saw_is_a_lost_bond(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    """The miner's own claim confirmed and lapsed while it saw no tip (a node suspended
    or cut off): the bond is said lost once, not called a claim lost to a rival, and
    the product that ends then is not committed."""
    chain, store, a, b, job_id = _submitted(tmp_path)
    node = _Node(chain)
    miner = MarketMiner(chain, store, MarketSettings(key=MINER_KEY), node.submit,
                        node.pending_nonce, pool_txs=lambda: list(node.sent))  # fmt: skip
    miner._claim_more()  # noqa: SLF001
    assert [tx.kind for tx in node.sent] == [TxKind.JOB_CLAIM]
    for _ in range(100):  # claimed, lapsed and reopened: no tip reaches the miner
        node.mine()
        if get_job(chain.state_get, job_id).status is JobStatus.OPEN:  # type: ignore[union-attr]
            break
    assert get_job(chain.state_get, job_id).claims == 1  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="pouw.market"):
        assert miner.deliver(job_id, _exact(a, b)) is None
        miner.on_tip()
    assert node.sent == [] and job_id not in miner.held
    assert miner.counters.bonds_lost == 1 and miner.counters.claims_lost == 0
    assert caplog.text.count("lapsed with no commit of ours") == 1, caplog.text


def test_a_reorg_that_brings_a_lapsed_claim_back_counts_its_bond_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    """A lapse counted, then the tip goes back to a block where our claim still holds
    (the bond is ours again: uncounted, said), then the claim lapses again there: one
    bond lost in all, as on the chain."""
    chain, node, miner, job_id, c = _claimed(tmp_path)
    _until_lapsed(chain, node, job_id)
    with caplog.at_level(logging.WARNING, logger="pouw.market"):
        miner.on_tip()
        assert miner.counters.bonds_lost == 1 and miner.held[job_id].ended
        chain._disconnect_tip()  # noqa: SLF001 - the tip before: the claim not lapsed
        job = get_job(chain.state_get, job_id)
        assert job is not None and not claim_lapsed(job, chain.clock_after(chain.tip))
        miner.on_tip()
        assert miner.counters.bonds_lost == 0 and not miner.held[job_id].ended
        assert "a reorg brought our claim back" in caplog.text, caplog.text
        work = asyncio.run(miner.next_work())  # its operands again (the lapse dropped them)
        assert work is not None and work[0].job_id == job_id
        node.mine()  # lapsed again on this branch
        miner.on_tip()
        miner.on_tip()
    assert miner.counters.bonds_lost == 1 and miner.held[job_id].ended
    assert node.sent == [] and miner.counters.commits == 0


def test_a_reorg_onto_a_branch_where_our_commit_made_it_uncounts_the_lapse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    """Our commit missed the blocks of one branch and the claim lapsed there (counted);
    a reorg brings a branch where the commit made it in time: the bond is not lost."""
    chain, node, miner, job_id, c = _claimed(tmp_path)
    claimed_at = chain.tip
    commit = miner.deliver(job_id, c)
    assert commit is not None and node.sent == [commit]
    node.sent.clear()  # not in this branch's blocks
    _until_lapsed(chain, node, job_id)
    with caplog.at_level(logging.WARNING, logger="pouw.market"):
        miner.on_tip()
        assert miner.counters.bonds_lost == 1 and miner.held[job_id].ended
        while chain.tip.height > claimed_at.height:  # the other branch, from the claim
            chain._disconnect_tip()  # noqa: SLF001
        node.mine(commit)
        job = get_job(chain.state_get, job_id)
        assert job is not None and job.status is JobStatus.COMMITTED, job
        miner.on_tip()
    assert miner.counters.bonds_lost == 0 and not miner.held[job_id].ended
    assert "a reorg brought our claim back" in caplog.text, caplog.text
