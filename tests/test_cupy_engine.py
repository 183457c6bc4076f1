"""The CuPy engine against the reference (consensus/pouw.py) and the NumPy engine.

Tests marked ``gpu`` need CuPy and a CUDA device and skip cleanly without them
(run them with ``pytest -m gpu tests/test_cupy_engine.py``). The unmarked tests run
the engine's host-side logic everywhere, with every device kernel replaced by its
NumPy mirror (``HostBackend``): padding, noise, chunked launches, stop handling, noise
removal, ticket and seal plumbing.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from compute.cupy_engine import BLOCK_M, CupyEngine, HostBackend
from compute.engine import FixedTemplate
from consensus.commitments import commit_cols, commit_rows
from consensus.params import PouwParams
from consensus.pouw import mine_reference

PREFIX = bytes(range(32))


def _params(r: int, h: int = 8, w: int = 8) -> PouwParams:
    p = PouwParams(
        noise_rank=r,
        tile_rows=h,
        tile_cols=w,
        k_min=r,
        k_max=8192,
        m_max=4096,
        n_max=4096,
        max_multiply_adds=1 << 40,
    )
    p.validate()
    return p


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
    assert gpu_engine.kernel_for(32) in ("wmma", "wmma_ptx")
    assert gpu_engine.kernel_for(128) == gpu_engine.kernel_for(32)
    assert gpu_engine.kernel_for(8) == "plain"


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
    engine = CupyEngine()
    engine.prepare()
    return [k for k in engine.backend.kernels.compiled if k != "plain"]


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
    from compute.cupy_engine import half_gemm_baseline, int8_gemm_baseline

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
