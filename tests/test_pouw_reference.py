"""The reference PoUW (consensus/): noise removal, seal verification and seal bytes.

Noise removal must give A . B exactly; ``verify_seal`` must accept an honest seal and
reject every kind of tampering with its own reason, never raise on garbage, and cost
the same whatever m and n are (shown by counting what it computes, not by timing).
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consensus.seal as seal_module
from consensus.commitments import commit_cols, commit_rows
from consensus.merkle import MAX_BRANCH_DEPTH
from consensus.params import MAX_K, MAX_TILE_SIDE, PouwParams
from consensus.pouw import make_seal, mine_reference, noisy_operands, remove_noise
from consensus.seal import (
    Seal,
    SealDecodeError,
    SealReject,
    WorkStatement,
    verify_seal,
)
from consensus.transcript import fold_transcript, ticket, tile_grid

PREFIX = bytes(range(32))
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _params(r: int = 32, h: int = 8, w: int = 8) -> PouwParams:
    p = PouwParams(
        noise_rank=r,
        tile_rows=h,
        tile_cols=w,
        k_min=r,
        k_max=4096,
        m_max=960,  # a multiple of every tile side used here
        n_max=960,
        max_multiply_adds=1 << 30,
    )
    p.validate()
    return p


def _operands(m: int, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(-64, 64, (m, k), dtype=np.int8),
        rng.integers(-64, 64, (k, n), dtype=np.int8),
    )


def _work(a: np.ndarray, b: np.ndarray, target: int, prefix: bytes = PREFIX) -> WorkStatement:
    (m, k), n = a.shape, b.shape[1]
    return WorkStatement(prefix, m, k, n, commit_rows(a), commit_cols(b), target)


EASY = (1 << 256) - 1  # target * h * w * k far above 2^256: every tile wins


@pytest.fixture(scope="module")
def honest():
    """An honest product with every tile winning, and its seals."""
    params = _params()
    a, b = _operands(24, 64, 32, seed=1)
    work = _work(a, b, EASY)
    result = mine_reference(params, work, a, b)
    assert len(result.seals) == 3 * 4
    return params, work, a, b, result


# --- noise removal ------------------------------------------------------------------------


@st.composite
def _shapes(draw):
    r = draw(st.sampled_from([2, 4, 16, 32]))
    h, w = draw(st.sampled_from([(8, 8), (4, 8), (1, 1), (2, 3)]))
    m = h * draw(st.integers(1, 4))
    n = w * draw(st.integers(1, 4))
    k = r * draw(st.integers(1, max(1, 128 // r)))
    fill = draw(st.sampled_from(["random", "min", "max", "mixed"]))
    return r, h, w, m, k, n, fill, draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(_shapes())
def test_noise_removal_is_exact(shape) -> None:
    r, h, w, m, k, n, fill, seed = shape
    params = _params(r, h, w)
    if fill == "random":
        a, b = _operands(m, k, n, seed)
    else:
        va, vb = {"min": (-64, -64), "max": (63, 63), "mixed": (-64, 63)}[fill]
        a, b = np.full((m, k), va, np.int8), np.full((k, n), vb, np.int8)
    work = _work(a, b, 1, prefix=seed.to_bytes(4, "big") * 8)
    a_noisy, b_noisy = noisy_operands(params, work, a, b)
    assert a_noisy.min() >= -127 and a_noisy.max() <= 126
    assert b_noisy.min() >= -127 and b_noisy.max() <= 126
    c_noisy, _ = fold_transcript(a_noisy, b_noisy, r)
    assert np.array_equal(c_noisy, a_noisy @ b_noisy)
    assert np.array_equal(remove_noise(params, work, a, b, c_noisy), a.astype(np.int64) @ b)


# --- verify_seal: accept the honest, reject each tampering with its reason ----------------


def _reason(params, work, seal) -> SealReject | None:
    return verify_seal(params, work, seal).reason


def test_honest_seals_verify(honest) -> None:
    params, work, _, _, result = honest
    for seal in result.seals:
        assert verify_seal(params, work, seal).ok


def _flip(line: bytes, pos: int, value: int) -> bytes:
    raw = bytearray(line)
    raw[pos] = value & 0xFF
    return bytes(raw)


def test_changed_entries(honest) -> None:
    params, work, _, _, result = honest
    seal = result.seals[5]
    row = seal.rows[2]
    other = 10 if row[7] != 10 else 11
    changed = dataclasses.replace(seal, rows=(*seal.rows[:2], _flip(row, 7, other), *seal.rows[3:]))
    assert _reason(params, work, changed) is SealReject.BAD_ROW_BRANCH
    col = seal.cols[6]
    other = 10 if col[0] != 10 else 11
    changed = dataclasses.replace(seal, cols=(*seal.cols[:6], _flip(col, 0, other), *seal.cols[7:]))
    assert _reason(params, work, changed) is SealReject.BAD_COLUMN_BRANCH
    for bad in (64, -65, 127, -128):
        out_of_range = dataclasses.replace(seal, rows=(_flip(seal.rows[0], 3, bad), *seal.rows[1:]))
        assert _reason(params, work, out_of_range) is SealReject.ENTRY_OUT_OF_RANGE
        out_of_range = dataclasses.replace(
            seal, cols=(*seal.cols[:-1], _flip(seal.cols[-1], 0, bad))
        )
        assert _reason(params, work, out_of_range) is SealReject.ENTRY_OUT_OF_RANGE


def test_wrong_or_short_branches(honest) -> None:
    params, work, _, _, result = honest
    seal = result.seals[0]
    branch = seal.row_branches[1]
    wrong = (bytes(32), *branch[1:])
    tampered = dataclasses.replace(
        seal, row_branches=(seal.row_branches[0], wrong, *seal.row_branches[2:])
    )
    assert _reason(params, work, tampered) is SealReject.BAD_ROW_BRANCH
    short = branch[:-1]
    tampered = dataclasses.replace(
        seal, row_branches=(seal.row_branches[0], short, *seal.row_branches[2:])
    )
    assert _reason(params, work, tampered) is SealReject.BAD_ROW_BRANCH
    long = (*branch, bytes(32))
    tampered = dataclasses.replace(seal, col_branches=(long, *seal.col_branches[1:]))
    assert _reason(params, work, tampered) is SealReject.BAD_COLUMN_BRANCH
    odd_hash = (branch[0][:31], *branch[1:])
    tampered = dataclasses.replace(seal, col_branches=(*seal.col_branches[:-1], odd_hash))
    assert _reason(params, work, tampered) is SealReject.BAD_COLUMN_BRANCH


def test_wrong_tile_index(honest) -> None:
    params, work, _, _, result = honest
    grid_rows, grid_cols = tile_grid(work.m, work.n, params.tile_rows, params.tile_cols)
    seal = result.seals[5]  # tile row 1, tile column 1
    same_rows = dataclasses.replace(seal, tile_index=5 + 1)  # same rows, other columns
    assert _reason(params, work, same_rows) is SealReject.BAD_COLUMN_BRANCH
    same_cols = dataclasses.replace(seal, tile_index=5 + grid_cols)  # other rows
    assert _reason(params, work, same_cols) is SealReject.BAD_ROW_BRANCH
    for index in (grid_rows * grid_cols, 2**32 - 1, -1):
        outside = dataclasses.replace(seal, tile_index=index)
        assert _reason(params, work, outside) is SealReject.BAD_TILE_INDEX


def test_seal_moved_to_another_header(honest) -> None:
    params, work, _, _, result = honest
    for other in (
        dataclasses.replace(work, prefix_hash=bytes(32)),
        dataclasses.replace(work, target=work.target - 1),  # also binds nothing else
    ):
        reason = _reason(params, other, result.seals[3])
        if other.prefix_hash != work.prefix_hash:
            assert reason is SealReject.TICKET_MISMATCH
        else:
            assert reason is None  # the target is not part of the seeds
    forged = dataclasses.replace(result.seals[3], ticket=bytes(32))  # wins, but is not J
    assert _reason(params, work, forged) is SealReject.TICKET_MISMATCH


def test_ticket_above_target(honest) -> None:
    params, work, _, _, result = honest
    seal = result.seals[0]
    hard = dataclasses.replace(work, target=1)
    assert _reason(params, hard, seal) is SealReject.TICKET_ABOVE_TARGET
    exact = int.from_bytes(seal.ticket, "big") // (8 * 8 * work.k)
    at = dataclasses.replace(work, target=exact)  # threshold <= ticket: not below it
    assert _reason(params, at, seal) is SealReject.TICKET_ABOVE_TARGET
    above = dataclasses.replace(work, target=exact + 1)
    assert _reason(params, above, seal) is None


def test_shape_rules(honest) -> None:
    params, work, _, _, result = honest
    seal = result.seals[0]
    cases = [
        (dataclasses.replace(work, k=work.k + 1), SealReject.BAD_K),
        (dataclasses.replace(work, k=params.k_max + params.noise_rank), SealReject.BAD_K),
        (dataclasses.replace(work, k=0), SealReject.BAD_K),
        (dataclasses.replace(work, m=work.m + 1), SealReject.BAD_SHAPE),
        (dataclasses.replace(work, m=0), SealReject.BAD_SHAPE),
        (dataclasses.replace(work, n=params.n_max + params.tile_cols), SealReject.BAD_SHAPE),
        (dataclasses.replace(work, n=-8), SealReject.BAD_SHAPE),
        (
            dataclasses.replace(work, m=params.m_max, n=params.n_max, k=params.k_max),
            SealReject.TOO_MUCH_WORK,
        ),
    ]
    for statement, reason in cases:
        assert _reason(params, statement, seal) is reason


def test_malformed_sizes(honest) -> None:
    params, work, _, _, result = honest
    seal = result.seals[0]
    cases = [
        dataclasses.replace(seal, rows=seal.rows[:-1]),
        dataclasses.replace(seal, cols=(*seal.cols, seal.cols[0])),
        dataclasses.replace(seal, row_branches=seal.row_branches[:-1]),
        dataclasses.replace(seal, col_branches=(*seal.col_branches, ())),
        dataclasses.replace(seal, rows=(seal.rows[0][:-1], *seal.rows[1:])),
        dataclasses.replace(seal, cols=(*seal.cols[:-1], seal.cols[-1] + b"\x00")),
        dataclasses.replace(seal, ticket=seal.ticket[:31]),
        dataclasses.replace(seal, ticket=seal.ticket + b"\x00"),
        dataclasses.replace(seal, rows=(), cols=(), row_branches=(), col_branches=()),
    ]
    for tampered in cases:
        assert _reason(params, work, tampered) is SealReject.MALFORMED


_BYTES = st.binary(min_size=0, max_size=80)


@st.composite
def _garbage_seals(draw):
    n_rows = draw(st.integers(0, 10))
    n_cols = draw(st.integers(0, 10))
    k = draw(st.sampled_from([0, 1, 63, 64, 65]))
    line = st.one_of(st.binary(min_size=k, max_size=k), _BYTES)
    branch = st.lists(st.one_of(st.binary(min_size=32, max_size=32), _BYTES), max_size=6)
    return Seal(
        tile_index=draw(st.one_of(st.integers(0, 20), st.integers(-(2**40), 2**40))),
        rows=tuple(draw(st.lists(line, min_size=n_rows, max_size=n_rows))),
        cols=tuple(draw(st.lists(line, min_size=n_cols, max_size=n_cols))),
        row_branches=tuple(draw(st.lists(branch.map(tuple), min_size=0, max_size=10))),
        col_branches=tuple(draw(st.lists(branch.map(tuple), min_size=0, max_size=10))),
        ticket=draw(st.one_of(st.just(bytes(32)), _BYTES)),
    )


@SETTINGS
@given(_garbage_seals(), st.sampled_from([8, 16, 24]), st.sampled_from([32, 64, 96]))
def test_garbage_never_raises(seal: Seal, m: int, k: int) -> None:
    params = _params()
    work = WorkStatement(PREFIX, m, k, 16, bytes(32), bytes(32), EASY)
    check = verify_seal(params, work, seal)
    assert not check.ok and isinstance(check.reason, SealReject)


@SETTINGS
@given(st.binary(max_size=400))
def test_from_bytes_garbage(data: bytes) -> None:
    try:
        seal = Seal.from_bytes(data)
    except SealDecodeError:
        return
    assert seal.to_bytes() == data


def test_garbage_lines_with_honest_shape(honest) -> None:
    """Right sizes, random content: a clean rejection (no exception) whatever it is."""
    params, work, _, _, result = honest
    rng = np.random.default_rng(3)
    seal = result.seals[2]
    for _ in range(20):
        rows = tuple(rng.integers(-128, 128, work.k, dtype=np.int8).tobytes() for _ in seal.rows)
        tampered = dataclasses.replace(seal, rows=rows)
        assert _reason(params, work, tampered) in (
            SealReject.ENTRY_OUT_OF_RANGE,
            SealReject.BAD_ROW_BRANCH,
        )


# --- cost independent of m and n ------------------------------------------------------------


def test_verification_cost_does_not_grow_with_m_and_n(monkeypatch) -> None:
    params = _params(32, 8, 8)
    k = 64
    calls: list[tuple] = []
    real_fold = seal_module.fold_transcript
    real_rows, real_cols = seal_module.noise_a_rows, seal_module.noise_b_cols

    def fold(a_noisy, b_noisy, r):
        calls.append(("fold", a_noisy.shape, b_noisy.shape))
        return real_fold(a_noisy, b_noisy, r)

    def rows(sigma, idx, kk, r):
        calls.append(("noise_a", len(list(idx)), kk))
        return real_rows(sigma, idx, kk, r)

    def cols(sigma, idx, kk, r):
        calls.append(("noise_b", len(list(idx)), kk))
        return real_cols(sigma, idx, kk, r)

    monkeypatch.setattr(seal_module, "fold_transcript", fold)
    monkeypatch.setattr(seal_module, "noise_a_rows", rows)
    monkeypatch.setattr(seal_module, "noise_b_cols", cols)
    seen = set()
    for m, n in ((8, 8), (64, 8), (8, 128), (256, 256)):
        a, b = _operands(m, k, n, seed=m + n)
        work = _work(a, b, EASY)
        a_noisy, b_noisy = noisy_operands(params, work, a, b)
        _, state = real_fold(a_noisy, b_noisy, params.noise_rank)
        tile = (m // 8) * (n // 8) - 1  # the last tile: the longest branches
        j = ticket(work.seeds()[0], tile, state[m - 8 :, n - 8 :])
        seal = make_seal(params, work, a, b, tile, j)
        calls.clear()
        assert verify_seal(params, work, seal).ok
        seen.add(tuple(calls))
    assert seen == {
        (("noise_a", 8, k), ("noise_b", 8, k), ("fold", (8, k), (k, 8))),
    }


# --- Seal bytes ---------------------------------------------------------------------------


def test_seal_bytes_round_trip(honest) -> None:
    _, _, _, _, result = honest
    for seal in result.seals:
        raw = seal.to_bytes()
        assert Seal.from_bytes(raw) == seal
        assert Seal.from_bytes(memoryview(raw)) == seal
        depth = sum(len(b) for b in (*seal.row_branches, *seal.col_branches))
        lines = (len(seal.rows) + len(seal.cols)) * len(seal.rows[0])
        assert len(raw) == 10 + lines + len(seal.rows) + len(seal.cols) + 32 * depth + 32


def test_seal_bytes_truncated_anywhere(honest) -> None:
    _, _, _, _, result = honest
    raw = result.seals[4].to_bytes()
    for cut in range(len(raw)):
        with pytest.raises(SealDecodeError):
            Seal.from_bytes(raw[:cut])
    with pytest.raises(SealDecodeError, match="trailing"):
        Seal.from_bytes(raw + b"\x00")


def test_seal_bytes_caps() -> None:
    def head(n_rows: int, n_cols: int, k: int) -> bytes:
        return struct.pack(">IBBI", 0, n_rows, n_cols, k)

    with pytest.raises(SealDecodeError, match="lines"):
        Seal.from_bytes(head(MAX_TILE_SIDE + 1, 1, 8) + bytes(1000))
    with pytest.raises(SealDecodeError, match="lines"):
        Seal.from_bytes(head(1, 0, 8) + bytes(1000))
    with pytest.raises(SealDecodeError, match="line length"):
        Seal.from_bytes(head(1, 1, MAX_K + 1))
    with pytest.raises(SealDecodeError, match="line length"):
        Seal.from_bytes(head(1, 1, 0))
    # a branch deeper than the cap is refused before its hashes are read
    body = head(1, 1, 2) + bytes(4) + bytes([MAX_BRANCH_DEPTH + 1])
    with pytest.raises(SealDecodeError, match="depth"):
        Seal.from_bytes(body + bytes(32 * (MAX_BRANCH_DEPTH + 1)))
    with pytest.raises(SealDecodeError, match="truncated"):
        Seal.from_bytes(head(2, 2, 100) + bytes(399))
