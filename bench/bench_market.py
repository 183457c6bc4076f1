"""One compute-market job, in process, timed from submission to verified C.

Stages (name=value lines, seconds unless named otherwise):
  upload_s       client puts A and B in its node's blob store (hashing the commitments)
  fetch_ab_s     the miner fetches A and B over HTTP, checking every row
  mine_s         the miner's product with the lottery (one engine.mine of the job)
  commit_s       result root of C and the JOB_COMMIT
  fetch_c_s      the client fetches C over HTTP, checking every row against the root
  check_s        Freivalds' test of C against A and B (16 trials)
  total_s        all of the above
  bare_product_s the exact product alone on the same backend (engine.mine on a fixed
                 template, i.e. the mining cost; and numpy float32 BLAS as reference)
  overhead       total_s / bare_product_s

    .venv/bin/python bench/bench_market.py [--m 512 --k 1024 --n 512] [--engine numpy|cupy]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from compute.blobs import BlobStore, fetch_blob  # noqa: E402
from compute.engine import FixedTemplate  # noqa: E402
from compute.freivalds import freivalds_check  # noqa: E402
from compute.select import select_engine  # noqa: E402
from consensus.commitments import commit_cols, commit_rows  # noqa: E402
from consensus.result import result_root  # noqa: E402
from node.blobs import BlobServer  # noqa: E402
from tests.chainutil import easy_devnet  # noqa: E402


async def run(m: int, k: int, n: int, engine_name: str | None) -> dict[str, float]:
    net = easy_devnet()
    engine = select_engine(engine_name)
    rng = np.random.default_rng(1)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    out: dict[str, float] = {}
    # warm-up (JIT, workspaces, thread pools): not timed
    engine.mine(net.pouw, a, b, FixedTemplate(b"\x02" * 32, net.difficulty.genesis_target))
    with tempfile.TemporaryDirectory() as tmp:
        client_store = BlobStore(Path(tmp) / "client")
        miner_store = BlobStore(Path(tmp) / "miner")
        cs, ms = BlobServer(client_store), BlobServer(miner_store)
        await cs.start()
        await ms.start()
        try:
            t = time.perf_counter()
            h_a, h_b = client_store.put("a", a), client_store.put("bt", b.T)
            out["upload_s"] = time.perf_counter() - t
            t = time.perf_counter()
            ga = await fetch_blob([cs.url], h_a, "a", m, k, miner_store)
            gbt = await fetch_blob([cs.url], h_b, "bt", n, k, miner_store)
            out["fetch_ab_s"] = time.perf_counter() - t
            template = FixedTemplate(bytes(32), net.difficulty.genesis_target)
            gb = np.ascontiguousarray(np.asarray(gbt).T)
            t = time.perf_counter()
            res = await asyncio.to_thread(
                engine.mine, net.pouw, np.asarray(ga, np.int8), gb, template
            )
            out["mine_s"] = time.perf_counter() - t
            assert res.product is not None
            t = time.perf_counter()
            h_c = miner_store.put("c", res.product)
            out["commit_s"] = time.perf_counter() - t
            t = time.perf_counter()
            c = await fetch_blob([ms.url], h_c, "c", m, n)
            out["fetch_c_s"] = time.perf_counter() - t
            t = time.perf_counter()
            assert freivalds_check(a, b, c)
            out["check_s"] = time.perf_counter() - t
            assert h_a == commit_rows(a) and h_b == commit_cols(b) and h_c == result_root(c)
        finally:
            await cs.stop()
            await ms.stop()
    out["total_s"] = sum(out.values())
    t = time.perf_counter()
    engine.mine(net.pouw, a, b, FixedTemplate(b"\x01" * 32, net.difficulty.genesis_target))
    out["bare_product_s"] = time.perf_counter() - t
    t = time.perf_counter()
    a.astype(np.float32) @ b.astype(np.float32)
    out["blas_f32_product_s"] = time.perf_counter() - t
    out["overhead"] = out["total_s"] / out["bare_product_s"]
    out["transfer_s"] = out["fetch_ab_s"] + out["fetch_c_s"] + out["upload_s"]
    out["checking_s"] = out["check_s"]
    out["mining_s"] = out["mine_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=512)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--engine", choices=["numpy", "cupy"])
    args = p.parse_args()
    out = asyncio.run(run(args.m, args.k, args.n, args.engine))
    print(f"shape={args.m}x{args.k}x{args.n}")
    for key, value in out.items():
        print(f"{key}={value:.4f}")


if __name__ == "__main__":
    main()
