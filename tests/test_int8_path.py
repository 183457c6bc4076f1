"""The int8 (AVX-512 VNNI) path of the CPU engine: its micro-kernel and packing.

The engine's outputs on this path are held to the reference by
tests/test_numpy_engine.py (every engine there runs it where the CPU has VNNI); these
check the pieces on their own, and skip where the CPU lacks the instruction.
"""

from __future__ import annotations

import numpy as np
import pytest

from compute import int8_kernels, vnni
from compute.numpy_engine import NumpyEngine
from consensus.params import MAX_K

VNNI = vnni.find_vnni()
needs_vnni = pytest.mark.skipif(VNNI is None, reason="no AVX-512 VNNI on this CPU")


def test_kernel_ir_is_built_for_any_tile_shape() -> None:
    for mr, nv in ((1, 1), (8, 2), (4, 3)):
        ir = vnni.kernel_ir(mr, nv)
        assert ir.count("@llvm.x86.avx512.vpdpbusd.512(") == mr * nv + 1  # + declare


@pytest.mark.parametrize(("r", "k", "cols", "strip", "split"), [
    (8, 32, 40, 8, 16), (2, 10, 24, 8, 8), (32, 64, 64, 32, 32), (4, 8, 5, 8, 0),
    (128, 256, 72, 8, 64), (32, 64, 40, 32, 32),
])  # fmt: skip
@pytest.mark.parametrize("is_b", [False, True], ids=["A", "B"])
def test_packed_panel_layout(r: int, k: int, cols: int, strip: int, split: int, is_b: bool):
    """Two panels (split at a strip boundary) give vnni.pack_reference's layout, the
    running row sums of A' and the scattered halves of noise removal."""
    rng = np.random.default_rng(r + k + cols)
    src = rng.integers(-64, 64, (k, cols), dtype=np.int8)
    table = rng.integers(-32, 32, (r, cols), dtype=np.int8)
    plus = rng.integers(0, r, k).astype(np.int32)
    minus = ((plus + 1) % r).astype(np.int32)
    s_plus, s_minus = plus[::-1].copy(), minus[::-1].copy()
    strips, steps, qps = -(-cols // strip), k // r, (r + 3) // 4
    out = np.zeros(strips * steps * qps * strip, np.uint32)
    corr = np.zeros(strips * steps * strip, np.int32)
    acc = np.zeros((r, cols), np.int32)
    for lo, hi in ((0, split), (split, cols)):
        int8_kernels.build_packed_panel(
            src, table, plus, minus, s_plus, s_minus, is_b, out, acc, corr, r, strip, lo, hi
        )
    noisy = src.astype(np.int64) + table[plus].astype(np.int64) - table[minus].astype(np.int64)
    offset = vnni.B_OFFSET if is_b else 0
    expect = vnni.pack_reference(noisy, strip, r, offset)
    if is_b:  # padding columns of B' are never written
        written = vnni.pack_reference(np.ones((k, cols), np.int64), strip, r, 0)
        expect = np.where(written != 0, expect, 0)
    assert np.array_equal(out.view(np.uint8), expect)
    scattered = noisy if is_b else src.astype(np.int64)
    want = np.zeros((r, cols), np.int64)
    np.add.at(want, s_plus, scattered)
    np.add.at(want, s_minus, -scattered)
    assert np.array_equal(acc, want)
    if not is_b:
        sums = np.cumsum(noisy.reshape(steps, r, cols).sum(axis=1), axis=0) * vnni.B_OFFSET
        padded = np.zeros((steps, strips * strip), np.int64)
        padded[:, :cols] = sums
        assert np.array_equal(corr, padded.reshape(steps, strips, strip).transpose(1, 0, 2).ravel())


@needs_vnni
def test_engine_uses_int8_path_where_available() -> None:
    assert NumpyEngine().vnni is not None
    assert NumpyEngine(use_vnni=False).vnni is None
    assert NumpyEngine(use_blas=False).vnni is None


@needs_vnni
def test_kernel_self_test_passes() -> None:
    assert VNNI is not None and vnni._self_test(VNNI)


@needs_vnni
@pytest.mark.parametrize(("a_value", "b_value"), [(-127, 126), (-127, -127), (126, 126)])
def test_kernel_wraps_exactly_at_the_largest_k(a_value: int, b_value: int) -> None:
    """Raw accumulators (true + 128 * row sum of A') leave int32 at k = MAX_K; their
    wrapping arithmetic still gives the exact C' and fold states."""
    assert VNNI is not None
    mr, nr, r, k = VNNI.mr, VNNI.nr, 1024, MAX_K
    steps, qps = k // r, r // 4
    a = np.full((mr, k), a_value, np.int64)
    a[:, ::3] = -a_value  # mixed signs, so the steps differ
    b = np.full((k, nr), b_value, np.int64)
    a_pack = vnni.pack_reference(a.T, mr, r, 0)
    b_pack = vnni.pack_reference(b, nr, r, vnni.B_OFFSET)
    corr = np.empty((steps, mr), np.int64)
    for s in range(steps):
        corr[s] = vnni.B_OFFSET * a[:, : (s + 1) * r].sum(axis=1)
    corr32 = corr.astype(np.int32)
    acc = np.zeros((mr, nr), np.int32)
    state = np.zeros((mr, nr), np.uint32)
    VNNI.tile(
        a_pack.ctypes.data, qps * mr * 4, b_pack.ctypes.data, qps * nr * 4, corr32.ctypes.data,
        acc.ctypes.data, nr, state.ctypes.data, nr, steps, qps,
        vnni.FLAG_INIT | vnni.FLAG_FOLD | vnni.FLAG_FINAL,
    )  # fmt: skip
    expect = np.zeros((mr, nr), np.uint32)
    part = np.zeros((mr, nr), np.int64)
    for s in range(steps):
        part += a[:, s * r : (s + 1) * r] @ b[s * r : (s + 1) * r]
        assert np.abs(part).max() < 2**31
        expect = ((expect << np.uint32(1)) | (expect >> np.uint32(31))) ^ (
            part & 0xFFFFFFFF
        ).astype(np.uint32)
    assert np.array_equal(acc, part)
    assert np.array_equal(state, expect)
