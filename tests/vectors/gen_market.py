"""Generate tests/vectors/market.json, the frozen compute-market vectors.

Run from anywhere: ``python tests/vectors/gen_market.py`` rewrites the file;
``--check`` exits non-zero if the committed file differs from what the code produces.
tests/test_market_vectors.py recomputes every vector. The vectors hold: each job
payload's encoding and its signed transaction, a job record's encoding, and a scripted
run of blocks through ``apply_block`` (submit, a claim race, commit, probe, reveal,
timers, payment; a vanished claimant; a refunded probe) with each block's state
changes, failures and state root. Regenerate only for a deliberate, documented change
of the market's rules (docs/PROTOCOL.md, "Compute market"). Bytes are lowercase hex.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from chain.address import address_from_pubkey  # noqa: E402
from chain.header import HEADER_VERSION, Header  # noqa: E402
from chain.job_record import Job, JobStatus  # noqa: E402
from chain.keys import devnet_key  # noqa: E402
from chain.network import load_network  # noqa: E402
from chain.state import genesis_state  # noqa: E402
from chain.state_tree import StateTree  # noqa: E402
from chain.transition import apply_block  # noqa: E402
from consensus.result import RESULT_CHUNK, result_proof, result_root  # noqa: E402
from wallet.job_txs import (  # noqa: E402
    build_challenge,
    challenge_tx,
    claim_tx,
    commit_tx,
    probe_tx,
    reclaim_tx,
    reveal_tx,
    submit_tx,
)

OUT = Path(__file__).with_name("market.json")
NET = load_network("devnet")
KEYS = [devnet_key(i) for i in range(3)]
ADDR = [address_from_pubkey(k.public_key) for k in KEYS]
T0 = 1_800_000_000  # median time past of the first scripted block
FEE = 1000


def _operands(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(-64, 64, (8, 64), dtype=np.int8)
    b = rng.integers(-64, 64, (64, 72), dtype=np.int8)
    return a, b, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _header(height: int, miner: bytes) -> Header:
    return Header(
        version=HEADER_VERSION, height=height, parent=bytes(32), timestamp=T0 + height,
        target=2**240, tx_root=bytes(32), state_root=bytes(32), miner=miner,
        job_id=bytes(32), m=64, k=128, n=64, h_a=bytes(32), h_b=bytes(32),
    )  # fmt: skip


def _payloads() -> list[dict[str, str]]:
    a, b, c = _operands(1)
    job = bytes(range(32))
    data, cb, rb = result_proof(c, 3, RESULT_CHUNK)
    txs = [
        ("submit", submit_tx(NET, KEYS[0], 0, a, b, 1_000_000, T0 + 600, "http://a:1", FEE)),
        ("claim", claim_tx(NET, KEYS[1], 0, job, 100_000, FEE)),
        ("commit", commit_tx(NET, KEYS[1], 1, job, result_root(c), "http://m:2", FEE)),
        ("challenge", challenge_tx(NET, KEYS[2], 0, job, build_challenge(a, b, c, 3, 70), FEE)),
        ("reclaim", reclaim_tx(NET, KEYS[0], 1, job, FEE)),
        ("probe", probe_tx(NET, KEYS[0], 2, job, 3, 1, 1000, FEE)),
        ("reveal", reveal_tx(NET, KEYS[1], 2, job, data, tuple(cb), tuple(rb), FEE)),
    ]
    return [
        {"name": name, "kind": tx.kind, "payload": tx.payload.hex(), "tx": tx.to_bytes().hex(),
         "txid": tx.txid.hex()}
        for name, tx in txs
    ]  # fmt: skip


def _record() -> dict[str, str]:
    job = Job(
        buyer=ADDR[0], m=8, k=64, n=72, h_a=b"\x01" * 32, h_b=b"\x02" * 32, bounty=1_000_000,
        expires=T0 + 600, submitted=7, status=JobStatus.COMMITTED, claimant=ADDR[1],
        bond=100_000, claim_deadline=T0 + 30, claim_min_height=10, result_root=b"\x03" * 32,
        committed_height=9, window_end=T0 + 40, window_min_height=11, probe_by=ADDR[0],
        probe_deposit=1000, probe_row=3, probe_chunk=1, probe_deadline=T0 + 20,
        probe_min_height=12, wake_height=14, claims=1, data_url=b"http://a:1",
        result_url=b"http://m:2",
    )  # fmt: skip
    return {"job": repr(job), "encoding": job.to_bytes().hex()}


def _script() -> list[tuple[int, bytes, list[Any]]]:
    """(mtp step, miner, txs) per block: the scripted market run."""
    a1, b1, c1 = _operands(1)
    a2, b2, c2 = _operands(2)
    s1 = submit_tx(NET, KEYS[0], 0, a1, b1, 1_000_000, T0 + 600, "http://a:1", FEE)
    s2 = submit_tx(NET, KEYS[0], 1, a2, b2, 2_000_000, T0 + 600, "http://a:1", FEE)
    data, cb, rb = result_proof(c1, 3, RESULT_CHUNK)
    bond1, bond2 = NET.market.bond_for(1_000_000), NET.market.bond_for(2_000_000)
    return [
        (1, ADDR[2], [s1, s2]),
        # a claim race: key 2's claim of job 1 comes first in the block and fails as
        # outbid, key 1's (the lower txid) wins it after; key 2 takes job 2
        (1, ADDR[2], [claim_tx(NET, KEYS[2], 0, s1.txid, bond1, FEE),
                      claim_tx(NET, KEYS[2], 1, s2.txid, bond2, FEE),
                      claim_tx(NET, KEYS[1], 0, s1.txid, bond1, FEE)]),
        (1, ADDR[2], [commit_tx(NET, KEYS[1], 1, s1.txid, result_root(c1), "http://m:2", FEE)]),
        (1, ADDR[2], [probe_tx(NET, KEYS[0], 2, s1.txid, 3, 1, 1000, FEE)]),
        (1, ADDR[2], [reveal_tx(NET, KEYS[1], 2, s1.txid, data, tuple(cb), tuple(rb), FEE)]),
        # time passes: job 2's claimant vanished (bond to the buyer, job reopens),
        # job 1's window closes (paid)
        *[(1, ADDR[2], []) for _ in range(40)],
    ]  # fmt: skip


def _run() -> list[dict[str, Any]]:
    state = dict(genesis_state(NET.allocations))
    state = {k: v for k, v in state.items() if v is not None}
    tree = StateTree.build(state.items())
    mtp = T0
    out = []
    for height, (step, miner, txs) in enumerate(_script(), start=1):
        mtp += step
        failed: dict[bytes, str] = {}
        changes = apply_block(state.get, _header(height, miner), txs, NET, mtp, failed)
        tree.apply(changes)
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        rows = [[k.hex(), None if v is None else v.hex()] for k, v in sorted(changes.items())]
        out.append({
            "height": height, "mtp": mtp, "miner": miner.hex(),
            "txs": [tx.to_bytes().hex() for tx in txs],
            "changes": rows,
            "failed": {txid.hex(): why for txid, why in sorted(failed.items())},
            "state_root": tree.root.hex(),
        })  # fmt: skip
    return out


def build() -> dict[str, Any]:
    blocks = _run()
    return {
        "network": "devnet",
        "market": dataclasses.asdict(NET.market),
        "payloads": _payloads(),
        "record": _record(),
        "blocks": blocks,
        "final_jobs": _final_jobs(blocks),
    }


def _final_jobs(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """Each job's status after the run (read back from the last change of its record)."""
    out: dict[str, str] = {}
    for block in blocks:
        for key, value in block["changes"]:
            if key.startswith(b"J".hex()) and value is not None:
                out[key[2:]] = Job.from_bytes(bytes.fromhex(value)).status.name.lower()
    return out


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date with the code", file=sys.stderr)
            return 1
        print(f"{OUT} matches")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
