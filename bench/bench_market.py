"""A buyer's product from `submit` to a verified C, through the Python API a buyer uses
(wallet/jobs.JobClient against real node processes), on one miner and split over three.

Each miner is a node process pinned to one core (a stand-in for one GPU per miner
process); the buyer's node does not mine. The baseline is the exact local product the
buyer would otherwise compute: float32 BLAS on all cores (exact for |entries| <= 64
and k <= 4096), measured in the same run. Printed (name=value), medians of ``--runs``:

  local_product_s        the baseline
  one_miner_s            submit -> verified C, one job on one miner
  one_miner_ratio        one_miner_s / local_product_s          (goal <= 3)
  three_miners_s         submit -> verified C, the product split into 3 jobs, 3 miners
  three_miners_ratio     three_miners_s / local_product_s
  three_over_one         three_miners_s / one_miner_s           (goal < 1)

    .venv/bin/python bench/bench_market.py [--shape 512 4096 4096] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.marketnet import buyer_client, start_net, wait, write_genesis  # noqa: E402

# Easy blocks (a few filler products each): confirmations take a fraction of a second.
BLOCK_WORK = 2**26
MARKET = {"claim_slack_s": 60, "challenge_s": 5, "reveal_s": 5}


def local_product(a: np.ndarray, b: np.ndarray) -> float:
    t = time.perf_counter()
    c = a.astype(np.float32) @ b.astype(np.float32)
    elapsed = time.perf_counter() - t
    assert c.shape == (a.shape[0], b.shape[1])
    return elapsed


def timed_products(miners: int, shape: tuple[int, int, int], runs: int, parts: int) -> list[float]:
    m, k, n = shape
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        genesis = write_genesis(root / "genesis.json", 1, BLOCK_WORK, MARKET)
        buyer, nodes = start_net(root, genesis, miners)
        try:
            for node in nodes:
                wait("a product", lambda nd=node: nd.call("getmininginfo")["localproducts"] > 0,
                     180)  # fmt: skip
            client = buyer_client(buyer)
            rng = np.random.default_rng(11)
            out = []
            for run in range(runs + 1):  # the first run warms the miners up: not counted
                a = rng.integers(-64, 64, (m, k), dtype=np.int8)
                b = rng.integers(-64, 64, (k, n), dtype=np.int8)
                t = time.perf_counter()
                pid = client.submit(a, b, bounty=m * n * k // 100, min_parts=parts,
                                    max_part_multiply_adds=2**40)  # fmt: skip
                client.wait(pid, timeout=600)
                res = client.result(pid)
                elapsed = time.perf_counter() - t
                if not res.verified:
                    raise RuntimeError(f"product not verified: {res.actions}")
                exact = a.astype(np.float32) @ b.astype(np.float32)
                assert np.array_equal(res.c, exact.astype(np.int64))
                print(f"# {miners} miner(s), run {run}: {elapsed:.2f} s", flush=True)
                if run:
                    out.append(elapsed)
            return out
        finally:
            for node in [buyer, *nodes]:
                node.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 4096, 4096], metavar=("M", "K", "N"))
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    m, k, n = args.shape
    rng = np.random.default_rng(1)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    local_product(a, b)  # warm-up
    local = statistics.median(local_product(a, b) for _ in range(5))
    one = statistics.median(timed_products(1, (m, k, n), args.runs, 1))
    three = statistics.median(timed_products(3, (m, k, n), args.runs, 3))
    print(f"shape={m}x{k}x{n}")
    print(f"local_product_s={local:.3f}")
    print(f"one_miner_s={one:.2f}")
    print(f"one_miner_ratio={one / local:.2f}")
    print(f"three_miners_s={three:.2f}")
    print(f"three_miners_ratio={three / local:.2f}")
    print(f"three_over_one={three / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
