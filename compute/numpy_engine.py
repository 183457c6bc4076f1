"""The CPU mining engine: integer dot products (int8 with AVX-512 VNNI or AVX-VNNI,
int16 with AVX2) or float32 BLAS for the products, Numba for everything per-entry.

Bit-identical to consensus/pouw.py (tests/test_numpy_engine.py holds it to that). One
``mine`` call, with one worker thread per core:

1. commit: A^T and the trees over A's rows and B's columns (compute/cpu_operands.py).
2. noise: A' and B' written once in the layout the product reads, with the sparse
   halves of noise removal (compute/cpu_operands.py).
3. transcript: C' in blocks of ``block_rows x block_cols``, each worker taking the
   next block, every r-step folded, ``state = rotl32(state, 1) ^ uint32(acc)``.

   * integer path (compute/int_tile.py and compute/int8_kernels.py; blocks about
     256 x 256): int8 where the CPU has AVX-512 VNNI or AVX-VNNI, int16 where it has
     AVX2. A' and B' (+ 128 for int8) are packed by micro-tile strips, one r-step
     after the other, in step 2. An LLVM micro-kernel keeps a tile of C' (8 x 32 for
     AVX-512, 6 x 16 on 256 bits) in registers as exact int32 over a few r-steps at
     a time and folds it in registers after each step; no conversion, no packing, no
     float group limit inside the product. Given B^T (a market miner downloads it), the int8 form
     packs B' from its rows; the int16 form reads B after the fast 8x8-block
     transpose (compute/transpose.py), which with its packing measured faster than
     packing from the rows (31 ms against 66 for 4096 x 4096 on one core).
   * sgemm path (everywhere else; blocks 512 x 256: accumulator, state and sgemm
     buffer, 1.5 MiB, stay in the 2 MiB L2): A'^T and B' as int8 column panels (one
     r-step of a panel is one contiguous run). Per r-step: single-threaded sgemm
     (float32, beta = 1, so up to 8 steps at r = 128 accumulate in the float32
     buffer, exact below 2^24), then one Numba pass over the block that adds base +
     buffer and folds it, while converting the next step's int8 slices to the
     float32 sgemm operands.

   A finished block's tiles are hashed (multi-lane SHA-256) and its noise removed
   (compute/removal.py): C = C' - [X | E_AL] . [E_BR ; Y], float32 sgemm in inner
   chunks whose bound sum(max|left| * max|right|) stays <= 2^24, so exact whatever
   the data (float64 when no float32 chunk can be exact).
4. winners: digest < target * h * w * k; seals from consensus.pouw.make_seal.

``stop`` is polled by the calling thread while the workers run and checked by them
between r-steps (between micro-kernel calls, a few steps, on the integer path); with
``keep_product_on_stop`` the rest of C is finished without the fold and returned
without seals.

Without a directly callable OpenBLAS sgemm (compute/blas.py) the sgemm plan runs with
``np.matmul(..., out=)`` per r-step from a single worker (BLAS then uses its own
threads). bench/bench_pouw.py measures the overhead against the plain product.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from compute import fasthash, kernels
from compute.blas import Blas, find_blas, single_threaded
from compute.cpu_operands import (
    Workspace,
    commit_operands,
    given_trees,
    noisy_operands,
    transpose_into,
)
from compute.cpu_transcript import Operands, run_transcript
from compute.cpu_workers import StageClock, Workers
from compute.engine import MiningOutput, MiningStats, OperandLeaves, WorkTemplate
from compute.fast_commit import line_leaf_words
from compute.int_tile import (
    AUTO,
    CPU_PATH_ENV,
    CPU_PATHS,
    SGEMM,
    IntTile,
    cpu_path_setting,
    find_int_tile,
)
from compute.priority import FILLER_NICE
from compute.removal import (  # noqa: F401 - re-exported
    FLOAT32_EXACT,
    FLOAT64_EXACT,
    RemovalPlan,
    exact_chunks,
    plan_removal,
    remove_block_numpy,
)
from compute.spread import cores
from compute.transpose import transposed
from consensus.commitments import ENTRY_MAX, ENTRY_MIN
from consensus.params import PouwParams
from consensus.pouw import make_seal
from consensus.seal import Seal, WorkStatement, check_shape
from consensus.transcript import win_threshold

log = logging.getLogger("pouw.compute")


Int8Matrix = npt.NDArray[np.int8]


class NumpyEngine:
    """Mines on the CPU; see the module docstring for the plan."""

    name = "numpy"

    def __init__(
        self,
        threads: int | None = None,
        block_rows: int | None = None,
        block_cols: int | None = None,
        use_blas: bool = True,
        cpu_path: str | None = None,
        worker_nice: int = 0,
    ) -> None:
        self.threads = threads or cores()
        self.worker_nice = worker_nice  # > 0: the worker threads yield to the rest
        self.blas: Blas | None = find_blas() if use_blas else None
        # integer products where the CPU has VNNI or AVX2 (compute/int_tile.py), else
        # sgemm; ``cpu_path`` (default $POUW_CPU_PATH, else auto) may name one form
        self.cpu_path = cpu_path_setting(cpu_path)
        self.int_tile: IntTile | None = (
            find_int_tile(self.cpu_path) if self.blas is not None else None
        )
        if self.cpu_path not in (AUTO, SGEMM) and self.int_tile is None:
            why = "on this CPU (see the log)" if self.blas is not None else "without BLAS"
            raise ValueError(
                f"CPU path {self.cpu_path} is not available {why}; "
                f"unset {CPU_PATH_ENV} or use one of {', '.join(CPU_PATHS)}"
            )
        default_rows, default_cols = (256, 256) if self.int_tile is not None else (512, 256)
        self.block_rows = block_rows or default_rows
        self.block_cols = block_cols or default_cols
        # kernels.MODE_FOLD mines; MODE_STEPS (benchmarks only) skips the fold to time it.
        self.transcript_mode = kernels.MODE_FOLD
        self._workers = Workers(self.threads if self.blas is not None else 1, worker_nice)
        self._pool = Workers(self.threads, worker_nice)
        self._spare: Workspace | None = None
        self._spare_lock = threading.Lock()

    # -- public -----------------------------------------------------------------------

    @property
    def path(self) -> str:
        """How the products are multiplied: the integer micro-kernel's form, else
        float32 sgemm, else np.matmul (no BLAS found)."""
        if self.int_tile is not None:
            return self.int_tile.isa.path
        return "sgemm" if self.blas is not None else "np.matmul"

    def low_priority_twin(self) -> NumpyEngine:
        """The same engine with worker threads at FILLER_NICE (compute/priority.py): the
        miner runs filler products on it, so that they yield the cores to everything
        else. Products are bit-identical; only the scheduling differs."""
        return NumpyEngine(
            self.threads, self.block_rows, self.block_cols, use_blas=self.blas is not None,
            cpu_path=self.cpu_path, worker_nice=FILLER_NICE,
        )  # fmt: skip

    def mine(
        self,
        params: PouwParams,
        a: npt.NDArray[np.int8],
        b: npt.NDArray[np.int8],
        template: WorkTemplate,
        stop: threading.Event | None = None,
        tickets_out: list[bytes] | None = None,
        keep_product_on_stop: bool = False,
        operand_leaves: OperandLeaves | None = None,
        b_t: npt.NDArray[np.int8] | None = None,
    ) -> MiningOutput:
        seconds: dict[str, float] = {}
        clock = StageClock(seconds)
        if b_t is not None and (b_t.shape != b.shape[::-1] or not b_t.flags.c_contiguous):
            raise ValueError(f"b_t must be B^T ({b.shape[1]}x{b.shape[0]}, C-contiguous)")
        if b_t is not None and b_t.dtype != np.int8:
            raise TypeError("operands must be int8")
        rows_only = b_t is not None and self.packs_b_from_rows(params)
        if b_t is not None and not rows_only and not b.flags.c_contiguous:
            b = transposed(b_t)  # this path reads B: the fast transpose, not NumPy's copy
        a, b = self._check_operands(params, a, b, b_t if rows_only else None)
        (m, k), n = a.shape, b.shape[1]
        r, h, w = params.noise_rank, params.tile_rows, params.tile_cols

        ws = self._workspace(m, k, n, r, h, w)
        try:
            return self._mine(
                params, a, b, template, stop, tickets_out, keep_product_on_stop, ws, clock,
                seconds, operand_leaves, b_t,
            )  # fmt: skip
        finally:
            self._release(ws)

    def _mine(
        self,
        params: PouwParams,
        a: Int8Matrix,
        b: Int8Matrix,
        template: WorkTemplate,
        stop: threading.Event | None,
        tickets_out: list[bytes] | None,
        keep_product_on_stop: bool,
        ws: Workspace,
        clock: StageClock,
        seconds: dict[str, float],
        operand_leaves: OperandLeaves | None = None,
        b_t: Int8Matrix | None = None,
    ) -> MiningOutput:
        (m, k), n = a.shape, b.shape[1]
        rows_only = b_t is not None and self.packs_b_from_rows(params)
        with clock("commit"):
            if operand_leaves is None and rows_only:  # B's columns are B^T's rows
                operand_leaves = (line_leaf_words(a), line_leaf_words(b_t))  # type: ignore[arg-type]
            if operand_leaves is None:
                row_tree, col_tree = commit_operands(self._pool, a, ws.a_t, b)
            else:  # checked by the caller: only A^T is needed
                row_tree, col_tree = given_trees(operand_leaves, m, n)
                transpose_into(self._pool, a, ws.a_t)
        work = template.statement(m, k, n, row_tree.root, col_tree.root)
        if (work.m, work.k, work.n, work.h_a, work.h_b) != (m, k, n, row_tree.root, col_tree.root):
            raise ValueError("the template's statement does not match the operands")

        bm, bn = self._block_shape(params.tile_rows, params.tile_cols)
        with clock("noise"):
            sigma_a, sigma_b = work.seeds()
            plan = self._noisy_operands(
                ws, b, b_t if rows_only else None, params.noise_rank, sigma_a, sigma_b, bm, bn
            )

        flag = np.zeros(1, np.uint8)
        product = np.empty((m, n), np.int32)
        t0 = time.perf_counter()
        folded, parts = self._transcript(
            params, ws, plan, sigma_a, product, flag, stop, keep_product_on_stop, bm, bn
        )
        seconds["transcript"] = time.perf_counter() - t0
        for key, value in parts.items():
            seconds["transcript." + key] = value

        # A stop noticed only after every block was folded changes nothing: full result.
        stopped = not folded
        stats = MiningStats(multiply_adds=m * n * k, tickets=0, seconds=seconds)
        if stopped:
            seconds["total"] = sum(v for key, v in seconds.items() if "." not in key)
            return MiningOutput(work, product if keep_product_on_stop else None, [], True, stats)

        digests = ws.digests
        with clock("winners"):
            winners = self._winners(work, params, digests)
            stats.tickets = digests.shape[0]
            if tickets_out is not None:
                raw = digests.astype(">u4").tobytes()
                tickets_out.extend(raw[i : i + 32] for i in range(0, len(raw), 32))
        with clock("seals"):
            seals = self._seals(params, work, a, b, b_t, digests, winners, row_tree, col_tree)
        seconds["total"] = sum(v for key, v in seconds.items() if "." not in key)
        return MiningOutput(work, product, seals, False, stats)

    # -- workspace: the big scratch arrays, kept for the next product of the same shape

    def _workspace(self, m: int, k: int, n: int, r: int, h: int, w: int) -> Workspace:
        key = (m, k, n, r, h, w, *self._block_shape(h, w))
        with self._spare_lock:
            ws, self._spare = self._spare, None
        if ws is not None and ws.key == key:
            return ws
        return Workspace(key, self.int_tile)

    def _release(self, ws: Workspace) -> None:
        with self._spare_lock:
            self._spare = ws

    # -- steps ------------------------------------------------------------------------

    @staticmethod
    def _check_operands(
        params: PouwParams, a: np.ndarray, b: np.ndarray, b_t: np.ndarray | None = None
    ) -> tuple[Int8Matrix, Int8Matrix]:
        """A and B checked; B made contiguous unless only ``b_t`` will be read (B may
        then be a view such as ``b_t.T``: its entries are checked in ``b_t``)."""
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
        if a.dtype != np.int8 or b.dtype != np.int8:
            raise TypeError("operands must be int8")
        m, k = a.shape
        n = b.shape[1]
        shape = check_shape(params, m, k, n)
        if not shape.ok:
            raise ValueError(f"shape {m}x{k}x{n}: {shape.reason.value if shape.reason else ''}")
        a = np.ascontiguousarray(a)
        if b_t is None:
            b = np.ascontiguousarray(b)
        for name, x in (("A", a), ("B", b if b_t is None else b_t)):
            if x.min() < ENTRY_MIN or x.max() > ENTRY_MAX:
                raise ValueError(f"{name} has entries outside [{ENTRY_MIN}, {ENTRY_MAX}]")
        return a, b

    def packs_b_from_rows(self, params: PouwParams) -> bool:
        """True when, given ``b_t``, this engine reads only B^T's rows (int8 forms, r a
        multiple of 4): the caller may then pass B as the view ``b_t.T`` and never
        transpose B (a market miner downloads B^T)."""
        tile = self.int_tile  # the int16 path packs faster from B after a fast transpose
        return tile is not None and tile.group == 4 and params.noise_rank % 4 == 0

    def _block_shape(self, h: int, w: int) -> tuple[int, int]:
        """Block rows and columns: multiples of the tile, so tiles never straddle blocks
        (and of the micro-tile on the integer path, so blocks start on packed strips)."""
        if self.int_tile is not None:
            h, w = math.lcm(h, self.int_tile.mr), math.lcm(w, self.int_tile.nr)
        return max(h, self.block_rows // h * h), max(w, self.block_cols // w * w)

    def _noisy_operands(
        self, ws: Workspace, b: Int8Matrix, b_t: Int8Matrix | None, r: int, sigma_a: bytes,
        sigma_b: bytes, bm: int, bn: int,
    ) -> RemovalPlan:  # fmt: skip
        """Step 2 on this engine's workers (a method, so that tests can watch the plan)."""
        return noisy_operands(self._pool, self.int_tile, ws, b, b_t, r, sigma_a, sigma_b, bm, bn)

    def _transcript(
        self,
        params: PouwParams,
        ws: Workspace,
        plan: RemovalPlan,
        sigma_a: bytes,
        product: np.ndarray,
        flag: np.ndarray,
        stop: threading.Event | None,
        keep: bool,
        bm: int,
        bn: int,
    ) -> tuple[bool, dict[str, float]]:
        operands = Operands(ws.a_pan, ws.b_pan, ws.corr, ws.a_t.shape[0])
        with single_threaded(self.blas):
            return run_transcript(
                params, operands, plan, sigma_a, product, ws.digests, flag, keep, bm, bn,
                self.blas, self.int_tile, self.transcript_mode,
                lambda worker: self._workers.run_polling(worker, stop, flag),
                self._workers.count,
            )  # fmt: skip

    @staticmethod
    def _winners(work: WorkStatement, params: PouwParams, digests: np.ndarray) -> np.ndarray:
        threshold = win_threshold(work.target, params.tile_rows, params.tile_cols, work.k)
        if threshold >= 1 << 256:
            return np.arange(digests.shape[0])
        words = np.frombuffer(threshold.to_bytes(32, "big"), dtype=">u4").astype(np.uint32)
        flags = np.empty(digests.shape[0], np.bool_)
        kernels.below_threshold(digests, words, flags)
        return np.flatnonzero(flags)

    def _seals(
        self,
        params: PouwParams,
        work: WorkStatement,
        a: Int8Matrix,
        b: Int8Matrix,
        b_t: Int8Matrix | None,
        digests: np.ndarray,
        winners: Sequence[int],
        row_tree: fasthash.WordTree,
        col_tree: fasthash.WordTree,
    ) -> list[Seal]:
        if len(winners) == 0:
            return []
        # make_seal slices rows of b.T: hand it bt.T, whose .T is the contiguous bt.
        bt = b_t
        if bt is None:
            bt = np.empty((b.shape[1], b.shape[0]), np.int8)
            transpose_into(self._pool, b, bt)
        row_levels, col_levels = row_tree.byte_levels(), col_tree.byte_levels()
        return [
            make_seal(
                params,
                work,
                a,
                bt.T,
                int(t),
                fasthash.digest_bytes(digests[t]),
                row_levels,
                col_levels,
            )  # fmt: skip
            for t in winners
        ]
