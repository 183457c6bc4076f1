"""The two backends the GPU engine's host-side orchestration runs on, behind one small
interface (arrays, events, the kernels): ``CupyBackend`` (one CUDA device through
CuPy) and ``HostBackend`` (NumPy arrays and ``ReferenceKernels``, the NumPy mirror of
every device kernel: the engine's logic without a GPU, in tests, and the contract of
the CUDA code).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from compute.cuda_mma_variants import MMA_VARIANT_BY_NAME
from compute.cupy_device import (
    BLOCK_M,
    TRANSCRIPT_KERNELS,
    cached_kernels,
    import_cupy,
)
from consensus.commitments import line_leaf
from consensus.hashing import TAG_MERKLE_NODE
from consensus.merkle import merkle_levels
from consensus.noise import (
    dense_noise_lines,
)
from consensus.transcript import (
    fold_transcript,
    ticket,
    tile_grid,
    tile_origin,
)


class CupyBackend:
    """CuPy arrays, CUDA events for timing, the compiled kernels."""

    emulated = False

    def __init__(self, device_id: int | None = None) -> None:
        cp = import_cupy()
        self.cp = cp
        self.xp = cp
        self.device_id = cp.cuda.runtime.getDevice() if device_id is None else device_id
        with cp.cuda.Device(self.device_id):
            self.kernels = cached_kernels(cp, self.device_id)

    def device(self) -> Any:
        return self.cp.cuda.Device(self.device_id)

    def to_host(self, x: Any) -> np.ndarray:
        return self.cp.asnumpy(self.cp.ascontiguousarray(x))

    def to_device(self, x: np.ndarray) -> Any:
        return self.cp.asarray(np.ascontiguousarray(x))

    def to_device_async(self, x: np.ndarray) -> tuple[Any, Any]:
        """(device copy, staging buffer): x goes through pinned host memory and the copy
        runs asynchronously on the current stream; keep the staging buffer alive until
        the stream has passed the copy (any later synchronization)."""
        cp = self.cp
        x = np.ascontiguousarray(x)
        try:
            import cupyx  # noqa: PLC0415

            buf = cupyx.empty_pinned(x.shape, dtype=x.dtype)
            np.copyto(buf, x)
            out = cp.empty(x.shape, dtype=x.dtype)
            out.set(buf, stream=cp.cuda.get_current_stream())
            return out, buf
        except Exception:  # noqa: BLE001 - pageable copy
            return cp.asarray(x), None

    def to_host_pinned(self, x: Any) -> np.ndarray:
        """x copied into pinned host memory (from CuPy's pinned pool: reused once the
        returned array is dropped), which copies at full PCIe speed."""
        cp = self.cp
        x = cp.ascontiguousarray(x)
        try:
            import cupyx  # noqa: PLC0415

            out = cupyx.empty_pinned(x.shape, dtype=x.dtype)
            x.get(out=out)
            self.synchronize()
            return out
        except Exception:  # noqa: BLE001 - pageable copy
            return cp.asnumpy(x)

    def event(self) -> Any:
        ev = self.cp.cuda.Event()
        ev.record()
        return ev

    @staticmethod
    def wait(ev: Any) -> None:
        ev.synchronize()

    def elapsed(self, ev0: Any, ev1: Any) -> float:
        ev1.synchronize()
        return float(self.cp.cuda.get_elapsed_time(ev0, ev1)) / 1000.0

    def synchronize(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class ReferenceKernels:
    """NumPy mirror of every device kernel: the specification each one must meet.

    Used with ``HostBackend`` to run the engine's host-side orchestration without a
    GPU (tests), and readable as the contract of the CUDA code (compute/cuda_sources.py,
    compute/cuda_kernels.py).
    """

    compiled = TRANSCRIPT_KERNELS[:1] + tuple(MMA_VARIANT_BY_NAME) + TRANSCRIPT_KERNELS[1:]
    wmma_errors: dict[str, str] = {}
    has_commit = True
    commit_error = ""

    @staticmethod
    def line_leaves(mat: np.ndarray, prefix16: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(mat, dtype=np.int8)
        out = np.empty((rows.shape[0], 32), dtype=np.uint8)
        for i in range(rows.shape[0]):
            out[i] = np.frombuffer(line_leaf(rows[i].tobytes()), dtype=np.uint8)
        return out

    @staticmethod
    def merkle_tree(leaves: np.ndarray, prefix16: np.ndarray) -> np.ndarray:
        levels = merkle_levels([bytes(x) for x in leaves], TAG_MERKLE_NODE)
        flat = b"".join(node for level in levels for node in level)
        return np.frombuffer(flat, dtype=np.uint8).reshape(-1, 32).copy()

    @staticmethod
    def noise_lines(tmpl17: np.ndarray, first: int, rows: int, r: int) -> np.ndarray:
        # The template holds the seed at bytes 64..96 and the label at byte 96.
        raw = np.asarray(tmpl17, dtype="<u8").tobytes()
        seed, label = raw[64:96], raw[96]
        return dense_noise_lines(seed, label, range(first, first + rows), r)

    def transcript(
        self,
        ap: np.ndarray,
        btp: np.ndarray,
        c: np.ndarray,
        s: np.ndarray,
        k: int,
        r: int,
        brow0: int,
        nbrows: int,
        fold: bool,
        kernel: str,
    ) -> None:
        rows = slice(brow0 * BLOCK_M, min(ap.shape[0], (brow0 + nbrows) * BLOCK_M))
        acc, state = fold_transcript(
            ap[rows, :k].astype(np.int64), btp[:, :k].T.astype(np.int64), r
        )
        c[rows] = acc.astype(np.int32)
        s[rows] = state.view(np.int32) if fold else 0

    def noisy_lines(
        self, out: np.ndarray, base: np.ndarray, left: np.ndarray, plus: Any, minus: Any
    ) -> None:
        rows, k = base.shape
        val = base.astype(np.int16) + left[:, plus].astype(np.int16) - left[:, minus]
        out[:rows, :k] = val.astype(np.int8)

    @staticmethod
    def sub_exact(c: np.ndarray, d: np.ndarray) -> np.ndarray:
        return (c.astype(np.int64) - d.astype(np.int64)).astype(np.int32)

    def sparse_lines(
        self, mat: np.ndarray, rows: int, r: int, csr_plus: Any, csr_minus: Any
    ) -> np.ndarray:
        out = np.zeros((rows, r), dtype=np.int64)
        m64 = mat[:rows].astype(np.int64)
        for q in range(r):
            plus = csr_plus[1][csr_plus[0][q] : csr_plus[0][q + 1]]
            minus = csr_minus[1][csr_minus[0][q] : csr_minus[0][q + 1]]
            out[:, q] = m64[:, plus].sum(axis=1) - m64[:, minus].sum(axis=1)
        return out.astype(np.int32)

    def tickets(
        self,
        s: np.ndarray,
        m: int,
        n: int,
        th: int,
        tw: int,
        prefix16: np.ndarray,
        sigma8: np.ndarray,
        thr8: np.ndarray,
        all_win: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        # prefix16 is implied by TAG_TICKET (ticket() absorbs it itself).
        sigma = np.asarray(sigma8, dtype=">u4").tobytes()
        threshold = int.from_bytes(np.asarray(thr8, dtype=">u4").tobytes(), "big")
        grid_rows, grid_cols = tile_grid(m, n, th, tw)
        states = np.ascontiguousarray(s[:m, :n]).view(np.uint32)
        digests = np.empty((grid_rows * grid_cols, 8), dtype=np.uint32)
        wins = np.zeros(grid_rows * grid_cols, dtype=np.uint8)
        for t in range(grid_rows * grid_cols):
            i, j = tile_origin(t, n, th, tw)
            dig = ticket(sigma, t, states[i : i + th, j : j + tw])
            digests[t] = np.frombuffer(dig, dtype=np.uint32)
            wins[t] = 1 if all_win or int.from_bytes(dig, "big") < threshold else 0
        return digests, wins


class HostBackend:
    """NumPy arrays and ``ReferenceKernels``: the engine's logic without a GPU."""

    emulated = True

    def __init__(self) -> None:
        self.xp = np
        self.kernels = ReferenceKernels()

    def device(self) -> _NullContext:
        return _NullContext()

    @staticmethod
    def to_host(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    @staticmethod
    def to_device(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    @staticmethod
    def to_device_async(x: np.ndarray) -> tuple[np.ndarray, None]:
        return np.array(x, copy=True, order="C"), None

    @staticmethod
    def to_host_pinned(x: np.ndarray) -> np.ndarray:
        return np.array(x, copy=True, order="C")

    @staticmethod
    def event() -> float:
        return time.perf_counter()

    @staticmethod
    def wait(ev: float) -> None:
        return None

    @staticmethod
    def elapsed(ev0: float, ev1: float) -> float:
        return ev1 - ev0

    def synchronize(self) -> None:
        return None
