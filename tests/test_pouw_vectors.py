"""The committed PoUW test vectors still hold (a rule change shows as a failure here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.vectors.gen_pouw import CASES, compute_case

VECTORS = json.loads((Path(__file__).parent / "vectors" / "pouw.json").read_text())


def test_every_case_has_a_vector() -> None:
    assert [v["name"] for v in VECTORS] == [c["name"] for c in CASES]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_recomputes(vector: dict) -> None:
    case = {key: vector[key] for key in CASES[0]}
    assert compute_case(case) == vector


def test_vectors_have_winners() -> None:
    """Each case is sized so that at least one tile wins and a seal is covered."""
    assert all(v["winning_tiles"] for v in VECTORS)
