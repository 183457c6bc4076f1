"""Benchmark of chain.state_tree: build a 1M-key state, then apply 10k changes.

Run from the repository root: ``.venv/bin/python bench/bench_state.py [--keys N]
[--changes K]``. Prints ``name=value`` lines:

* ``state_build_s`` / ``state_build_keys_per_s``: StateTree.build of N keys;
* ``state_build_first_gc_s``: the one full GC pass after the build (untracks the nodes);
* ``state_apply_s`` / ``state_apply_keys_per_s``: one apply of K changes (1/3 updates,
  1/3 deletes, 1/3 inserts) into that tree;
* ``state_apply_hashes_per_change``: SHA-256s per change (module counter);
* ``sha256_hashes_per_s``: hashlib SHA-256 of 64-byte messages in this process, and
  ``state_apply_vs_sha256``: apply keys/s divided by it (machine-independent-ish).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain import state_hash  # noqa: E402
from chain.state_tree import StateTree  # noqa: E402


def sha256_per_s(seconds: float = 0.5) -> float:
    msg = bytes(64)
    sha = hashlib.sha256
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(10_000):
            sha(msg).digest()
        n += 10_000
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    items = [(b"acct/%d" % i, rng.randbytes(40)) for i in range(args.keys)]

    t0 = time.perf_counter()
    tree = StateTree.build(items)
    build_s = time.perf_counter() - t0
    # The first collection after a build walks the new nodes once (and untracks them,
    # they are plain tuples); a node pays it once at start. Timed apart from apply.
    t0 = time.perf_counter()
    gc.collect()
    gc_s = time.perf_counter() - t0

    changes: dict[bytes, bytes | None] = {}
    for i in range(args.changes):
        r = i % 3
        if r == 0:
            changes[b"acct/%d" % rng.randrange(args.keys)] = rng.randbytes(40)
        elif r == 1:
            changes[b"acct/%d" % rng.randrange(args.keys)] = None
        else:
            changes[b"new/%d" % i] = rng.randbytes(40)

    h0 = state_hash.hash_calls()
    t0 = time.perf_counter()
    tree.apply(changes)
    apply_s = time.perf_counter() - t0
    hashes = state_hash.hash_calls() - h0
    apply_rate = len(changes) / apply_s
    sha_rate = sha256_per_s()

    print(f"state_keys={args.keys}")
    print(f"state_changes={len(changes)}")
    print(f"state_build_s={build_s:.3f}")
    print(f"state_build_keys_per_s={args.keys / build_s:.0f}")
    print(f"state_build_first_gc_s={gc_s:.3f}")
    print(f"state_apply_s={apply_s:.4f}")
    print(f"state_apply_keys_per_s={apply_rate:.0f}")
    print(f"state_apply_hashes_per_change={hashes / len(changes):.2f}")
    print(f"sha256_hashes_per_s={sha_rate:.0f}")
    print(f"state_apply_vs_sha256={apply_rate / sha_rate:.5f}")


if __name__ == "__main__":
    main()
