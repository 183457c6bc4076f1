"""The in-node market miner keeps its bond when its C is gone (in process: a real chain
and a real blob store). A committed job whose C is not in the store, found when the
job is taken back after a restart or when a probe comes, is computed again by the
mining loop as its own work (the commit stands), stored if its root is the committed
one, and the probe answered; a C computed again under another root is never served.
A job that opens again while the miner holds its C is claimed again with the same root,
and C's age in the store refreshed, unless C was deleted meanwhile."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from chain.address import address_from_pubkey
from chain.chainstate import ChainState
from chain.job_record import JobStatus, get_job
from chain.keys import devnet_key
from chain.state import Account, account_key
from chain.tx import Transaction
from chain.txkind import TxKind
from compute.blobs import BlobStore
from consensus.result import result_root
from node.market_claims import MarketSettings
from node.market_miner import MarketMiner
from node.market_operands import Held
from tests.chainutil import mine_block
from tests.marketutil import market_devnet, new_chain, operands
from wallet.job_txs import claim_tx, commit_tx, probe_tx, submit_tx

NET = market_devnet()
BUYER_KEY, MINER_KEY = devnet_key(0), devnet_key(1)
MINER = address_from_pubkey(MINER_KEY.public_key)
BOUNTY = 1_000_000


def _nonce(chain: ChainState, key: Any) -> int:
    address = address_from_pubkey(key.public_key)
    return Account.from_bytes(chain.state_get(account_key(address))).nonce


def _mine(chain: ChainState, txs: list[Transaction]) -> None:
    chain.clock.now = max(chain.clock.now, chain.tip_header.timestamp) + 1  # type: ignore[attr-defined]
    result = chain.process_block(mine_block(chain, txs))
    assert result.accepted and result.connected, result.check
    for tx in txs:
        assert chain.db.get_tx_failure(tx.txid) == "", (tx.kind, chain.db.get_tx_failure(tx.txid))


class _Node:
    """What the miner sends, mined into the next block by ``mine``."""

    def __init__(self, chain: ChainState) -> None:
        self.chain = chain
        self.sent: list[Transaction] = []

    def submit(self, tx: Transaction) -> None:
        self.sent.append(tx)

    def pending_nonce(self, address: bytes) -> int:
        return _nonce(self.chain, MINER_KEY) + len(self.sent)

    def mine(self, *more: Transaction) -> list[Transaction]:
        sent, self.sent = self.sent, []
        _mine(self.chain, [*sent, *more])
        return sent


def _miner(chain: ChainState, node: _Node, store: BlobStore) -> MarketMiner:
    return MarketMiner(chain, store, MarketSettings(key=MINER_KEY), node.submit, node.pending_nonce)


def _submitted(tmp_path: Path) -> tuple[ChainState, BlobStore, np.ndarray, np.ndarray, bytes]:
    """A job on chain whose operands are in the miner's store (its URL serves nothing)."""
    chain = new_chain(tmp_path / "chain", NET)
    a, b = operands(64, 128, 64, seed=7)
    expires = chain.mtp_after(chain.tip) + 500
    submit = submit_tx(NET, BUYER_KEY, 0, a, b, BOUNTY, expires, url="http://127.0.0.1:9")
    _mine(chain, [submit])
    store = BlobStore(tmp_path / "blobs")
    job = get_job(chain.state_get, submit.txid)
    assert job is not None and job.status is JobStatus.OPEN
    assert store.put("a", a) == job.h_a and store.put("bt", np.ascontiguousarray(b.T)) == job.h_b
    return chain, store, a, b, submit.txid


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _probe(node: _Node, job_id: bytes, row: int) -> None:
    chain = node.chain
    node.mine(probe_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), job_id, row, 0, 500))
    job = get_job(chain.state_get, job_id)
    assert job is not None and job.probe_open and job.probe_row == row


def test_a_committed_c_lost_from_the_store_is_computed_again_and_the_probe_answered(
    tmp_path: Path,
) -> None:  # fmt: skip
    chain, store, a, b, job_id = _submitted(tmp_path)
    node = _Node(chain)
    c = _exact(a, b)
    bond = NET.market.bond_for(BOUNTY)
    node.mine(claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, bond))
    root = result_root(c)
    node.mine(commit_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, root, "http://m"))
    assert (get_job(chain.state_get, job_id) or None).status is JobStatus.COMMITTED  # type: ignore[union-attr]
    # a restart that finds C gone: the take-back hands the job to the mining loop, not
    # named (its commit is on chain), and nothing is committed again
    miner = _miner(chain, node, store)
    work = asyncio.run(miner.next_work())
    assert work is not None and work[0].job_id == job_id and work[0].named is False
    assert np.array_equal(work[1], a) and np.array_equal(work[2], b)
    assert miner.deliver(job_id, c) is None and node.sent == []
    assert store.find(root) is not None and not miner.held[job_id].restore
    assert asyncio.run(miner.next_work()) is None  # done: nothing more to compute
    # probed: answered from the stored C
    _probe(node, job_id, 3)
    asyncio.run(miner.next_work())
    assert [tx.kind for tx in node.mine()] == [TxKind.JOB_REVEAL]
    assert not get_job(chain.state_get, job_id).probe_open  # type: ignore[union-attr]
    # C lost again, found by the next probe: computed again (counted as restored, not
    # as a product computed twice) and the probe answered at once
    store.flush()  # (written behind: on disk now)
    (npy,) = store.dir.glob(f"{root.hex()}.c.npy")
    npy.write_bytes(b"")  # cut short by a crash: there, but not readable
    _probe(node, job_id, 5)
    work = asyncio.run(miner.next_work())
    assert work is not None and work[0].job_id == job_id and work[0].named is False
    assert node.sent == []
    miner.deliver(job_id, c)
    assert store.get(root) is not None  # written anew, not taken for the damaged file
    assert [tx.kind for tx in node.mine()] == [TxKind.JOB_REVEAL]
    assert not get_job(chain.state_get, job_id).probe_open  # type: ignore[union-attr]
    assert miner.counters.recomputed == 0 and miner.counters.restored == 2
    assert miner.counters.commits == 0
    # lost again, and what comes back is not the committed C: not stored, not served,
    # and not computed yet again
    store.delete(root)
    _probe(node, job_id, 7)
    work = asyncio.run(miner.next_work())
    assert work is not None and work[0].job_id == job_id
    wrong = c.copy()
    wrong[0, 0] += 1
    miner.deliver(job_id, wrong)
    held = miner.held[job_id]
    assert held.unservable and store.find(root) is None and node.sent == []
    assert asyncio.run(miner.next_work()) is None and node.sent == []


def test_a_job_that_opens_again_is_claimed_again_with_the_c_in_hand(tmp_path: Path) -> None:
    chain, store, a, b, job_id = _submitted(tmp_path)
    node = _Node(chain)
    miner = _miner(chain, node, store)
    c = _exact(a, b)
    root = store.put("c", c)
    store.flush()
    old = time.time() - 3600
    for path in store.dir.glob(f"{root.hex()}.*"):
        os.utime(path, (old, old))
    job = get_job(chain.state_get, job_id)
    assert job is not None
    held = Held(job, time.monotonic(), b"", computed=True, result_root=root)
    assert miner._claim_again(job_id, held, job)  # noqa: SLF001
    assert [tx.kind for tx in node.sent] == [TxKind.JOB_CLAIM, TxKind.JOB_COMMIT]
    assert held.claim_txid == node.sent[0].txid
    # C's age refreshed (the retention reads its .npy file's): kept as if just stored
    (npy,) = store.dir.glob(f"{root.hex()}.*.npy")
    assert npy.stat().st_mtime > old + 3000
    node.mine()
    job = get_job(chain.state_get, job_id)
    assert job is not None and job.status is JobStatus.COMMITTED and job.result_root == root
    assert job.claimant == MINER
    # a C the store no longer holds is never committed again (it would cost the bond)
    other_chain, other_store, *_, other_id = _submitted(tmp_path / "other")
    other = _Node(other_chain)
    again = _miner(other_chain, other, other_store)
    job = get_job(other_chain.state_get, other_id)
    assert job is not None
    held = Held(job, time.monotonic(), b"", computed=True, result_root=root)  # not stored here
    assert not again._claim_again(other_id, held, job) and other.sent == []  # noqa: SLF001


def test_a_claimed_job_whose_commit_waits_in_the_pool_is_not_computed_again(
    tmp_path: Path,
) -> None:  # fmt: skip
    """After a restart whose pool came back (mempool.dat) with our commit in it, the
    take-back holds the job as committed (its C served from the store; computed again
    only if the store lost it), not as claimed: a second commit would fail on chain."""
    chain, store, a, b, job_id = _submitted(tmp_path)
    node = _Node(chain)
    c = _exact(a, b)
    root = store.put("c", c)
    node.mine(claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id,
                       NET.market.bond_for(BOUNTY)))  # fmt: skip
    commit = commit_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, root, "http://m")
    pool = {job_id: [commit]}
    miner = MarketMiner(chain, store, MarketSettings(key=MINER_KEY), node.submit,
                        node.pending_nonce, job_actions=lambda j: pool.get(j, []))  # fmt: skip
    assert asyncio.run(miner.next_work()) is None and node.sent == []
    assert miner.held[job_id].computed and miner.held[job_id].result_root == root
    # the same with C gone from the store (the commit still pooled): computed again as
    # a restore, stored under the pooled commit's root, served, and not committed again
    store.delete(root)
    again = MarketMiner(chain, store, MarketSettings(key=MINER_KEY), node.submit,
                        node.pending_nonce, job_actions=lambda j: pool.get(j, []))  # fmt: skip
    work = asyncio.run(again.next_work())
    assert work is not None and work[0].job_id == job_id and work[0].named is False
    again.deliver(job_id, c)
    held = again.held[job_id]
    assert store.find(root) is not None and not held.unservable and not held.restore
    assert node.sent == [] and again.counters.commits == 0 and again.counters.restored == 1
    node.mine(commit)
    assert (get_job(chain.state_get, job_id) or None).status is JobStatus.COMMITTED  # type: ignore[union-attr]
