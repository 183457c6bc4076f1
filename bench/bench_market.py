"""A buyer's product from `submit` to a verified C, through the Python API a buyer uses
(wallet/jobs.JobClient against real node processes), on one miner and split over three.

Each miner is a node process pinned to one core (a stand-in for one GPU per miner
process); the buyer's node does not mine. The baseline is the exact local product the
buyer would otherwise compute: float32 BLAS on all cores (exact for |entries| <= 64
and k <= 4096), measured right before every timed product (median of 3), so that both
see the machine as it was; the timed product starts 0.3 s later, once OpenBLAS's
threads have stopped spinning. Printed (name=value), medians of ``--runs``:

  local_product_s        the baseline
  one_miner_s            submit -> verified C, one job on one miner
  one_miner_ratio        one_miner_s / local_product_s          (goal <= 3)
  one_miner_all_cores_s  the same with the miner free to use every core, as the
                         baseline is (its ratio: one_miner_all_cores_ratio)
  three_miners_s         submit -> verified C, the product split into 3 jobs, 3 miners
  three_miners_ratio     three_miners_s / local_product_s
  three_over_one         three_miners_s / one_miner_s           (goal < 1)
  standalone_miner_s     submit -> verified C, one job on one standalone `pouw miner`
                         (one NumPy worker pinned to one core, its own node beside it
                         connected to the buyer's; ratio: standalone_miner_ratio)
  *_submit_s, *_wait_s, *_fetch_s, *_check_s   where the time went: hashing and
                         uploading A and B and sending the submits; until every part's
                         commit is in the buyer's pool (waitforjob); downloading C and
                         Freivalds' check of what was left (wait() starts each part's
                         download and check as soon as that part is ready, and the A
                         and B side of the check is done while the miners compute)

    .venv/bin/python bench/bench_market.py [--shape 512 4096 4096] [--runs 3] [--only NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.marketnet import (  # noqa: E402
    StandaloneMiner,
    buyer_client,
    start_net,
    wait,
    write_genesis,
)

# Easy blocks (a few filler products each): confirmations take a fraction of a second.
BLOCK_WORK = 2**26
MARKET = {"claim_slack_s": 60, "challenge_s": 5, "reveal_s": 5}
# OpenBLAS worker threads spin for about 0.1 s after each call (2^28 cycles) before
# they sleep: the timed product starts after that, not on cores the baseline still holds.
BLAS_SETTLE_S = 0.3


def local_product(a: np.ndarray, b: np.ndarray) -> float:
    t = time.perf_counter()
    c = a.astype(np.float32) @ b.astype(np.float32)
    elapsed = time.perf_counter() - t
    assert c.shape == (a.shape[0], b.shape[1])
    return elapsed


def timed_products(
    miners: int, shape: tuple[int, int, int], runs: int, parts: int, pin: bool = True,
    standalone: bool = False,
) -> list[dict[str, float]]:  # fmt: skip
    m, k, n = shape
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        genesis = write_genesis(root / "genesis.json", 1, BLOCK_WORK, MARKET)
        if standalone:
            buyer, nodes = start_net(root, genesis, 0)
            pool = StandaloneMiner(root, genesis, buyer, core=1)
            stop: list[Any] = [pool, buyer]
            wait("blocks", lambda: buyer.call("getblockcount") >= 3, 180)
        else:
            buyer, nodes = start_net(root, genesis, miners, pin)
            stop = [buyer, *nodes]
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
                baseline = statistics.median(local_product(a, b) for _ in range(3))
                time.sleep(BLAS_SETTLE_S)  # the baseline's BLAS threads stop spinning first
                t = time.perf_counter()
                pid = client.submit(a, b, bounty=m * n * k // 100, min_parts=parts,
                                    max_part_multiply_adds=2**40)  # fmt: skip
                submitted = time.perf_counter()
                client.wait(pid, timeout=600)
                delivered = time.perf_counter()
                res = client.result(pid)
                elapsed = time.perf_counter() - t
                if not res.verified:
                    raise RuntimeError(f"product not verified: {res.actions}")
                exact = a.astype(np.float32) @ b.astype(np.float32)
                assert np.array_equal(res.c, exact.astype(np.int64))
                times = {
                    "local": baseline, "total": elapsed, "submit": submitted - t,
                    "wait": delivered - submitted,
                    "fetch": res.timings["transfer_s"], "check": res.timings["check_s"],
                }  # fmt: skip
                shown = ", ".join(f"{k} {v:.3f} s" for k, v in times.items())
                where = "standalone" if standalone else "pinned" if pin else "all cores"
                print(f"# {miners} miner(s), {where}, run {run}: {shown}", flush=True)
                if run:
                    out.append(times)
            return out
        finally:
            for proc in stop:
                proc.stop()


# name -> (miners, parts, pinned, standalone)
SCENARIOS = {
    "one_miner": (1, 1, True, False),
    "one_miner_all_cores": (1, 1, False, False),
    "three_miners": (3, 3, True, False),
    "standalone_miner": (1, 1, True, True),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 4096, 4096], metavar=("M", "K", "N"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", choices=list(SCENARIOS), action="append",
                   help="run this scenario only (repeatable; default: all)")  # fmt: skip
    args = p.parse_args()
    m, k, n = args.shape
    runs = {}
    for name in args.only or list(SCENARIOS):
        miners, parts, pin, standalone = SCENARIOS[name]
        runs[name] = timed_products(miners, (m, k, n), args.runs, parts, pin, standalone)
    total = {name: statistics.median(r["total"] for r in got) for name, got in runs.items()}
    # measured before every product, on the same operands, as the machine was then
    local = statistics.median(r["local"] for got in runs.values() for r in got)
    print(f"shape={m}x{k}x{n}")
    print(f"local_product_s={local:.3f}")
    for name, got in runs.items():
        for part in ("submit", "wait", "fetch", "check"):
            print(f"{name}_{part}_s={statistics.median(r[part] for r in got):.3f}")
    for name, seconds in total.items():
        print(f"{name}_s={seconds:.2f}")
        print(f"{name}_ratio={seconds / local:.2f}")
    if "one_miner" in total and "three_miners" in total:
        print(f"three_over_one={total['three_miners'] / total['one_miner']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
