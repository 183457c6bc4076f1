"""Write tests/vectors/difficulty.json from the current consensus code.

Run from the repository root: ``.venv/bin/python tests/vectors/gen_difficulty.py``.
The JSON is committed; tests/test_difficulty.py recomputes every case, so any
change to the rule shows up as a failing vector and must be deliberate (rerun
this script and review the diff). Integers are strings (decimal, or 0x-hex for
targets) so that no JSON reader rounds them.
"""

from __future__ import annotations

import json
from pathlib import Path

from consensus.difficulty import (
    block_work,
    genesis_anchor_parent_time,
    median_time_past,
    next_target,
)
from consensus.params import DifficultyParams

OUT = Path(__file__).with_name("difficulty.json")

BCH_MAX = 0xFFFF << 208  # compact 0x1d00ffff, Bitcoin's pow limit

PARAMS = {
    # Shaped like a production network: 2-minute blocks, 2-day half-life.
    "main": DifficultyParams(120, 172800, 2**224 - 1, 2**200 + 12345),
    # Devnet: 2-second blocks, 10-minute half-life, the widest possible target.
    "devnet": DifficultyParams(2, 600, 2**256 - 1, 2**226),
    # Bitcoin Cash mainnet constants, anchored at a real-life target.
    "bch": DifficultyParams(600, 172800, BCH_MAX, 0x02AEE8 << 168),
}

GENESIS_TIME = 1_700_000_000


def _cases() -> list[tuple[str, str, int, int, int, int]]:
    """(note, params, anchor_target, anchor_parent_time, parent_time, parent_height)."""
    out: list[tuple[str, str, int, int, int, int]] = []
    for name, p in PARAMS.items():
        g = p.genesis_target
        apt = genesis_anchor_parent_time(p, GENESIS_TIME)
        s, hl = p.target_spacing_s, p.half_life_s

        def on_schedule(h: int, s: int = s) -> int:
            return GENESIS_TIME + s * h

        out += [
            ("block 1 on genesis", name, g, apt, GENESIS_TIME, 0),
            ("on schedule at 1000", name, g, apt, on_schedule(1000), 1000),
            ("one half-life late", name, g, apt, on_schedule(500) + hl, 500),
            ("one half-life early", name, g, apt, on_schedule(500) - hl, 500),
            ("half a half-life late", name, g, apt, on_schedule(77) + hl // 2, 77),
            ("a quarter early, odd seconds", name, g, apt, on_schedule(12345) - hl // 4 - 7, 12345),
            ("one second late", name, g, apt, on_schedule(3) + 1, 3),
            ("one second early", name, g, apt, on_schedule(3) - 1, 3),
        ]
    p = PARAMS["main"]
    g, apt, hl = p.genesis_target, genesis_anchor_parent_time(p, GENESIS_TIME), p.half_life_s
    d = PARAMS["devnet"]
    dmax, dapt, dhl = d.max_target, genesis_anchor_parent_time(d, GENESIS_TIME), d.half_life_s
    out += [
        ("255 half-lives late: last exact shift", "devnet", 1, dapt, GENESIS_TIME + 255 * dhl, 0),
        ("256 half-lives late: guard to max", "devnet", 1, dapt, GENESIS_TIME + 256 * dhl, 0),
        ("250 half-lives early from max", "devnet", dmax, dapt, GENESIS_TIME - 250 * dhl, 0),
        ("256 half-lives early from max", "devnet", dmax, dapt, GENESIS_TIME - 256 * dhl, 0),
        ("257 half-lives early: guard to 1", "devnet", dmax, dapt, GENESIS_TIME - 257 * dhl, 0),
        ("time 2^64-1", "main", g, apt, 2**64 - 1, 5),
        ("time 0, height 2^63", "main", g, apt, 0, 2**63),
        ("parent before genesis", "main", g, apt, GENESIS_TIME - 10**6, 1),
        ("anchor at max, late", "main", p.max_target, apt, GENESIS_TIME + 10 * hl, 9),
        ("anchor at max, slightly early", "main", p.max_target, apt, GENESIS_TIME - 1000, 0),
        ("anchor 1, early", "main", 1, apt, GENESIS_TIME - hl, 0),
        ("anchor 1, 15 half-lives late", "main", 1, apt, GENESIS_TIME + 15 * hl, 0),
        ("anchor 1, 15.5 half-lives late", "main", 1, apt, GENESIS_TIME + 31 * hl // 2, 0),
    ]
    return [(n, pn, at, a, t, h) for n, pn, at, a, t, h in out]


def build() -> dict[str, object]:
    params = {
        name: {
            "target_spacing_s": str(p.target_spacing_s),
            "half_life_s": str(p.half_life_s),
            "max_target": hex(p.max_target),
            "genesis_target": hex(p.genesis_target),
        }
        for name, p in PARAMS.items()
    }
    cases = [
        {
            "note": note,
            "params": pname,
            "anchor_target": hex(at),
            "anchor_parent_time": str(apt),
            "anchor_height": "0",
            "parent_time": str(t),
            "parent_height": str(h),
            "next_target": hex(next_target(PARAMS[pname], at, apt, 0, t, h)),
        }
        for note, pname, at, apt, t, h in _cases()
    ]
    works = [1, 2, 3, 2**128, 2**200 + 12345, 2**224 - 1, 2**255, 2**256 - 1]
    mtp_inputs = [
        [5],
        [3, 1],
        [1, 2, 3],
        [9, 1, 8, 2],
        list(range(11)),
        [7] * 11,
        [100, 1, 99, 2, 98, 3, 97, 4, 96, 5, 95, 6],
        list(range(30, 0, -1)),
    ]
    return {
        "format": "integers as strings; targets 0x-hex; anchor is genesis (height 0)",
        "params": params,
        "next_target": cases,
        "block_work": [{"target": hex(t), "work": str(block_work(t))} for t in works],
        "median_time_past": [
            {"timestamps": [str(x) for x in ts], "mtp": str(median_time_past(ts))}
            for ts in mtp_inputs
        ],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
