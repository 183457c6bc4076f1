"""Chain benchmarks: block connect throughput and --reindex replay speed.

Prints name=value lines:
  connect_transfers_per_s   transfers/s through ChainState.process_block (header and seal
                            check, signatures, state transition, state root, one synced batch)
  sodium_verify_per_s       libsodium Ed25519 verifies/s on the same transactions (ceiling)
  connect_vs_sodium_ratio   the first over the second (goal >= 0.5, one core)
  connect_claims_per_s      JOB_CLAIMs/s through process_block, every open job claimed
                            twice in one block (one claim wins, the other fails outbid)
  connect_claims_vs_transfers_ratio  the first over connect_transfers_per_s
  lowest_claims_share       judging which claims stand (chain/jobs.lowest_claims: a job
                            read per claim, an account read per sender), timed as a
                            call of its own on the block's parent state, over that
                            block's connect time: an estimate of its share
  reindex_blocks_per_s      blocks/s replayed by chain.reindex.reindex from disk
Usage: python bench/bench_chain.py [--quick] [--txs N] [--blocks N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.chainstate import ChainState  # noqa: E402
from chain.keys import verify  # noqa: E402
from chain.reindex import reindex  # noqa: E402
from tests.chainutil import Clock, address_of, easy_devnet, mine_block, open_db, transfer  # noqa: E402

NET = easy_devnet()


def bench_connect(tmp: Path, n_txs: int) -> float:
    chain = ChainState(open_db(tmp / "connect", NET), NET, Clock(NET.genesis_time + 100))
    senders = 5
    txs = [
        transfer(NET, i % senders, i // senders, address_of(5 + i % 97), 1 + i % 1000, fee=1)
        for i in range(n_txs)
    ]
    block = mine_block(chain, txs)
    started = time.perf_counter()
    result = chain.process_block(block)
    elapsed = time.perf_counter() - started
    assert result.accepted, result.check
    started = time.perf_counter()
    for tx in txs:
        verify(tx.sender_pubkey, tx.sighash, tx.signature)
    sodium = n_txs / (time.perf_counter() - started)
    rate = n_txs / elapsed
    print(f"connect_block_txs={n_txs}")
    print(f"connect_seconds={elapsed:.4f}")
    print(f"connect_transfers_per_s={rate:.0f}")
    print(f"sodium_verify_per_s={sodium:.0f}")
    print(f"connect_vs_sodium_ratio={rate / sodium:.3f}")
    chain.db.close()
    return rate


def bench_connect_claims(tmp: Path, n_claims: int, transfers_per_s: float) -> None:
    """A block of ``n_claims`` JOB_CLAIMs racing two to a job (claimants: devnet keys
    1-4), over jobs a block before opened (buyer: devnet key 0)."""
    from chain.jobs import lowest_claims
    from chain.keys import devnet_key
    from tests.marketutil import operands
    from wallet.job_txs import claim_tx, submit_tx

    clock = Clock(NET.genesis_time + 100)
    chain = ChainState(open_db(tmp / "claims", NET), NET, clock)
    a, b = operands(64, 128, 64)
    roots = (b"\1" * 32, b"\2" * 32)  # the chain never reads the operands of a job
    bounty, expires = 10**6, chain.mtp_after(chain.tip) + 3600
    submits = [
        submit_tx(NET, devnet_key(0), i, a, b, bounty, expires, roots=roots)
        for i in range(n_claims // 2)
    ]
    clock.now += 1
    assert chain.process_block(mine_block(chain, submits)).accepted
    bond = NET.market.bond_for(bounty)
    nonces = [0] * 5
    claims = []
    for i, submit in enumerate(submits):
        for claimant in (1 + i % 4, 1 + (i + 1) % 4):
            claims.append(claim_tx(NET, devnet_key(claimant), nonces[claimant], submit.txid, bond))
            nonces[claimant] += 1
    clock.now += 1
    block = mine_block(chain, claims)
    mtp = chain.mtp_after(chain.tip)
    started = time.perf_counter()
    lowest = lowest_claims(chain.state_get, block.txs, mtp, NET.market)
    judged = time.perf_counter() - started
    assert len(lowest) == len(submits)
    started = time.perf_counter()
    result = chain.process_block(block)
    elapsed = time.perf_counter() - started
    assert result.accepted, result.check
    rate = len(claims) / elapsed
    print(f"connect_block_claims={len(claims)}")
    print(f"connect_claims_per_s={rate:.0f}")
    print(f"connect_claims_vs_transfers_ratio={rate / transfers_per_s:.3f}")
    print(f"lowest_claims_seconds={judged:.4f}")
    print(f"lowest_claims_share={judged / elapsed:.3f}")
    chain.db.close()


def bench_reindex(tmp: Path, n_blocks: int) -> None:
    clock = Clock(NET.genesis_time + 100)
    chain = ChainState(open_db(tmp / "reindex", NET), NET, clock)
    for i in range(n_blocks):
        clock.now += 1
        txs = [transfer(NET, 0, i // 10, address_of(1), 1, fee=1)] if i % 10 == 0 else []
        result = chain.process_block(mine_block(chain, txs))
        assert result.accepted, result.check
    tip = chain.tip.hash
    db = chain.db
    started = time.perf_counter()
    rebuilt = reindex(db, NET)
    elapsed = time.perf_counter() - started
    assert rebuilt.tip.hash == tip
    print(f"reindex_blocks={n_blocks}")
    print(f"reindex_seconds={elapsed:.2f}")
    print(f"reindex_blocks_per_s={n_blocks / elapsed:.0f}")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--txs", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=None)
    args = parser.parse_args()
    n_txs = args.txs or (500 if args.quick else 5000)
    n_blocks = args.blocks or (300 if args.quick else 10_000)
    print(f"cpu_count={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        transfers_per_s = bench_connect(Path(tmp), n_txs)
        bench_connect_claims(Path(tmp), min(n_txs, 2000), transfers_per_s)
        bench_reindex(Path(tmp), n_blocks)


if __name__ == "__main__":
    main()
