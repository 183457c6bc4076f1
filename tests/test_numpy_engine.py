"""The CPU engine (compute/numpy_engine.py) against the reference, bit for bit.

Tickets, seals and products must equal consensus/pouw.py for every shape, tile and
target; the helpers it is built from (multi-lane SHA-256 and SHAKE-256, the byte
transpose, the exact chunking of noise removal) are checked against consensus/ and
hashlib on their own. Shapes are small so that the int64 reference stays fast.
"""

from __future__ import annotations

import hashlib
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import fasthash, int_tile, kernels
from compute.cpu_operands import transpose_into
from compute.engine import FixedTemplate
from compute.freivalds import freivalds_check, prepare_check
from compute.numpy_engine import (
    FLOAT32_EXACT,
    NumpyEngine,
    exact_chunks,
    plan_removal,
)
from compute.select import gpu_usable, select_engine
from consensus.commitments import commit_cols, commit_rows, row_leaves, row_tree
from consensus.noise import LABEL_B_PATTERN, dense_noise_lines, sparse_pattern
from consensus.params import PouwParams
from consensus.pouw import mine_reference
from consensus.seal import WorkStatement, verify_seal
from tests.pouwutil import engine_params

PREFIX = bytes(range(32))
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _params(r: int, h: int = 8, w: int = 8) -> PouwParams:
    return engine_params(r, h, w, k_max=16384)


def _template(params: PouwParams, k: int, win_bits: int = 1, prefix: bytes = PREFIX):
    """A target at which about 2^-win_bits of the tiles win."""
    per = params.tile_rows * params.tile_cols * k
    return FixedTemplate(prefix, max(1, (1 << (256 - win_bits)) // per))


def _random(m: int, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(-64, 64, size=(m, k), dtype=np.int8),
        rng.integers(-64, 64, size=(k, n), dtype=np.int8),
    )


# Small blocks so that even tiny products cross block (and edge-block) boundaries.
SMALL_BLOCKS = NumpyEngine(block_rows=16, block_cols=24)
DEFAULT = NumpyEngine()
NO_BLAS = NumpyEngine(use_blas=False, block_rows=16, block_cols=16)
ONE_THREAD = NumpyEngine(threads=1, block_rows=24, block_cols=8)
# float32 sgemm even where an integer path is available
SGEMM = NumpyEngine(cpu_path="sgemm", block_rows=16, block_cols=24)
ENGINES = {
    "small-blocks": SMALL_BLOCKS,
    "default": DEFAULT,
    "np.matmul": NO_BLAS,
    "one-thread": ONE_THREAD,
    "sgemm": SGEMM,
}
# Every other integer form this CPU runs (an AVX-512 VNNI machine also runs the AVX2
# int16 form): each is held to the reference too, not only the one auto picks.
for _isa in int_tile.ISAS:
    if _isa.path != DEFAULT.path and int_tile.find_int_tile(_isa.path) is not None:
        ENGINES[_isa.path] = NumpyEngine(cpu_path=_isa.path, block_rows=24, block_cols=32)


def _check(engine, params, a, b, template) -> None:
    tickets: list[bytes] = []
    out = engine.mine(params, a, b, template, tickets_out=tickets)
    (m, k), n = a.shape, b.shape[1]
    assert out.work == template.statement(m, k, n, commit_rows(a), commit_cols(b))
    ref = mine_reference(params, out.work, a, b)
    assert not out.stopped
    assert out.product is not None and out.product.dtype == np.int32
    assert np.array_equal(out.product, ref.product)
    assert tickets == ref.tickets
    assert out.seals == ref.seals
    assert out.stats.tickets == len(ref.tickets)
    assert out.stats.multiply_adds == m * n * k
    for seal in out.seals:
        assert verify_seal(params, out.work, seal).ok


# --- against the reference -----------------------------------------------------------


@pytest.mark.parametrize("engine", list(ENGINES.values()), ids=list(ENGINES))
@pytest.mark.parametrize(
    ("r", "h", "w", "m", "k", "n"),
    [
        (32, 8, 8, 32, 128, 48),
        (32, 4, 8, 36, 96, 40),
        (128, 8, 8, 24, 256, 16),
        (128, 4, 8, 20, 384, 24),
    ],
)
def test_matches_reference(engine, r, h, w, m, k, n) -> None:
    params = _params(r, h, w)
    a, b = _random(m, k, n, seed=m + k + n)
    _check(engine, params, a, b, _template(params, k, win_bits=1))


@pytest.mark.parametrize("win_bits", [0, 3, 300])
def test_targets_every_none_some(win_bits: int) -> None:
    """Every tile wins (target * h * w * k >= 2^256), about 1/8 win, none win."""
    params = _params(32)
    a, b = _random(32, 64, 32, seed=win_bits)
    per = 8 * 8 * 64
    if win_bits == 0:
        target = 1 << 256
    elif win_bits == 300:
        target = 1
    else:
        target = (1 << (256 - win_bits)) // per
    _check(SMALL_BLOCKS, params, a, b, FixedTemplate(PREFIX, target))


@pytest.mark.parametrize("kind", ["min", "max", "mixed", "zeros", "one-hot"])
def test_adversarial_operands(kind: str) -> None:
    params = _params(32)
    m, k, n = 16, 256, 24
    if kind == "min":
        a, b = np.full((m, k), -64, np.int8), np.full((k, n), -64, np.int8)
    elif kind == "max":
        a, b = np.full((m, k), 63, np.int8), np.full((k, n), 63, np.int8)
    elif kind == "mixed":
        a, b = np.full((m, k), -64, np.int8), np.full((k, n), 63, np.int8)
    elif kind == "zeros":
        a, b = np.zeros((m, k), np.int8), np.zeros((k, n), np.int8)
    else:
        a = np.zeros((m, k), np.int8)
        a[np.arange(m), np.arange(m) * 7 % k] = -64
        b = np.zeros((k, n), np.int8)
        b[np.arange(k), np.arange(k) % n] = 63
    _check(SMALL_BLOCKS, params, a, b, _template(params, k))


@st.composite
def _products(draw):
    r = draw(st.sampled_from([2, 8, 32]))
    h, w = draw(st.sampled_from([(8, 8), (4, 8), (1, 2)]))
    m = h * draw(st.integers(1, 5))
    n = w * draw(st.integers(1, 5))
    k = r * draw(st.integers(1, max(1, 256 // r)))
    fill = draw(st.sampled_from(["random", "min", "max", "signs", "sparse"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if fill == "random":
        a = rng.integers(-64, 64, (m, k), dtype=np.int8)
        b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    elif fill == "min":
        a, b = np.full((m, k), -64, np.int8), np.full((k, n), -64, np.int8)
    elif fill == "max":
        a, b = np.full((m, k), 63, np.int8), np.full((k, n), 63, np.int8)
    elif fill == "signs":
        a = np.where(rng.random((m, k)) < 0.5, -64, 63).astype(np.int8)
        b = np.where(rng.random((k, n)) < 0.5, -64, 63).astype(np.int8)
    else:
        a = np.where(rng.random((m, k)) < 0.05, -64, 0).astype(np.int8)
        b = np.where(rng.random((k, n)) < 0.05, 63, 0).astype(np.int8)
    return _params(r, h, w), a, b


@SETTINGS
@given(_products())
def test_product_is_exact(case) -> None:
    params, a, b = case
    for engine in (SMALL_BLOCKS, SGEMM):
        out = engine.mine(params, a, b, _template(params, a.shape[1], win_bits=8))
        assert out.product is not None
        assert np.array_equal(out.product, a.astype(np.int64) @ b.astype(np.int64))
        for seal in out.seals:
            assert verify_seal(params, out.work, seal).ok


# --- stop ------------------------------------------------------------------------------


def test_stop_before_start_drops_product() -> None:
    params = _params(32)
    a, b = _random(32, 256, 32, seed=1)
    stop = threading.Event()
    stop.set()
    tickets: list[bytes] = []
    out = SMALL_BLOCKS.mine(params, a, b, _template(params, 256), stop, tickets)
    assert out.stopped and out.product is None and out.seals == [] and tickets == []


@pytest.mark.parametrize(
    "engine", [SMALL_BLOCKS, SGEMM, NO_BLAS], ids=["default", "sgemm", "np.matmul"]
)
def test_stop_keeps_product_when_asked(engine) -> None:
    params = _params(32)
    a, b = _random(32, 256, 32, seed=2)
    stop = threading.Event()
    stop.set()
    out = engine.mine(params, a, b, _template(params, 256, 0), stop, keep_product_on_stop=True)
    assert out.stopped and out.seals == []
    assert out.product is not None
    assert np.array_equal(out.product, a.astype(np.int64) @ b.astype(np.int64))


class _StopAfter(threading.Event):
    """Reports a stop on the ``calls``-th poll (the engine polls every few ms)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def wait(self, timeout: float | None = None) -> bool:
        self.calls -= 1
        if self.calls <= 0:
            self.set()
        return super().wait(timeout)


def test_stop_mid_way() -> None:
    params = _params(2)
    m, k, n = 64, 4096, 64  # 2048 steps: long enough to be caught mid-way
    a, b = _random(m, k, n, seed=3)
    engine = NumpyEngine(block_rows=8, block_cols=8)
    out = engine.mine(params, a, b, _template(params, k, 0), _StopAfter(2), None, True)
    assert out.product is not None
    assert np.array_equal(out.product, a.astype(np.int64) @ b.astype(np.int64))
    if out.stopped:
        assert out.seals == []
    out = engine.mine(params, a, b, _template(params, k, 0), _StopAfter(2))
    if out.stopped:
        assert out.product is None and out.seals == []


# --- exactness of noise removal ---------------------------------------------------------


def test_exact_chunks_bound() -> None:
    left = np.array([1000, 2000, 3000, 10, 10], np.int64)
    right = np.array([4000, 4000, 4000, 32, 32], np.int64)
    chunks = exact_chunks(left, right, FLOAT32_EXACT)
    assert chunks is not None
    for p0, p1 in zip(chunks[:-1], chunks[1:], strict=True):
        assert p1 > p0
        assert int(np.sum(left[p0:p1] * right[p0:p1])) <= FLOAT32_EXACT
    assert chunks[0] == 0 and chunks[-1] == 5
    assert exact_chunks(np.array([1 << 12]), np.array([1 << 12]), FLOAT32_EXACT) is not None
    assert exact_chunks(np.array([1 << 12]), np.array([(1 << 12) + 1]), FLOAT32_EXACT) is None


def _adversarial_for_x(params: PouwParams, b: np.ndarray, prefix: bytes, m: int) -> np.ndarray:
    """A whose X = A . E_BL is as large as possible: the pattern of E_BL depends only on
    B and the header (sigma_B), so A can be chosen after it."""
    k = b.shape[0]
    work = WorkStatement(prefix, m, k, b.shape[1], bytes(32), commit_cols(b), 1)
    _, sigma_b = work.seeds()
    plus, minus = sparse_pattern(sigma_b, LABEL_B_PATTERN, k, params.noise_rank)
    a = np.zeros((m, k), np.int8)
    for i in range(m):
        q = i % params.noise_rank
        a[i, plus == q] = 63
        a[i, minus == q] = -64
    return a


def test_removal_chunks_shrink_for_adversarial_data_and_stay_exact() -> None:
    params = _params(32)
    m, k, n = 32, 4096, 16
    a_rand, b = _random(m, k, n, seed=5)
    a_adv = _adversarial_for_x(params, b, PREFIX, m)
    plans = {}
    for name, a in (("random", a_rand), ("adversarial", a_adv)):
        engine = NumpyEngine(block_rows=16, block_cols=16)
        captured = {}
        original = engine._noisy_operands

        def spy(*args, original=original, captured=captured):
            plan = original(*args)
            captured["plan"] = plan
            return plan

        engine._noisy_operands = spy
        out = engine.mine(params, a, b, _template(params, k, 8))
        assert np.array_equal(out.product, a.astype(np.int64) @ b.astype(np.int64))
        plans[name] = captured["plan"]
    assert plans["adversarial"].dtype is np.float32
    assert len(plans["adversarial"].chunks) > len(plans["random"].chunks)
    x_max = int(np.abs(plans["adversarial"].left_t[: params.noise_rank]).max())
    assert x_max > 100 * 64  # the construction did make X large


def test_removal_falls_back_to_float64_when_float32_cannot_be_exact() -> None:
    """r = 2: X = A . E_BL sums +-A over all of k; at k = 16384 one index alone is
    over 2^24 times max|E_BR|, so no float32 chunk can be exact."""
    params = _params(2, 8, 8)
    m, k, n = 8, 16384, 8
    rng = np.random.default_rng(6)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    a = _adversarial_for_x(params, b, PREFIX, m)
    engine = NumpyEngine(block_rows=8, block_cols=8)
    captured = {}
    original = engine._noisy_operands

    def spy(*args):
        captured["plan"] = original(*args)
        return captured["plan"]

    engine._noisy_operands = spy
    tickets: list[bytes] = []
    template = _template(params, k, 0)
    out = engine.mine(params, a, b, template, tickets_out=tickets)
    assert captured["plan"].dtype is np.float64
    assert np.array_equal(out.product, a.astype(np.int64) @ b.astype(np.int64))
    ref = mine_reference(params, out.work, a, b)
    assert tickets == ref.tickets and out.seals == ref.seals


def test_plan_removal_is_exact_in_float() -> None:
    rng = np.random.default_rng(7)
    r, m, n = 16, 24, 40
    x_t = rng.integers(-(1 << 17), 1 << 17, (r, m)).astype(np.int32)
    e_al_t = rng.integers(-32, 32, (r, m)).astype(np.int8)
    e_br = rng.integers(-32, 32, (r, n)).astype(np.int8)
    y = rng.integers(-(1 << 17), 1 << 17, (r, n)).astype(np.int32)
    plan = plan_removal(x_t, e_al_t, e_br, y)
    exact = x_t.T.astype(np.int64) @ e_br.astype(np.int64) + e_al_t.T.astype(np.int64) @ y.astype(
        np.int64
    )
    total = np.zeros((m, n), np.int64)
    for p0, p1 in zip(plan.chunks[:-1], plan.chunks[1:], strict=True):
        part = plan.left_t[p0:p1].T @ plan.right[p0:p1]
        assert np.abs(part).max() <= FLOAT32_EXACT
        total += part.astype(np.int64)
    assert np.array_equal(total, exact)


# --- the building blocks against consensus/ and hashlib ------------------------------


def test_generated_modules_are_current() -> None:
    from compute import gen_lanes

    for target, make in gen_lanes.OUTPUTS:
        assert target.read_text() == make(), f"{target.name} is stale: python -m compute.gen_lanes"


@pytest.mark.parametrize("length", [1, 3, 55, 56, 63, 64, 119, 120, 200, 1000])
def test_lane_sha256_matches_hashlib(length: int) -> None:
    rng = np.random.default_rng(length)
    lines = rng.integers(-128, 128, (70, length), dtype=np.int8)
    out = np.empty((70, 8), np.uint32)
    fasthash.leaf_words(np.ascontiguousarray(lines.T), True, fasthash.LEAF_MIDSTATE, out, 0, 70)
    assert fasthash.words_to_digests(out) == row_leaves(lines)


@pytest.mark.parametrize(("m", "k"), [(1, 2), (3, 6), (5, 62), (64, 64), (65, 130), (130, 512)])
def test_trees_match_consensus(m: int, k: int) -> None:
    a = np.random.default_rng(m * k).integers(-64, 64, (m, k), dtype=np.int8)
    rows = np.empty((m, 8), np.uint32)
    fasthash.leaf_words(a, False, fasthash.LEAF_MIDSTATE, rows, 0, m)
    cols = np.empty((m, 8), np.uint32)
    fasthash.leaf_words(np.ascontiguousarray(a.T), True, fasthash.LEAF_MIDSTATE, cols, 0, m)
    tree = fasthash.WordTree(fasthash.merkle_levels(cols))
    assert np.array_equal(rows, cols)
    assert tree.byte_levels() == row_tree(a)
    assert tree.root == commit_rows(a)


@pytest.mark.parametrize("r", [2, 32, 128, 136, 200, 1024])
def test_bulk_shake_matches_consensus(r: int) -> None:
    seed = hashlib.sha256(bytes([r % 256])).digest()
    for count in (1, 63, 65):
        got = fasthash.dense_lines_t(seed, 2, count, r)
        assert np.array_equal(got, dense_noise_lines(seed, 2, range(count), r).T)


def test_block_tickets_match_consensus() -> None:
    tag = hashlib.sha256(b"pouw/ticket").digest()
    block = tag + tag
    rng = np.random.default_rng(9)
    state = rng.integers(0, 2**32, (16, 24), dtype=np.uint32)
    sigma = bytes(range(32, 64))
    digests = np.zeros((16 // 8 * 24 // 8 * 4, 8), np.uint32)
    buf, msg = kernels.new_hash_scratch(8, 8)
    sigma_words = np.frombuffer(sigma, ">u4").astype(np.uint32)
    midstate = fasthash.sha256_midstate(block)
    kernels.hash_tiles(state, 8, 8, 8, 8, 6, sigma_words, midstate, digests, buf, msg)
    from consensus.transcript import ticket

    for ti in range(2):
        for tj in range(3):
            t = (1 + ti) * 6 + 1 + tj
            expect = ticket(sigma, t, state[ti * 8 : ti * 8 + 8, tj * 8 : tj * 8 + 8])
            assert fasthash.digest_bytes(digests[t]) == expect


@pytest.mark.parametrize(("rows", "cols"), [(8, 8), (16, 64), (72, 40), (6, 10)])
def test_transpose(rows: int, cols: int) -> None:
    x = np.random.default_rng(rows).integers(-128, 128, (rows, cols), dtype=np.int8)
    out = np.empty((cols, rows), np.int8)
    transpose_into(DEFAULT._pool, x, out)
    assert np.array_equal(out, x.T)


# --- input checks, engine choice, Freivalds --------------------------------------------


def test_rejects_bad_operands() -> None:
    params = _params(32)
    a, b = _random(16, 64, 16, seed=8)
    template = _template(params, 64)
    bad = a.copy()
    bad[3, 5] = -65
    with pytest.raises(ValueError, match="outside"):
        DEFAULT.mine(params, bad, b, template)
    with pytest.raises(TypeError):
        DEFAULT.mine(params, a.astype(np.int16), b, template)
    with pytest.raises(ValueError):
        DEFAULT.mine(params, a[:, :48], b, template)  # inner dimensions disagree
    with pytest.raises(ValueError, match="bad-shape"):
        DEFAULT.mine(params, a[:12], b, template)  # m not a multiple of the tile
    with pytest.raises(ValueError, match="bad-k"):
        DEFAULT.mine(params, a[:, :48], b[:48], template)  # k not a multiple of r

    class Lying:
        def statement(self, m, k, n, h_a, h_b):
            return WorkStatement(PREFIX, m, k, n, bytes(32), h_b, 1)

    with pytest.raises(ValueError, match="statement"):
        DEFAULT.mine(params, a, b, Lying())


def test_select_engine(monkeypatch) -> None:
    import compute.select as select

    monkeypatch.setattr(select, "gpu_usable", lambda: (False, "no GPU in this test"))
    assert select_engine().name == "numpy"
    assert select_engine("numpy").name == "numpy"
    with pytest.raises(RuntimeError, match="no GPU in this test"):
        select_engine("cupy")
    with pytest.raises(ValueError):
        select_engine("tpu")


def test_gpu_usable_reports_why(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    ok, why = gpu_usable()
    assert not ok and "cupy" in why


def test_freivalds() -> None:
    rng = np.random.default_rng(10)
    a = rng.integers(-64, 64, (40, 70), dtype=np.int8)
    b = rng.integers(-64, 64, (70, 30), dtype=np.int8)
    c = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)
    assert freivalds_check(a, b, c, rng=np.random.default_rng(1))
    assert freivalds_check(a, b, c.astype(np.int64))
    for i, j in ((0, 0), (39, 29), (17, 3)):
        wrong = c.copy()
        wrong[i, j] += 1
        assert not freivalds_check(a, b, wrong, trials=20)
    huge = c.astype(np.int64)
    huge[1, 1] += 1 << 40
    assert not freivalds_check(a, b, huge)
    assert not freivalds_check(a, b, c[:, :29])
    assert not freivalds_check(a, b[:69], c)
    assert not freivalds_check(a, b, c.astype(np.float64))


def test_freivalds_float_and_integer_paths_agree() -> None:
    """Small entries take the BLAS path (sums exact in float), large ones the integer
    path; both accept the product and reject a one-off entry."""
    rng = np.random.default_rng(12)
    for hi in (64, 1 << 22):  # bound * n below 2^53, then above it
        a = rng.integers(-hi, hi, (24, 70), dtype=np.int64)
        b = rng.integers(-hi, hi, (70, 30), dtype=np.int64)
        c = a @ b
        assert freivalds_check(a, b, c)
        wrong = c.copy()
        wrong[5, 7] -= 1
        assert not freivalds_check(a, b, wrong, trials=24)


def test_prepared_freivalds_check_is_the_same_check_used_once() -> None:
    """A and B side done ahead (a buyer while the miner computes): the later check of C
    accepts the product, rejects a wrong entry on both paths, and refuses a second C."""
    rng = np.random.default_rng(13)
    for hi in (64, 1 << 22):
        a = rng.integers(-hi, hi, (24, 70), dtype=np.int64)
        b = rng.integers(-hi, hi, (70, 30), dtype=np.int64)
        c = a @ b
        assert prepare_check(a, b).check(c)
        wrong = c.copy()
        wrong[23, 0] += 1
        prepared = prepare_check(a, b, trials=24)
        assert not prepared.check(wrong)
        with pytest.raises(ValueError, match="used once"):
            prepared.check(c)
        assert not prepare_check(a, b).check(c[:, :29])
        assert not prepare_check(a, b).check(c.astype(np.float64))
    with pytest.raises(ValueError):
        prepare_check(a, b[:69])
    empty = prepare_check(np.zeros((3, 0), np.int8), np.zeros((0, 4), np.int8))
    assert empty.check(np.zeros((3, 4), np.int32))


def test_freivalds_on_engine_output() -> None:
    params = _params(32)
    a, b = _random(32, 128, 32, seed=11)
    out = DEFAULT.mine(params, a, b, _template(params, 128))
    assert freivalds_check(a, b, out.product)


def test_low_priority_twin_yields_the_cpu_and_mines_the_same() -> None:
    """The filler engine (node/miner.py) runs its workers at FILLER_NICE above the
    caller on Linux, and its output is bit-identical to the engine's."""
    import os

    from compute.priority import FILLER_NICE

    twin = DEFAULT.low_priority_twin()
    if sys.platform == "linux" and FILLER_NICE > 0:
        ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        theirs = twin._pool._pool.submit(  # noqa: SLF001 - the worker thread's own nice
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        ).result()
        assert theirs == min(19, ours + FILLER_NICE)
    params = _params(32)
    a, b = _random(32, 128, 32, seed=5)
    template = _template(params, 128)
    one, two = DEFAULT.mine(params, a, b, template), twin.mine(params, a, b, template)
    assert one.work == two.work and np.array_equal(one.product, two.product)
    assert one.seals == two.seals


def test_operand_leaves_given_by_the_caller_mine_the_same() -> None:
    """A market miner hands the engine the leaves it checked while downloading (rows of
    A, rows of B^T); the engine then skips hashing the operands, and its statement,
    product and seals are those it computes itself. Leaves of the wrong shape are
    refused; wrong leaves give seals that do not verify."""
    from compute.blobs import line_leaf_array

    params = _params(32)
    a, b = _random(64, 128, 32, seed=8)
    template = _template(params, 128)
    leaves = (line_leaf_array("a", a), line_leaf_array("bt", np.ascontiguousarray(b.T)))
    own, given = (
        DEFAULT.mine(params, a, b, template),
        DEFAULT.mine(params, a, b, template, operand_leaves=leaves),
    )
    assert own.seals and own.work == given.work and own.seals == given.seals
    assert np.array_equal(own.product, given.product)
    with pytest.raises(ValueError, match="operand leaves"):
        DEFAULT.mine(params, a, b, template, operand_leaves=(leaves[1], leaves[0]))
    wrong = (leaves[0][::-1].copy(), leaves[1])
    bad = DEFAULT.mine(params, a, b, template, operand_leaves=wrong)
    assert bad.work != own.work and bad.seals
    assert not verify_seal(params, bad.work, bad.seals[0]).ok


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize(
    ("r", "shape"), [(8, (40, 64, 72)), (32, (64, 128, 200)), (2, (24, 32, 40))]
)
def test_b_transposed_given_by_the_caller_mines_the_same(
    name: str, r: int, shape: tuple[int, int, int]
) -> None:
    """A market miner hands the engine B^T as downloaded: the seals slice its rows, and
    where the engine packs B' from B^T's rows (int8 path, r a multiple of 4) B itself
    may be the view b_t.T, never transposed. Statement, product, tickets and seals come
    out bit-identical to mining B (and to the reference); a B^T of the wrong shape is
    refused."""
    engine = ENGINES[name]
    params = _params(r)
    m, k, n = shape
    a, b = _random(m, k, n, seed=12 + r)
    b_t = np.ascontiguousarray(b.T)
    template = _template(params, k, win_bits=2)
    t_own: list[bytes] = []
    t_view: list[bytes] = []
    own = engine.mine(params, a, b, template, tickets_out=t_own)
    given = engine.mine(params, a, b, template, b_t=b_t)
    view = engine.mine(params, a, b_t.T, template, tickets_out=t_view, b_t=b_t)
    assert own.seals and given.work == own.work and given.seals == own.seals
    assert view.work == own.work and view.seals == own.seals and t_view == t_own
    assert np.array_equal(given.product, own.product)
    assert np.array_equal(view.product, own.product)
    assert own.seals == mine_reference(params, own.work, a, b).seals
    with pytest.raises(ValueError, match="b_t must be"):
        engine.mine(params, a, b, template, b_t=np.ascontiguousarray(b))
    with pytest.raises(TypeError, match="int8"):  # checked before any transpose
        engine.mine(params, a, b_t.T, template, b_t=b_t.astype(np.int16))
