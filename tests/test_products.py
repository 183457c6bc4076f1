"""A buyer's product cut into jobs (wallet/products.py) and put back together."""

from __future__ import annotations

import numpy as np
import pytest

from chain.network import load_network
from wallet.products import PlanError, assemble, plan_parts

POUW = load_network("devnet").pouw


@pytest.mark.parametrize(("shape", "cut"), [((64, 256, 300), "cols"), ((300, 256, 64), "rows")])
def test_more_parts_cut_the_larger_operand_and_reassemble_exactly(
    shape: tuple[int, int, int], cut: str
) -> None:
    m, k, n = shape
    parts = plan_parts(m, k, n, POUW, 2**40, min_parts=3)
    assert len(parts) == 3
    if cut == "cols":  # every part has all of A, a third of B's columns
        assert all((p.r0, p.r1) == (0, m) for p in parts)
        assert sorted((p.c0, p.c1) for p in parts)[-1][1] == n
    else:
        assert all((p.c0, p.c1) == (0, n) for p in parts)
    rng = np.random.default_rng(3)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    results = []
    for p in parts:
        pa, pb = p.operands(a, b)
        assert (pa.shape[0], pa.shape[1], pb.shape[1]) == p.shape
        results.append(pa.astype(np.int64) @ pb.astype(np.int64))
    assert np.array_equal(assemble(m, n, parts, results), a.astype(np.int64) @ b.astype(np.int64))


@pytest.mark.parametrize(
    "shape", [(64, 256, 300), (300, 256, 64), (64, 256, 256), (5, 7, 3), (40, 9000, 24)]
)
def test_a_parts_bt_cut_from_the_whole_bt_is_its_b_transposed(shape: tuple[int, int, int]) -> None:
    """The buyer transposes B once and cuts each part's Bᵀ from it: the same matrix as
    the part's B (padded or not, k cut or not) transposed, so the same root."""
    from compute.blobs import blob_root, bt_root_of

    m, k, n = shape
    parts = plan_parts(m, k, n, POUW, 2**40, min_parts=3)
    rng = np.random.default_rng(5)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    bt = np.ascontiguousarray(b.T)
    for p in parts:
        _, pb = p.operands(a, b)
        cut = p.operand_bt(bt)
        assert np.array_equal(cut, pb.T)
        assert blob_root("bt", np.ascontiguousarray(cut)) == bt_root_of(pb)


def test_impossible_plans_are_named() -> None:
    with pytest.raises(PlanError, match="at least 1"):
        plan_parts(0, 8, 8, POUW)


def test_parts_over_the_cap_name_parts_not_the_shape() -> None:
    """A shape the job size cuts into a few parts, asked for more than MAX_PARTS: the
    message blames --parts (it used to say to submit the shape in pieces)."""
    from wallet.products import MAX_PARTS

    plain = len(plan_parts(512, 4096, 4096, POUW))
    with pytest.raises(PlanError) as exc:
        plan_parts(512, 4096, 4096, POUW, min_parts=MAX_PARTS + 1)
    assert str(exc.value) == (
        f"--parts {MAX_PARTS + 1} is more than the {MAX_PARTS} jobs a product may have: "
        f"lower --parts (without it 512x4096x4096 takes {plain})"
    )
    assert len(plan_parts(512, 4096, 4096, POUW, min_parts=MAX_PARTS)) == MAX_PARTS
    with pytest.raises(PlanError, match="submit it in pieces"):  # the shape itself: as before
        plan_parts(10**8, 10**8, 10**8, POUW, min_parts=2)


def test_asking_for_fewer_parts_than_the_job_size_cuts_changes_nothing() -> None:
    """--parts N means at least N: where the job size already cuts N or more, the plan
    is the one without it (512x4096x4096 with --parts 3 used to give 6 parts: three
    column blocks, each then halved by the size cap, against 4 without it)."""
    plain = plan_parts(512, 4096, 4096, POUW)
    for wanted in range(2, len(plain) + 1):
        assert plan_parts(512, 4096, 4096, POUW, min_parts=wanted) == plain
    assert len(plan_parts(512, 4096, 4096, POUW, min_parts=len(plain) + 1)) == len(plain) + 1
