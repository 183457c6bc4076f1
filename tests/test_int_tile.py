"""The integer paths of the CPU engine (AVX-512 VNNI int8, AVX2 int16): the
micro-kernel in each form and the packing.

The engine's outputs on the path this CPU takes are held to the reference by
tests/test_numpy_engine.py; these check the pieces on their own. Every form is
compiled to machine code on any x86 machine (LLVM builds for a CPU it is not running
on); running a form skips where the CPU lacks its instructions.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

from compute import int8_kernels, int_tile
from compute.int_tile import AVX2, AVXVNNI, ISAS, VNNI512, Isa
from compute.numpy_engine import NumpyEngine
from consensus.params import MAX_K

# A CPU of each form's family, for compiling it where this machine lacks it.
CPU_OF = {VNNI512.path: "icelake-server", AVXVNNI.path: "alderlake", AVX2.path: "haswell"}
BEST = int_tile.find_int_tile()


def _built(isa: Isa) -> int_tile.IntTile:
    try:
        built = int_tile.build(isa)
    except OSError as exc:
        pytest.skip(f"{isa.path}: {exc}")
    return built


def test_kernel_ir_is_built_for_any_tile_shape() -> None:
    for mr, nv in ((1, 1), (8, 2), (4, 3)):
        ir = int_tile.kernel_ir(mr, nv, VNNI512)
        assert ir.count("@llvm.x86.avx512.vpdpbusd.512(") == mr * nv + 1  # + declare
        ir = int_tile.kernel_ir(mr, nv, AVXVNNI)
        assert ir.count("@llvm.x86.avx512.vpdpbusd.256(") == mr * nv + 1
        ir = int_tile.kernel_ir(mr, nv, AVX2)
        assert ir.count("@llvm.x86.avx2.pmadd.wd(") == mr * nv + 1
        assert "avx512" not in ir


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 only")
@pytest.mark.parametrize("isa", ISAS, ids=[i.path for i in ISAS])
def test_every_form_compiles_to_its_instruction(isa: Isa) -> None:
    asm = int_tile.assembly(isa, isa.mr, isa.nv, CPU_OF[isa.path])
    instruction = "vpdpbusd" if isa.dot == "vpdpbusd" else "vpmaddwd"
    assert asm.count(f"\t{instruction}\t") >= isa.mr * isa.nv
    if isa.lanes == 8:  # 256-bit forms run on CPUs without AVX-512: no zmm, no EVEX
        assert "zmm" not in asm
    if isa is AVXVNNI:
        assert asm.count(f"{{vex}}\t{instruction}\t") >= isa.mr * isa.nv


@pytest.mark.parametrize(("r", "k", "cols", "strip", "split"), [
    (8, 32, 40, 8, 16), (2, 10, 24, 8, 8), (32, 64, 64, 32, 32), (4, 8, 5, 8, 0),
    (128, 256, 72, 8, 64), (32, 64, 40, 32, 32),
])  # fmt: skip
@pytest.mark.parametrize("is_b", [False, True], ids=["A", "B"])
@pytest.mark.parametrize("isa", ISAS, ids=[i.path for i in ISAS])
def test_packed_panel_layout(
    r: int, k: int, cols: int, strip: int, split: int, is_b: bool, isa: Isa
) -> None:
    """Two panels (split at a strip boundary) give int_tile.pack_reference's layout in
    each form, the running row sums of A' (times the form's offset) and the scattered
    halves of noise removal. Packing is Numba: it runs on any CPU."""
    rng = np.random.default_rng(r + k + cols)
    src = rng.integers(-64, 64, (k, cols), dtype=np.int8)
    table = rng.integers(-32, 32, (r, cols), dtype=np.int8)
    plus = rng.integers(0, r, k).astype(np.int32)
    minus = ((plus + 1) % r).astype(np.int32)
    s_plus, s_minus = plus[::-1].copy(), minus[::-1].copy()
    group, b_offset = isa.group, isa.b_offset
    strips, steps, gps = -(-cols // strip), k // r, -(-r // group)
    out = np.zeros(strips * steps * gps * strip, np.uint32)
    corr = np.zeros(strips * steps * strip, np.int32)
    acc = np.zeros((r, cols), np.int32)
    for lo, hi in ((0, split), (split, cols)):
        int8_kernels.build_packed_panel(
            src, table, plus, minus, s_plus, s_minus, is_b, out, acc, corr, r, strip, lo, hi,
            group, b_offset,
        )  # fmt: skip
    noisy = src.astype(np.int64) + table[plus].astype(np.int64) - table[minus].astype(np.int64)
    expect = int_tile.pack_reference(noisy, strip, r, b_offset if is_b else 0, group)
    if is_b:  # padding columns of B' are never written
        written = int_tile.pack_reference(np.ones((k, cols), np.int64), strip, r, 0, group)
        entry = 4 // group  # bytes per packed entry
        written = np.repeat(written.reshape(-1, entry).max(axis=1), entry)
        expect = np.where(written != 0, expect, 0)
    assert np.array_equal(out.view(np.uint8), expect)
    scattered = noisy if is_b else src.astype(np.int64)
    want = np.zeros((r, cols), np.int64)
    np.add.at(want, s_plus, scattered)
    np.add.at(want, s_minus, -scattered)
    assert np.array_equal(acc, want)
    if not is_b:
        sums = np.cumsum(noisy.reshape(steps, r, cols).sum(axis=1), axis=0) * b_offset
        padded = np.zeros((steps, strips * strip), np.int64)
        padded[:, :cols] = sums
        assert np.array_equal(corr, padded.reshape(steps, strips, strip).transpose(1, 0, 2).ravel())


def test_pack_reference_int16_words_are_sign_extended_pairs() -> None:
    x = np.array([[-127, 5], [126, -1]], np.int64)  # k = 2 (one pair), 2 columns
    words = int_tile.pack_reference(x, 2, 2, 0, 2).view("<u4")
    assert [int(w) for w in words] == [(126 << 16) | (-127 & 0xFFFF), (0xFFFF << 16) | 5]


@pytest.mark.skipif(BEST is None, reason="no integer micro-kernel on this CPU")
def test_engine_uses_the_best_integer_path_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(int_tile.CPU_PATH_ENV, raising=False)
    assert BEST is not None
    assert NumpyEngine().int_tile is BEST
    assert BEST.isa is next(i for i in ISAS if _has(i))
    assert NumpyEngine(cpu_path="sgemm").int_tile is None
    assert NumpyEngine(use_blas=False).int_tile is None


def _has(isa: Isa) -> bool:
    try:
        int_tile.build(isa)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("isa", ISAS, ids=[i.path for i in ISAS])
def test_kernel_self_test_passes(isa: Isa) -> None:
    assert int_tile._self_test(_built(isa))


@pytest.mark.parametrize("isa", ISAS, ids=[i.path for i in ISAS])
@pytest.mark.parametrize(("a_value", "b_value"), [(-127, 126), (-127, -127), (126, 126)])
def test_kernel_is_exact_at_the_largest_k(isa: Isa, a_value: int, b_value: int) -> None:
    """At k = MAX_K with the largest noisy entries: the raw accumulators of the int8
    form (true + 128 * row sum of A') leave int32 and wrap, the int16 form's stay
    inside; both give the exact C' and fold states."""
    tile = _built(isa)
    mr, nr, r, k = tile.mr, tile.nr, 1024, MAX_K
    steps, gps = k // r, r // tile.group
    a = np.full((mr, k), a_value, np.int64)
    a[:, ::3] = -a_value  # mixed signs, so the steps differ
    b = np.full((k, nr), b_value, np.int64)
    a_pack = int_tile.pack_reference(a.T, mr, r, 0, tile.group)
    b_pack = int_tile.pack_reference(b, nr, r, tile.b_offset, tile.group)
    corr = np.empty((steps, mr), np.int64)
    for s in range(steps):
        corr[s] = tile.b_offset * a[:, : (s + 1) * r].sum(axis=1)
    corr32 = corr.astype(np.int32)
    acc = np.zeros((mr, nr), np.int32)
    state = np.zeros((mr, nr), np.uint32)
    tile.tile(
        a_pack.ctypes.data, gps * mr * 4, b_pack.ctypes.data, gps * nr * 4, corr32.ctypes.data,
        acc.ctypes.data, nr, state.ctypes.data, nr, steps, gps,
        int_tile.FLAG_INIT | int_tile.FLAG_FOLD | int_tile.FLAG_FINAL,
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


def test_cpu_path_setting_takes_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(int_tile.CPU_PATH_ENV, raising=False)
    assert int_tile.cpu_path_setting() == "auto"
    monkeypatch.setenv(int_tile.CPU_PATH_ENV, " ")
    assert int_tile.cpu_path_setting() == "auto"  # empty counts as unset
    monkeypatch.setenv(int_tile.CPU_PATH_ENV, "sgemm")
    assert int_tile.cpu_path_setting() == "sgemm"
    assert int_tile.cpu_path_setting("int16-avx2") == "int16-avx2"
    assert NumpyEngine().path == "sgemm"  # the environment reaches the engine
    monkeypatch.setenv(int_tile.CPU_PATH_ENV, "avx9000")
    with pytest.raises(ValueError, match="avx9000.*use one of auto, int8-vnni"):
        NumpyEngine()


@pytest.mark.parametrize("isa", ISAS, ids=[i.path for i in ISAS])
def test_a_named_form_is_taken_or_refused_clearly(isa: Isa) -> None:
    if _has(isa):
        engine = NumpyEngine(cpu_path=isa.path)
        assert engine.path == isa.path and engine.int_tile is not None
        assert engine.low_priority_twin().path == isa.path
    else:
        with pytest.raises(ValueError, match=f"{isa.path} is not available on this CPU"):
            NumpyEngine(cpu_path=isa.path)
    with pytest.raises(ValueError, match=f"{isa.path} is not available without BLAS"):
        NumpyEngine(use_blas=False, cpu_path=isa.path)


def test_a_named_form_is_not_checked_where_the_cpu_does_not_mine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = next((isa for isa in ISAS if not _has(isa)), None)
    if missing is None:
        pytest.skip("this CPU runs every form")
    monkeypatch.setenv(int_tile.CPU_PATH_ENV, missing.path)
    assert int_tile.cpu_path_problem(cpu_mines=False) is None  # a GPU host
    assert "does not run that form" in (int_tile.cpu_path_problem() or "")
    monkeypatch.setenv(int_tile.CPU_PATH_ENV, "avx9000")  # a bad name, wherever
    assert "not a CPU path" in (int_tile.cpu_path_problem(cpu_mines=False) or "")
