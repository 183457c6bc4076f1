"""The CuPy engine against the reference (consensus/pouw.py) and the NumPy engine.

Tests marked ``gpu`` need CuPy and a CUDA device and skip cleanly without them
(run them with ``pytest -m gpu tests/test_cupy_engine.py``). The unmarked tests run
the engine's host-side logic everywhere, with every device kernel replaced by its
NumPy mirror (``HostBackend``): padding, noise, chunked launches, stop handling, noise
removal, ticket and seal plumbing.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

import numpy as np
import pytest

from compute.cuda_kernels import COMMIT_NOISE_SOURCE
from compute.cuda_mma_variants import MMA_VARIANT_BY_NAME, MMA_VARIANTS, mma_variants_source
from compute.cuda_sources import BASIC_SOURCE
from compute.cupy_device import BLOCK_M
from compute.cupy_engine import CupyEngine
from compute.cupy_host import be_words, levels_ok, noise_template, split_levels, tag_prefix
from compute.engine import FixedTemplate
from compute.gpu_backends import HostBackend
from consensus.commitments import commit_cols, commit_rows, line_leaf, row_tree
from consensus.hashing import TAG_MERKLE_LEAF, TAG_MERKLE_NODE
from consensus.merkle import merkle_levels
from consensus.noise import LABEL_A_LEFT, LABEL_B_RIGHT, dense_noise_lines
from consensus.params import PouwParams
from consensus.pouw import mine_reference
from tests.pouwutil import engine_params

PREFIX = bytes(range(32))


def _params(r: int, h: int = 8, w: int = 8) -> PouwParams:
    return engine_params(r, h, w, k_max=8192)


def _template(params: PouwParams, k: int, frac_bits: int = 1) -> FixedTemplate:
    """A target at which about 2^-frac_bits of the tiles win."""
    per = params.tile_rows * params.tile_cols * k
    return FixedTemplate(PREFIX, max(1, (1 << (256 - frac_bits)) // per))


def _operands(m: int, k: int, n: int, seed: int, kind: str = "random"):
    rng = np.random.default_rng(seed)
    if kind == "random":
        a = rng.integers(-64, 64, size=(m, k), dtype=np.int8)
        b = rng.integers(-64, 64, size=(k, n), dtype=np.int8)
    elif kind == "min":
        a = np.full((m, k), -64, dtype=np.int8)
        b = np.full((k, n), -64, dtype=np.int8)
    elif kind == "max":
        a = np.full((m, k), 63, dtype=np.int8)
        b = np.full((k, n), 63, dtype=np.int8)
    elif kind == "mixed":
        a = np.full((m, k), -64, dtype=np.int8)
        b = np.full((k, n), 63, dtype=np.int8)
    else:
        raise ValueError(kind)
    return a, b


def _check_against_reference(engine, params, a, b, template) -> None:
    tickets: list[bytes] = []
    out = engine.mine(params, a, b, template, tickets_out=tickets)
    m, k = a.shape
    assert out.work == template.statement(m, k, b.shape[1], commit_rows(a), commit_cols(b))
    ref = mine_reference(params, out.work, a, b)
    assert not out.stopped
    assert out.product is not None and out.product.dtype == np.int32
    assert np.array_equal(out.product, ref.product)
    assert tickets == ref.tickets
    assert out.seals == ref.seals
    assert out.stats.tickets == len(ref.tickets)


class CountingStop(threading.Event):
    """A stop that reads as set once polled more than ``after`` times (a deterministic
    'mid-way': the engine polls once before uploading, then before every launch)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.polls = 0

    def is_set(self) -> bool:
        self.polls += 1
        return self.polls > self.after


# ---------------------------------------------------------------------------------
# Host-side logic with the NumPy mirror of the kernels (no GPU needed)
# ---------------------------------------------------------------------------------


def _host_engine(**kw) -> CupyEngine:
    return CupyEngine(backend=HostBackend(), **kw)


@pytest.mark.parametrize(
    "m,k,n,r,h,w",
    [(16, 64, 24, 32, 8, 8), (136, 96, 40, 32, 8, 8), (24, 128, 16, 128, 4, 8)],
)
def test_host_logic_matches_reference(m, k, n, r, h, w):
    params = _params(r, h, w)
    a, b = _operands(m, k, n, seed=m + n)
    _check_against_reference(_host_engine(), params, a, b, _template(params, k))


def test_host_logic_host_tickets_path():
    params = _params(32)
    a, b = _operands(16, 64, 16, seed=3)
    _check_against_reference(_host_engine(gpu_tickets=False), params, a, b, _template(params, 64))


def test_host_logic_every_tile_wins():
    params = _params(32)
    a, b = _operands(80, 64, 64, seed=6)  # 80 tiles: the winners' states come back at once
    _check_against_reference(_host_engine(), params, a, b, FixedTemplate(PREFIX, 1 << 250))


def test_host_logic_stop_midway_keeps_product():
    params = _params(32)
    m, k, n = 3 * BLOCK_M, 64, 16
    a, b = _operands(m, k, n, seed=5)
    engine = _host_engine(chunk_multiply_adds=1)
    tickets: list[bytes] = []
    out = engine.mine(
        params, a, b, _template(params, k), CountingStop(1), tickets, keep_product_on_stop=True
    )
    ref = mine_reference(params, out.work, a, b)
    assert out.stopped and out.seals == [] and tickets == []
    assert np.array_equal(out.product, ref.product)
    out2 = engine.mine(params, a, b, _template(params, k), CountingStop(1))
    assert out2.stopped and out2.product is None and out2.seals == []


def test_host_logic_rejects_bad_operands():
    params = _params(32)
    a, b = _operands(16, 64, 16, seed=1)
    a[0, 0] = 64
    with pytest.raises(ValueError):
        _host_engine().mine(params, a, b, _template(params, 64))
    with pytest.raises(ValueError):  # m not a multiple of the tile
        _host_engine().mine(params, *_operands(12, 64, 16, seed=1), _template(params, 64))


def test_host_logic_no_gpu_commit_or_noise():
    params = _params(32)
    a, b = _operands(24, 64, 40, seed=12)
    engine = _host_engine(gpu_commit=False, gpu_noise=False)
    _check_against_reference(engine, params, a, b, _template(params, 64))


def test_levels_spot_check_catches_corruption():
    rng = np.random.default_rng(0)
    mat = rng.integers(-64, 64, size=(7, 33), dtype=np.int8)
    levels = row_tree(mat)
    flat = np.frombuffer(b"".join(x for lv in levels for x in lv), dtype=np.uint8)
    assert split_levels(flat.reshape(-1, 32), 7) == levels
    assert levels_ok(levels, lambda i: mat[i].tobytes(), rng)
    for lv, i in ((0, 0), (0, 6), (1, 3), (2, 1), (3, 0)):  # incl. promoted nodes
        bad = [list(x) for x in levels]
        bad[lv][i] = bytes(32)
        assert not levels_ok(bad, lambda i: mat[i].tobytes(), np.random.default_rng(1))


def test_mma_variants_table():
    """Names unique, tilings consistent, shared memory within sm_90's 227 KB per block."""
    assert len(MMA_VARIANT_BY_NAME) == len(MMA_VARIANTS)
    for v in MMA_VARIANTS:
        assert v.name.startswith("mma_") and v.entry.startswith("pouw_tr_")
        assert v.bm % v.wm == 0 and v.bn % v.wn == 0 and v.wm % 16 == 0 and v.wn % 16 == 0
        assert v.bm % BLOCK_M == 0 and v.bn % 128 == 0
        assert 32 <= v.threads <= 1024 and (v.bm * 4) % v.threads == 0
        assert (v.bn * 4) % v.threads == 0
        assert v.shared_bytes <= 227 * 1024
        assert v.min_blocks * (v.shared_bytes + 1024) <= 228 * 1024
    src = mma_variants_source()
    assert all(src.count(v.entry + "(") == 1 for v in MMA_VARIANTS)


@pytest.mark.parametrize("kernel", ["mma_256x128_64x64_s3_b1_me", "mma_128x128_64x32_s4_b1_r"])
def test_host_logic_variant_kernel_names(kernel):
    """A variant's name is accepted and its launches (whole 256-row tiles per chunk for
    the 256-row variant) cover every block row."""
    assert kernel in MMA_VARIANT_BY_NAME
    params = _params(32)
    m, k, n = 3 * BLOCK_M, 64, 16
    a, b = _operands(m, k, n, seed=17)
    engine = _host_engine(kernel=kernel, chunk_multiply_adds=1)
    assert engine.kernel_for(32) == kernel
    _check_against_reference(engine, params, a, b, _template(params, k))
    with pytest.raises(ValueError):
        CupyEngine(kernel="mma_no_such_variant")


def test_mma_variants_compile_nvcc(tmp_path):
    """Every variant compiles for sm_90a with nvcc (skipped without nvcc); prints each
    one's registers and spills."""
    import re

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / "variants.cu"
    src.write_text(mma_variants_source())
    proc = subprocess.run(
        [
            nvcc,
            "-arch=sm_90a",
            "-std=c++17",
            "-cubin",
            "-Xptxas",
            "-v",
            "-o",
            str(tmp_path / "v.cubin"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = {}
    entry = None
    for line in proc.stderr.splitlines():
        hit = re.search(r"Compiling entry function '(\w+)'", line)
        if hit:
            entry = hit.group(1)
        hit = re.search(r"Used (\d+) registers", line)
        if hit and entry:
            report[entry] = int(hit.group(1))
    print(report)
    assert set(report) == {v.entry for v in MMA_VARIANTS}
    assert all(regs <= 255 for regs in report.values())


_HARNESS = r"""
static const pw_u32 HK[64] = {PW_SHA256_K_LIST};
extern "C" void h_leaf(const unsigned char* line, long long len, const pw_u32* prefix16,
                       int vec, unsigned char* out32) {
    pw_u32 h[8];
    pw_prefix_state(h, prefix16, HK);
    pw_hash_line_tail(h, line, len, vec, HK);
    for (int j = 0; j < 8; ++j)
        for (int q = 0; q < 4; ++q) out32[4 * j + q] = (unsigned char)(h[j] >> (24 - 8 * q));
}
extern "C" void h_parent(const pw_u32* in, int count, int i, const pw_u32* prefix16,
                         pw_u32* out8) {
    pw_merkle_parent(out8, in, count, i, prefix16, HK);
}
extern "C" void h_noise(signed char* out, const pw_u64* tmpl17, unsigned idx, int r) {
    pw_noise_line(out, tmpl17, idx, r);
}
"""


def test_commit_noise_device_code_on_host(tmp_path):
    """The __host__ __device__ hashing code of the GPU commitments and noise, compiled
    for the CPU with nvcc, against consensus (no GPU needed; skipped without nvcc)."""
    import ctypes

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / "h.cu"
    src.write_text(BASIC_SOURCE + COMMIT_NOISE_SOURCE + _HARNESS)
    lib_path = tmp_path / "libh.so"
    proc = subprocess.run(
        [nvcc, "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-o", str(lib_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.skip(f"nvcc could not build a host library: {proc.stderr[-500:]}")
    lib = ctypes.CDLL(str(lib_path))
    ptr = ctypes.c_void_p
    rng = np.random.default_rng(5)
    leaf_p = be_words(tag_prefix(TAG_MERKLE_LEAF))
    node_p = be_words(tag_prefix(TAG_MERKLE_NODE))
    for length in (0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 200, 1000, 4096):
        for vec in (0, 1):
            buf = np.zeros(length + 64, dtype=np.uint8)
            buf[:length] = rng.integers(0, 256, size=length, dtype=np.uint8)
            out = ctypes.create_string_buffer(32)
            lib.h_leaf(
                ptr(buf.ctypes.data), ctypes.c_longlong(length), ptr(leaf_p.ctypes.data), vec, out
            )
            assert out.raw == line_leaf(buf[:length].tobytes()), (length, vec)
    for count in (1, 2, 3, 5, 8):
        level = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
        words = np.frombuffer(level.tobytes(), dtype=np.uint32).copy()
        want = merkle_levels([bytes(x) for x in level], TAG_MERKLE_NODE)[1:2] or [[]]
        want = want[0] if count > 1 else [bytes(level[0])]
        for i in range((count + 1) // 2):
            got = np.zeros(8, dtype=np.uint32)
            lib.h_parent(
                ptr(words.ctypes.data), count, i, ptr(node_p.ctypes.data), ptr(got.ctypes.data)
            )
            assert got.tobytes() == want[i], (count, i)
    seed = rng.bytes(32)
    for label in (LABEL_A_LEFT, LABEL_B_RIGHT):
        tmpl = noise_template(seed, label)
        for r in (16, 32, 128, 136, 137, 300):
            for idx in (0, 1, 255, 256, 70000, 2**32 - 1):
                got = np.zeros(r, dtype=np.int8)
                lib.h_noise(ptr(got.ctypes.data), ptr(tmpl.ctypes.data), ctypes.c_uint(idx), r)
                assert np.array_equal(got, dense_noise_lines(seed, label, [idx], r)[0])


# ---------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------


def _require_gpu():
    cp = pytest.importorskip("cupy")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver or no device
        pytest.skip(f"no CUDA device: {exc}")
    if count < 1:
        pytest.skip("no CUDA device")
    return cp


@pytest.fixture(scope="module")
def gpu_engine():
    _require_gpu()
    engine = CupyEngine()
    engine.prepare()
    return engine


@pytest.mark.gpu
def test_gpu_self_test(gpu_engine):
    result = gpu_engine.prepare()
    print(result)
    assert result["plain"], result
    assert result["tickets"], result
    # At least one tensor-core variant compiled and agrees with the reference.
    assert result.get("wmma") or result.get("wmma_ptx"), result
    fast = ("wmma", "wmma_ptx", *gpu_engine.passed_mma_kernels())
    assert gpu_engine.kernel_for(32) in fast
    assert gpu_engine.kernel_for(128) in fast
    assert gpu_engine.kernel_for(16) in ("wmma", "wmma_ptx")
    assert gpu_engine.kernel_for(8) == "plain"


@pytest.mark.gpu
def test_gpu_self_test_new_paths(gpu_engine):
    """The mma.sync kernel and the GPU commitments / noise compiled and passed."""
    result = gpu_engine.prepare()
    assert result.get("mma"), {k: v for k, v in result.items() if "mma" in k}
    assert result.get("commit"), result
    assert result.get("noise"), result
    assert gpu_engine.kernel_for(32) in gpu_engine.passed_mma_kernels()
    assert gpu_engine.gpu_commit and gpu_engine.gpu_noise


@pytest.mark.gpu
def test_gpu_autotune_choice(gpu_engine):
    """prepare() timed the passing mma kernels for r = 128 and kernel_for() returns the
    fastest; another engine on the device reuses the choice."""
    result = gpu_engine.prepare()
    print({k: v for k, v in result.items() if "variant" in k or "autotune" in k})
    passed = gpu_engine.passed_mma_kernels()
    assert "mma" in passed, result
    choice = result["kernel_r128"]
    times = result["autotune_r128"]
    assert choice in passed
    if len(passed) > 1:  # timed (a single candidate is taken untimed)
        assert set(times) <= set(passed) and choice == min(times, key=lambda x: times[x])
    assert gpu_engine.kernel_for(128) == choice
    other = CupyEngine()
    assert other.kernel_for(128) == choice
    assert CupyEngine(autotune=False).kernel_for(128) == "mma"


SHAPES = [
    (64, 128, 64, 32),  # multiples of nothing in particular
    (136, 96, 200, 32),  # M, N padded to 256, k padded to 128 (k-tile 64)
    (128, 256, 128, 128),  # exact multiples
    (8, 128, 24, 128),  # one tile row
    (256, 384, 136, 128),
]


@pytest.mark.gpu
@pytest.mark.parametrize("m,k,n,r", SHAPES)
def test_gpu_matches_reference(gpu_engine, m, k, n, r):
    params = _params(r)
    a, b = _operands(m, k, n, seed=m * 7 + n)
    _check_against_reference(gpu_engine, params, a, b, _template(params, k))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["min", "max", "mixed"])
@pytest.mark.parametrize("r", [32, 128])
def test_gpu_adversarial_operands(gpu_engine, kind, r):
    params = _params(r)
    a, b = _operands(72, 4 * r, 136, seed=0, kind=kind)
    _check_against_reference(gpu_engine, params, a, b, _template(params, 4 * r))


@pytest.mark.gpu
def test_gpu_odd_tiles_and_small_rank():
    _require_gpu()
    # r = 8 is below the WMMA step: the plain kernel must take over.
    params = _params(8, 4, 16)
    a, b = _operands(40, 64, 48, seed=11)
    engine = CupyEngine()
    assert engine.kernel_for(8) == "plain"
    _check_against_reference(engine, params, a, b, _template(params, 64))


def _compiled_wmma() -> list[str]:
    """Tensor-core kernels that compiled and passed the self-test (a variant that fails
    it is never used; the self-test output lists it under variants_failed)."""
    engine = CupyEngine()
    result = engine.prepare()
    return [k for k in engine.backend.kernels.compiled if k != "plain" and result.get(k)]


@pytest.mark.gpu
@pytest.mark.parametrize("r", [32, 128])
def test_gpu_wmma_equals_plain(r):
    _require_gpu()
    params = _params(r)
    a, b = _operands(200, 2 * r, 136, seed=r)
    tmpl = _template(params, 2 * r)
    results = {}
    for kernel in ["plain", *_compiled_wmma()]:
        tickets: list[bytes] = []
        out = CupyEngine(kernel=kernel).mine(params, a, b, tmpl, tickets_out=tickets)
        results[kernel] = (out, tickets)
    assert len(results) >= 2, "no WMMA kernel compiled"
    p_out, p_tickets = results["plain"]
    for kernel, (out, tickets) in results.items():
        assert np.array_equal(out.product, p_out.product), kernel
        assert tickets == p_tickets and out.seals == p_out.seals, kernel


@pytest.mark.gpu
def test_gpu_transcript_device_all_kernels_large_k():
    cp = _require_gpu()
    from consensus.transcript import fold_transcript

    engine = CupyEngine()
    rng = np.random.default_rng(9)
    m, k, n, r = 256, 1024, 128, 128
    an = rng.integers(-127, 127, size=(m, k), dtype=np.int8)
    bn = rng.integers(-127, 127, size=(n, k), dtype=np.int8)
    ap, btp = engine.pad_operands(cp.asarray(an), cp.asarray(bn))
    ref_c, ref_s = fold_transcript(an.astype(np.int64), bn.T.astype(np.int64), r)
    for kernel in ["plain", *_compiled_wmma()]:
        c, s, _ = engine.transcript_device(ap, btp, k, r, kernel=kernel)
        assert np.array_equal(cp.asnumpy(c), ref_c), kernel
        assert np.array_equal(cp.asnumpy(s).view(np.uint32), ref_s), kernel


@pytest.mark.gpu
def test_gpu_host_tickets_path():
    _require_gpu()
    params = _params(32)
    a, b = _operands(64, 64, 64, seed=21)
    _check_against_reference(CupyEngine(gpu_tickets=False), params, a, b, _template(params, 64))


@pytest.mark.gpu
def test_gpu_every_tile_wins_and_none_wins(gpu_engine):
    params = _params(32)
    a, b = _operands(16, 64, 16, seed=2)
    _check_against_reference(gpu_engine, params, a, b, FixedTemplate(PREFIX, 1 << 250))
    _check_against_reference(gpu_engine, params, a, b, FixedTemplate(PREFIX, 1))


@pytest.mark.gpu
def test_gpu_matches_numpy_engine(gpu_engine):
    try:
        from compute.numpy_engine import NumpyEngine
    except Exception as exc:  # noqa: BLE001 - numba missing, engine not there yet
        pytest.skip(f"NumpyEngine unavailable: {exc}")
    params = _params(32)
    m, k, n = 136, 96, 64
    a, b = _operands(m, k, n, seed=4)
    tmpl = _template(params, k)
    t_cpu: list[bytes] = []
    t_gpu: list[bytes] = []
    cpu = NumpyEngine().mine(params, a, b, tmpl, None, t_cpu)
    gpu = gpu_engine.mine(params, a, b, tmpl, None, t_gpu)
    assert np.array_equal(cpu.product, gpu.product)
    assert t_cpu == t_gpu
    assert cpu.seals == gpu.seals


@pytest.mark.gpu
def test_gpu_stop(gpu_engine):
    _require_gpu()
    params = _params(32)
    m, k, n = 4 * BLOCK_M, 128, 128
    a, b = _operands(m, k, n, seed=8)
    tmpl = _template(params, k)
    engine = CupyEngine(chunk_multiply_adds=1)  # one block row per launch
    engine.prepare()
    # Set before the start: nothing is computed.
    stop = threading.Event()
    stop.set()
    out = engine.mine(params, a, b, tmpl, stop)
    assert out.stopped and out.product is None and out.seals == []
    # Set mid-way, product kept: exact product, no seals, no tickets.
    tickets: list[bytes] = []
    out = engine.mine(params, a, b, tmpl, CountingStop(2), tickets, keep_product_on_stop=True)
    ref = mine_reference(params, out.work, a, b)
    assert out.stopped and out.seals == [] and tickets == []
    assert np.array_equal(out.product, ref.product)
    # Set mid-way, product dropped.
    out = engine.mine(params, a, b, tmpl, CountingStop(2))
    assert out.stopped and out.product is None


@pytest.mark.gpu
def test_gpu_baselines():
    cp = _require_gpu()
    from compute.cublas_baselines import half_gemm_baseline, int8_gemm_baseline

    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(96, 256), dtype=np.int8)
    b = rng.integers(-128, 128, size=(256, 64), dtype=np.int8)
    c = cp.asnumpy(int8_gemm_baseline(a, b))
    assert c.dtype == np.int32
    assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    small_a = rng.integers(-4, 4, size=(64, 64), dtype=np.int8)
    small_b = rng.integers(-4, 4, size=(64, 32), dtype=np.int8)
    h = cp.asnumpy(half_gemm_baseline(small_a, small_b)).astype(np.int64)
    assert np.array_equal(h, small_a.astype(np.int64) @ small_b.astype(np.int64))


# -- the mma.sync kernel, the GPU commitments and noise lines ----------------------


MMA_SHAPES = [
    (128, 128, 128, 32),
    (136, 96, 200, 32),  # partial tiles in M and N, k padded 96 -> 128
    (8, 256, 24, 128),
    (300, 640, 260, 128),  # 10 k-stages (> pipeline depth), partial tiles
    (257, 1056, 131, 32),  # k = 33 r-steps, odd k-tile count
]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["random", "min", "max", "mixed"])
@pytest.mark.parametrize("m,k,n,r", MMA_SHAPES)
def test_gpu_mma_transcript_exact(m, k, n, r, kind):
    cp = _require_gpu()
    from consensus.transcript import fold_transcript

    engine = CupyEngine()
    engine.prepare()
    if "mma" not in engine.backend.kernels.compiled:
        pytest.fail(f"mma kernel did not compile: {engine.backend.kernels.wmma_errors}")
    rng = np.random.default_rng(m + k + n)
    if kind == "random":
        an = rng.integers(-127, 127, size=(m, k), dtype=np.int8)
        bn = rng.integers(-127, 127, size=(n, k), dtype=np.int8)
    else:
        va, vb = {"min": (-127, -127), "max": (126, 126), "mixed": (-127, 126)}[kind]
        an = np.full((m, k), va, dtype=np.int8)
        bn = np.full((n, k), vb, dtype=np.int8)
    ap, btp = engine.pad_operands(cp.asarray(an), cp.asarray(bn))
    ref_c, ref_s = fold_transcript(an.astype(np.int64), bn.T.astype(np.int64), r)
    kernels = engine.passed_mma_kernels()  # "mma", the tuned choice, every variant
    assert "mma" in kernels and engine.kernel_for(r) in kernels
    for kernel in kernels:
        c, s, _ = engine.transcript_device(ap, btp, k, r, kernel=kernel)
        assert np.array_equal(cp.asnumpy(c[:m, :n]), ref_c), kernel
        assert np.array_equal(cp.asnumpy(s[:m, :n]).view(np.uint32), ref_s), kernel
        # Padding stays zero in C' (zero rows / columns).
        assert int(cp.abs(c[m:]).sum()) == 0 and int(cp.abs(c[:, n:]).sum()) == 0, kernel
        # Without the fold: the same product, states zero.
        c0, s0, _ = engine.transcript_device(ap, btp, k, r, fold=False, kernel=kernel)
        assert bool((c0 == c).all()) and int(cp.abs(s0).sum()) == 0, kernel


@pytest.mark.gpu
def test_gpu_mma_equals_plain_large():
    cp = _require_gpu()
    engine = CupyEngine()
    engine.prepare()
    rng = np.random.default_rng(21)
    m, k, n = 1024, 4096, 640
    an = rng.integers(-127, 127, size=(m, k), dtype=np.int8)
    bn = rng.integers(-127, 127, size=(n, k), dtype=np.int8)
    ap, btp = engine.pad_operands(cp.asarray(an), cp.asarray(bn))
    for r in (32, 128):
        c2, s2, _ = engine.transcript_device(ap, btp, k, r, kernel="plain")
        for kernel in engine.passed_mma_kernels():
            c1, s1, _ = engine.transcript_device(ap, btp, k, r, kernel=kernel)
            assert bool((c1 == c2).all()) and bool((s1 == s2).all()), (r, kernel)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "rows,width", [(1, 64), (2, 1), (3, 100), (8, 128), (37, 63), (255, 1000), (1000, 4096)]
)
def test_gpu_commitments_match_consensus(gpu_engine, rows, width):
    cp = _require_gpu()
    kern = gpu_engine.backend.kernels
    rng = np.random.default_rng(rows * width)
    mat = rng.integers(-64, 64, size=(rows, width), dtype=np.int8)
    leaf_p = cp.asarray(be_words(tag_prefix(TAG_MERKLE_LEAF)))
    node_p = cp.asarray(be_words(tag_prefix(TAG_MERKLE_NODE)))
    leaves = kern.line_leaves(cp.asarray(mat), leaf_p)
    levels = split_levels(cp.asnumpy(kern.merkle_tree(leaves, node_p)), rows)
    assert levels == row_tree(mat)
    # Columns of B through a device transpose, as mine() does.
    b = rng.integers(-64, 64, size=(width, rows), dtype=np.int8)
    bt = cp.ascontiguousarray(cp.asarray(b).T)
    levels = split_levels(cp.asnumpy(kern.merkle_tree(kern.line_leaves(bt, leaf_p), node_p)), rows)
    assert levels == row_tree(b.T)
    assert levels[-1][0] == commit_cols(b)


@pytest.mark.gpu
@pytest.mark.parametrize("r", [16, 32, 128, 256])
def test_gpu_noise_lines_match_consensus(gpu_engine, r):
    cp = _require_gpu()
    kern = gpu_engine.backend.kernels
    rng = np.random.default_rng(r)
    seed = rng.bytes(32)
    for label in (LABEL_A_LEFT, LABEL_B_RIGHT):
        got = cp.asnumpy(kern.noise_lines(cp.asarray(noise_template(seed, label)), 0, 777, r))
        assert np.array_equal(got, dense_noise_lines(seed, label, range(777), r))


@pytest.mark.gpu
@pytest.mark.parametrize("r", [32, 128])
def test_gpu_new_paths_equal_host_paths(r):
    """mma + GPU commitments + GPU noise against plain/WMMA + host commitments + host
    noise: same statement, product, tickets and seals."""
    _require_gpu()
    params = _params(r)
    m, k, n = 264, 4 * r, 200
    a, b = _operands(m, k, n, seed=r + 1)
    tmpl = _template(params, k)
    fast = CupyEngine()
    slow = CupyEngine(kernel="plain", gpu_commit=False, gpu_noise=False)
    t_fast: list[bytes] = []
    t_slow: list[bytes] = []
    out_f = fast.mine(params, a, b, tmpl, None, t_fast)
    out_s = slow.mine(params, a, b, tmpl, None, t_slow)
    assert fast.gpu_commit and fast.gpu_noise and fast.kernel_for(r).startswith("mma")
    assert out_f.work == out_s.work
    assert np.array_equal(out_f.product, out_s.product)
    assert t_fast == t_slow and out_f.seals == out_s.seals
    ref = mine_reference(params, out_f.work, a, b)
    assert np.array_equal(out_f.product, ref.product) and out_f.seals == ref.seals


def test_the_engine_runs_the_self_test_of_its_mixin() -> None:
    """CupyEngine is assembled from mixins (compute/cupy_tuning.py, cupy_self_test.py):
    prepare() on a GPU calls self.self_test(), which must be the real one."""
    from compute.cupy_self_test import SelfTest

    assert CupyEngine.self_test is SelfTest.self_test


@pytest.mark.slow
def test_self_test_passes_on_the_numpy_mirror() -> None:
    """The whole self-test (every kernel and variant against the references) on
    HostBackend: about 25 s on 2 cores."""
    got = CupyEngine(backend=HostBackend()).self_test()
    flags = {k: v for k, v in got.items() if isinstance(v, bool)}
    assert flags and all(flags.values()), flags
