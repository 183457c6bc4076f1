"""Generate tests/vectors/pouw.json from the reference (consensus/pouw.py).

Run from the repo root: python tests/vectors/gen_pouw.py. The JSON is committed and
tests/test_pouw_vectors.py recomputes every field, so any change to the PoUW rules
shows up as a failing test and a diff of this file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from consensus.commitments import commit_cols, commit_rows
from consensus.noise import (
    LABEL_A_LEFT,
    LABEL_A_PATTERN,
    LABEL_B_PATTERN,
    LABEL_B_RIGHT,
    dense_noise_lines,
    sparse_pattern,
)
from consensus.params import PouwParams
from consensus.pouw import filler_matrices, mine_reference
from consensus.seal import WorkStatement

OUT = Path(__file__).with_name("pouw.json")

CASES: list[dict[str, Any]] = [
    {
        "name": "devnet-like",
        "r": 32,
        "h": 8,
        "w": 8,
        "m": 32,
        "k": 128,
        "n": 24,
        "seed": "00",
        "prefix": "11",
        "work_per_block": 2**18,
    },
    {
        "name": "mainnet-like",
        "r": 128,
        "h": 8,
        "w": 8,
        "m": 16,
        "k": 256,
        "n": 16,
        "seed": "01",
        "prefix": "22",
        "work_per_block": 2**20,
    },
    {
        "name": "rect-tiles",
        "r": 16,
        "h": 4,
        "w": 8,
        "m": 12,
        "k": 64,
        "n": 16,
        "seed": "02",
        "prefix": "33",
        "work_per_block": 2**13,
    },
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compute_case(case: dict[str, Any]) -> dict[str, Any]:
    r, h, w, m, k, n = (case[x] for x in ("r", "h", "w", "m", "k", "n"))
    params = PouwParams(r, h, w, r, 4096, 4096, 4096, 2**40)
    a, b = filler_matrices(bytes.fromhex(case["seed"]), m, k, n)
    target = 2**256 // case["work_per_block"]
    work = WorkStatement(
        bytes.fromhex(case["prefix"]) * 32, m, k, n, commit_rows(a), commit_cols(b), target
    )
    sigma_a, sigma_b = work.seeds()
    result = mine_reference(params, work, a, b)
    a_plus, a_minus = sparse_pattern(sigma_a, LABEL_A_PATTERN, k, r)
    b_plus, b_minus = sparse_pattern(sigma_b, LABEL_B_PATTERN, k, r)
    return {
        **case,
        "a_sha256": sha(a.tobytes()),
        "b_sha256": sha(b.tobytes()),
        "h_a": work.h_a.hex(),
        "h_b": work.h_b.hex(),
        "sigma_a": work.seeds()[0].hex(),
        "sigma_b": sigma_b.hex(),
        "e_al_row0": dense_noise_lines(sigma_a, LABEL_A_LEFT, [0], r).tobytes().hex(),
        "e_br_col0": dense_noise_lines(sigma_b, LABEL_B_RIGHT, [0], r).tobytes().hex(),
        "a_pattern_first8": [
            [int(p), int(q)] for p, q in zip(a_plus[:8], a_minus[:8], strict=True)
        ],
        "b_pattern_first8": [
            [int(p), int(q)] for p, q in zip(b_plus[:8], b_minus[:8], strict=True)
        ],
        "tickets": [t.hex() for t in result.tickets],
        "winning_tiles": [s.tile_index for s in result.seals],
        "seal0_sha256": sha(result.seals[0].to_bytes()) if result.seals else None,
        "product_sha256": sha(np.ascontiguousarray(result.product, dtype="<i4").tobytes()),
    }


def main() -> None:
    OUT.write_text(json.dumps([compute_case(c) for c in CASES], indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
