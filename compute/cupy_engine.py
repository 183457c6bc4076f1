"""The GPU mining engine: CuPy on the host side, a fused WMMA int8 kernel on the device.

What runs where (results equal consensus/pouw.py bit for bit):

* Host (NumPy + consensus/): the statement and seeds, the sparse +1/-1 patterns, spot
  checks of everything the device hashed, winner checks and seals. Operands go up and
  the product comes back through pinned host memory.
* Device:
  - Commitments (compute/cuda_kernels.py): one thread per row of A / of B^T hashes its
    tagged leaf (SHA-256), then one launch per Merkle level (odd node promoted). Every
    call re-hashes a few leaves and a few parents per level on the host
    (``levels_ok``); a mismatch drops to consensus.commitments.row_tree for good.
  - Dense noise lines (rows of E_AL, columns of E_BR): one SHAKE-256 block per line on
    the device, a few lines per call re-derived on the host; host fallback likewise.
  - The transcript, preferred kernel ``pouw_transcript_mma`` ("mma", r % 32 == 0):
    mma.sync m16n8k32 with ldmatrix, a 4-stage cp.async pipeline and swizzled shared
    memory, 128 x 128 block tiles, 8 warps of 64 x 32, the fold on the accumulator
    registers (compute/cuda_kernels.py). Self-tested like the WMMA kernels below (and
    against the plain kernel on a larger product); WMMA is the fallback. Tuning
    variants of it (MMA_VARIANTS: block tiles 128x128 / 128x256 / 256x128, warp tiles,
    3-5 stages, 1 or 2 blocks per SM, fold states in registers or shared memory, the
    fold applied late, interleaved with the next step's mma) are compiled and
    self-tested too (a failing one is dropped); prepare() times the survivors once per
    (device, r) and kernel_for(r) returns the fastest. The fold rule is the same in all.
  - A' = A + E_AL[:, plus_A] - E_AL[:, minus_A] and B'^T = B^T + E_BR^T[:, plus_B] -
    E_BR^T[:, minus_B] (``pouw_noisy_lines``, one pass), stored as int8 (entries lie in
    [-127, 126]), zero-padded to the kernel's tile multiples (M, N to 128, K to 64).
  - The transcript: one fused kernel (``pouw_transcript_wmma``) computes C' = A'.B' on
    int8 tensor cores (WMMA m16n16k16, int32 accumulators) and, after every r columns
    of k, folds the accumulator fragment into a state fragment of the same type,
    ``st = rotl32(st, 1) ^ uint32(acc)``. Fragments of one type share their element
    layout, so the per-entry fold needs no knowledge of it. C' and the states are
    stored once at the end. Zero padding rows/columns change no real entry, and the
    extra zero k columns past k are never folded (folds only at multiples of r <= k).
    The kernel is built two ways: through the <mma.h> WMMA API ("wmma"; NVRTC needs
    the toolkit's include directory, searched for) and through the same wmma.* PTX
    instructions in inline assembly ("wmma_ptx"; no header needed). Every compiled
    variant is self-tested against consensus.transcript.fold_transcript before use.
    ``pouw_transcript_plain`` is the same computation with one thread per entry: the
    fallback (r not a multiple of 16, or no WMMA variant passed) and a test reference.
  - Tickets: one thread per tile hashes prefix || sigma_A || u32 t || states with
    SHA-256 (``pouw_tickets``) and compares with the threshold. Every winner is
    re-hashed on the host with consensus.transcript.ticket before it is sealed; a
    disagreement drops the engine to host hashing of every ticket.
  - Noise removal, exact: C = C' - (A.E_BL).E_BR - E_AL.(E_AR.B'). The sparse products
    X = A.E_BL (m x r) and Y^T = (E_AR.B')^T (n x r) are exact int32 sums of
    gathered int8 entries (``pouw_sparse_lines``; |X| <= 64 k, |Y| <= 127 k). The two
    rank-r products are one rank-2r product [X | E_AL] . [E_BR ; Y], done as a
    float64 cuBLAS GEMM (FP64 tensor cores on an H100). Every product and every
    partial sum is an integer bounded by the sum of the absolute values of the terms:
    each position p feeds one +1 and one -1, so sum_q |X_iq| <= 2 * 64 k and
    sum_q |Y_qj| <= 2 * 127 k, and with |E| <= 32 that sum is below 32 * 382 k < 2^14 k
    <= 2^31, far below 2^53: float64 is exact whatever the summation order, blocking or
    FMA use (cuBLAS's integer GEMM has no tensor-core path for these int32 factors).
    The subtraction C = C' - D is done in 64-bit integers (``pouw_sub_exact``) and
    fits int32 (|C| <= 64^2 k).

``stop`` is polled between launches of the transcript, which runs in chunks of block
rows (about ``chunk_multiply_adds`` each) with at most two chunks in flight, so a stop
is noticed within a couple of chunks (a few ms on an H100). With
``keep_product_on_stop`` the remaining chunks run without the fold and the exact
product is returned with no seals.

CuPy is imported lazily: this module imports (and ``CupyEngine.available()`` answers
False) on machines without CuPy or a GPU.

Where the parts live: the device code in compute/cuda_sources.py (plain, WMMA),
compute/cuda_kernels.py (commitments, noise, mma.sync) and compute/cuda_mma_variants.py
(the mma kernel's tuning variants); its compiled launches in compute/cupy_device.py;
the CuPy and NumPy backends in compute/gpu_backends.py; the host helpers in
compute/cupy_host.py; preparation, kernel choice and the chunked transcript in
compute/cupy_tuning.py; the self-test in compute/cupy_self_test.py; the cuBLAS
baselines of the benchmark in compute/cublas_baselines.py. This module is the mining
itself.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.cuda_mma_variants import MMA_VARIANT_BY_NAME
from compute.cupy_device import (
    BLOCK_K,
    BLOCK_M,
    BLOCK_N,
    TRANSCRIPT_KERNELS,
    import_cupy,
    round_up,
)
from compute.cupy_host import (
    Stages,
    be_words,
    levels_ok,
    noise_template,
    pattern_csr,
    split_levels,
    tag_prefix,
    ticket_prefix,
)
from compute.cupy_self_test import SelfTest
from compute.cupy_tuning import KernelChoice
from compute.engine import MiningOutput, MiningStats, OperandLeaves, WorkTemplate
from consensus.commitments import entries_in_range, row_tree
from consensus.hashing import TAG_MERKLE_LEAF, TAG_MERKLE_NODE
from consensus.noise import (
    LABEL_A_LEFT,
    LABEL_A_PATTERN,
    LABEL_B_PATTERN,
    LABEL_B_RIGHT,
    dense_noise_lines,
    sparse_pattern,
)
from consensus.params import PouwParams
from consensus.pouw import make_seal
from consensus.seal import Seal, check_shape
from consensus.transcript import (
    ticket,
    ticket_wins,
    tile_origin,
    win_threshold,
)

DEFAULT_CHUNK_MULTIPLY_ADDS = 1 << 38  # ~1-3 ms of tensor-core work per launch on an H100


class CupyEngine(KernelChoice, SelfTest):
    """Mining engine on one CUDA GPU (see the module docstring).

    ``kernel``: "auto" (r % 32 == 0: the fastest of "mma" and its tuning variants that
    compiled and passed the self-test, timed once per device and r (``autotune``); else
    the first of "mma", "wmma", "wmma_ptx" (r % 16 == 0) that passed, else plain), or one
    of those names (a variant's name from compute.cuda_mma_variants.MMA_VARIANTS included).
    ``gpu_tickets``: hash the tickets on the GPU (each winner re-checked on the host)
    instead of copying the states back and hashing every tile on the host.
    ``gpu_commit``: build the Merkle commitments (leaves and levels) on the GPU, spot
    checked against consensus on every call. ``gpu_noise``: derive the dense noise
    lines (SHAKE-256) on the GPU, spot checked likewise. A failed self-test or spot
    check turns the GPU path off (host fallback). ``chunk_multiply_adds``: work per
    transcript launch (bounds the stop latency).
    """

    name = "cupy"

    def __init__(
        self,
        *,
        kernel: str = "auto",
        gpu_tickets: bool = True,
        gpu_commit: bool = True,
        gpu_noise: bool = True,
        chunk_multiply_adds: int = DEFAULT_CHUNK_MULTIPLY_ADDS,
        device_id: int | None = None,
        self_check: bool = True,
        backend: Any = None,
        autotune: bool = True,
    ) -> None:
        if kernel != "auto" and kernel not in TRANSCRIPT_KERNELS + tuple(MMA_VARIANT_BY_NAME):
            raise ValueError(f"unknown kernel {kernel!r}")
        self.kernel = kernel
        self.gpu_tickets = gpu_tickets
        self.gpu_commit = gpu_commit
        self.gpu_noise = gpu_noise
        self._check_rng = np.random.default_rng()
        self.chunk_multiply_adds = max(1, int(chunk_multiply_adds))
        self.device_id = device_id
        self.self_check = self_check
        self._backend = backend
        self._self_test: dict[str, Any] | None = None
        self.autotune = autotune
        self._tuned: dict[int, str] = {}  # r -> fastest passing mma kernel
        self._tune_info: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- availability and preparation -------------------------------------------------

    @staticmethod
    def available() -> bool:
        """True when CuPy imports and sees at least one CUDA device."""
        try:
            cp = import_cupy()
            return int(cp.cuda.runtime.getDeviceCount()) > 0
        except Exception:  # noqa: BLE001 - no cupy, no driver, no device
            return False

    # -- mining -----------------------------------------------------------------------

    def mine(
        self,
        params: PouwParams,
        a: npt.NDArray[np.int8],
        b: npt.NDArray[np.int8],
        template: WorkTemplate,
        stop: threading.Event | None = None,
        tickets_out: list[bytes] | None = None,
        keep_product_on_stop: bool = False,
        operand_leaves: OperandLeaves | None = None,  # unused: the GPU hashes fast
        b_t: npt.NDArray[np.int8] | None = None,  # unused
    ) -> MiningOutput:
        be = self.backend
        with be.device():
            return self._mine(params, a, b, template, stop, tickets_out, keep_product_on_stop)

    def _mine(
        self,
        params: PouwParams,
        a: npt.NDArray[np.int8],
        b: npt.NDArray[np.int8],
        template: WorkTemplate,
        stop: threading.Event | None,
        tickets_out: list[bytes] | None,
        keep_product_on_stop: bool,
    ) -> MiningOutput:
        t_start = time.perf_counter()
        be = self.backend
        xp = be.xp
        kern_obj = be.kernels
        stages = Stages(be)
        a = np.asarray(a)
        b = np.asarray(b)
        if a.dtype != np.int8 or b.dtype != np.int8 or a.ndim != 2 or b.ndim != 2:
            raise ValueError("operands must be 2-D int8 matrices")
        m, k = a.shape
        if b.shape[0] != k:
            raise ValueError(f"inner dimensions differ: {a.shape} x {b.shape}")
        n = b.shape[1]
        shape_check = check_shape(params, m, k, n)
        if not shape_check.ok:
            raise ValueError(f"shape {m}x{k}x{n} rejected: {shape_check.reason}")
        if not (entries_in_range(a) and entries_in_range(b)):
            raise ValueError("operand entries must lie in [-64, 63]")
        r, th, tw = params.noise_rank, params.tile_rows, params.tile_cols
        kern = self.kernel_for(r)

        t0 = time.perf_counter()
        a = np.ascontiguousarray(a)
        # Upload the operands through pinned memory (asynchronous copies): the leaf
        # hashes of A run while B is staged on the host.
        keep: list[Any] = []
        a_d, buf = be.to_device_async(a)
        keep.append(buf)
        use_commit = self.gpu_commit and kern_obj.has_commit
        leaf_prefix = node_prefix = None
        a_leaves = None
        if use_commit:
            leaf_prefix = be.to_device(be_words(tag_prefix(TAG_MERKLE_LEAF)))
            node_prefix = be.to_device(be_words(tag_prefix(TAG_MERKLE_NODE)))
            a_leaves = kern_obj.line_leaves(a_d, leaf_prefix)
        b_d, buf = be.to_device_async(b)
        keep.append(buf)
        bt_d = xp.ascontiguousarray(b_d.T)
        t1 = time.perf_counter()
        stages.add_host("upload", t1 - t0)

        row_levels: list[list[bytes]] | None = None
        col_levels: list[list[bytes]] | None = None
        if use_commit:
            ev = be.event()
            a_tree = kern_obj.merkle_tree(a_leaves, node_prefix)
            b_tree = kern_obj.merkle_tree(kern_obj.line_leaves(bt_d, leaf_prefix), node_prefix)
            stages.device("commit_gpu", ev, be.event())
            row_levels = split_levels(be.to_host(a_tree), m)
            col_levels = split_levels(be.to_host(b_tree), n)
            del a_tree, b_tree, a_leaves
            rng = self._check_rng
            if not (
                levels_ok(row_levels, lambda i: a[i].tobytes(), rng)
                and levels_ok(col_levels, lambda j: np.ascontiguousarray(b[:, j]).tobytes(), rng)
            ):
                warnings.warn(
                    "GPU commitments disagreed with the host; hashing on the host", stacklevel=2
                )
                self.gpu_commit = False
                row_levels = col_levels = None
        if row_levels is None or col_levels is None:
            row_levels = row_tree(a)
            col_levels = row_tree(b.T)
        be.synchronize()  # the staged uploads are done: their pinned buffers may go
        keep.clear()
        work = template.statement(m, k, n, row_levels[-1][0], col_levels[-1][0])
        sigma_a, sigma_b = work.seeds()
        t2 = time.perf_counter()
        stages.add_host("commit", t2 - t1)

        # Dense noise lines: on the GPU (queued first, so the host derives the sparse
        # patterns meanwhile), spot checked; or on the host.
        e_al_d = right_d = None
        if self.gpu_noise and kern_obj.has_commit:
            ev = be.event()
            e_al_d = kern_obj.noise_lines(
                be.to_device(noise_template(sigma_a, LABEL_A_LEFT)), 0, m, r
            )
            right_d = kern_obj.noise_lines(
                be.to_device(noise_template(sigma_b, LABEL_B_RIGHT)), 0, n, r
            )
            stages.device("noise_gpu", ev, be.event())
        a_plus, a_minus = sparse_pattern(sigma_a, LABEL_A_PATTERN, k, r)
        b_plus, b_minus = sparse_pattern(sigma_b, LABEL_B_PATTERN, k, r)
        if e_al_d is not None and right_d is not None:
            rng = self._check_rng
            good = True
            for dev, seed, label, rows in (
                (e_al_d, sigma_a, LABEL_A_LEFT, m),
                (right_d, sigma_b, LABEL_B_RIGHT, n),
            ):
                idx = sorted({0, rows - 1, *(int(x) for x in rng.integers(0, rows, size=2))})
                got = be.to_host(dev[be.to_device(np.asarray(idx, dtype=np.int64))])
                if not np.array_equal(got, dense_noise_lines(seed, label, idx, r)):
                    good = False
            if not good:
                warnings.warn(
                    "GPU noise disagreed with the host; deriving it on the host", stacklevel=2
                )
                self.gpu_noise = False
                e_al_d = right_d = None
        if e_al_d is None or right_d is None:
            e_al_d = be.to_device(dense_noise_lines(sigma_a, LABEL_A_LEFT, range(m), r))
            # n x r: E_BR^T
            right_d = be.to_device(dense_noise_lines(sigma_b, LABEL_B_RIGHT, range(n), r))
        t3 = time.perf_counter()
        stages.add_host("noise_host", t3 - t2)

        if stop is not None and stop.is_set() and not keep_product_on_stop:
            stats = MiningStats(
                seconds={**stages.seconds(), "total": time.perf_counter() - t_start}
            )
            return MiningOutput(work, None, [], True, stats)

        idx_d = [be.to_device(x.astype(np.int32)) for x in (a_plus, a_minus, b_plus, b_minus)]
        csr_a = [tuple(be.to_device(x) for x in pattern_csr(v, r)) for v in (a_plus, a_minus)]
        csr_b = [tuple(be.to_device(x) for x in pattern_csr(v, r)) for v in (b_plus, b_minus)]
        stages.add_host("upload", time.perf_counter() - t3)

        # A' and B'^T, zero-padded.
        ev = be.event()
        mp, np_, kp = round_up(m, BLOCK_M), round_up(n, BLOCK_N), round_up(k, BLOCK_K)
        ap = xp.zeros((mp, kp), dtype=xp.int8)
        btp = xp.zeros((np_, kp), dtype=xp.int8)
        kern_obj.noisy_lines(ap, a_d, e_al_d, idx_d[0], idx_d[1])
        kern_obj.noisy_lines(btp, bt_d, right_d, idx_d[2], idx_d[3])
        del bt_d, b_d
        ev_noise = be.event()
        stages.device("noise", ev, ev_noise)

        c, s, stopped = self.transcript_device(
            ap,
            btp,
            k,
            r,
            fold=True,
            kernel=kern,
            stop=stop,
            keep_on_stop=keep_product_on_stop,
            stages=stages,
        )
        if stopped and not keep_product_on_stop:
            stats = MiningStats(
                seconds={**stages.seconds(), "total": time.perf_counter() - t_start}
            )
            return MiningOutput(work, None, [], True, stats)

        # Exact noise removal (module docstring).
        ev = be.event()
        x_d = kern_obj.sparse_lines(a_d, m, r, csr_b[0], csr_b[1])  # A . E_BL, m x r
        yt_d = kern_obj.sparse_lines(btp, n, r, csr_a[0], csr_a[1])  # (E_AR . B')^T, n x r
        u = xp.concatenate([x_d.astype(xp.float64), e_al_d.astype(xp.float64)], axis=1)
        vt = xp.concatenate([right_d.astype(xp.float64), yt_d.astype(xp.float64)], axis=1)
        product_d = xp.empty((m, n), dtype=xp.int32)
        band = max(1, min(m, (1 << 26) // max(1, n)))
        for r0 in range(0, m, band):
            r1 = min(m, r0 + band)
            d = xp.matmul(u[r0:r1], vt.T)
            product_d[r0:r1] = kern_obj.sub_exact(c[r0:r1, :n], d)
            del d
        del u, vt, x_d, yt_d
        stages.device("remove_noise", ev, be.event())

        if not stopped and stop is not None and stop.is_set():
            stopped = True  # the lottery is dead; the product is done
        seals: list[Seal] = []
        ntiles = 0
        if not stopped:
            ntiles = (m // th) * (n // tw)
            threshold = win_threshold(work.target, th, tw, k)
            seals = self._tickets_and_seals(
                params,
                work,
                a,
                b,
                s,
                sigma_a,
                threshold,
                row_levels,
                col_levels,
                tickets_out,
                stages,
            )

        t4 = time.perf_counter()
        product = be.to_host_pinned(product_d) if (not stopped or keep_product_on_stop) else None
        stages.add_host("download", time.perf_counter() - t4)
        del c, s, ap, btp, a_d, product_d
        if product is not None:
            product = product.astype(np.int32, copy=False)
        seconds = stages.seconds()
        seconds["total"] = time.perf_counter() - t_start
        stats = MiningStats(
            multiply_adds=m * n * k if not stopped or keep_product_on_stop else 0,
            tickets=ntiles,
            seconds=seconds,
        )
        return MiningOutput(work, product, seals, stopped, stats)

    def _tickets_and_seals(
        self,
        params: PouwParams,
        work: Any,
        a: np.ndarray,
        b: np.ndarray,
        s: Any,
        sigma_a: bytes,
        threshold: int,
        row_levels: list[list[bytes]],
        col_levels: list[list[bytes]],
        tickets_out: list[bytes] | None,
        stages: Stages,
    ) -> list[Seal]:
        be = self.backend
        m, n = work.m, work.n
        th, tw = params.tile_rows, params.tile_cols
        ntiles = (m // th) * (n // tw)
        tickets: list[bytes] | None = None
        winners: list[int] = []
        win_tickets: dict[int, bytes] = {}
        if self.gpu_tickets:
            all_win = threshold >= 1 << 256
            thr = min(threshold, (1 << 256) - 1).to_bytes(32, "big")
            ev = be.event()
            digests_d, wins_d = be.kernels.tickets(
                s,
                m,
                n,
                th,
                tw,
                be.to_device(be_words(ticket_prefix())),
                be.to_device(be_words(sigma_a)),
                be.to_device(be_words(thr)),
                all_win,
            )
            stages.device("tickets", ev, be.event())
            t0 = time.perf_counter()
            wins = be.to_host(wins_d)
            winners = [int(t) for t in np.flatnonzero(wins)]
            if tickets_out is not None:
                raw = be.to_host(digests_d).tobytes()
                tickets = [raw[32 * t : 32 * t + 32] for t in range(ntiles)]
                win_tickets = {t: tickets[t] for t in winners}
            elif winners:
                sel = be.to_host(digests_d[be.to_device(np.asarray(winners, dtype=np.int64))])
                win_tickets = {t: sel[i].tobytes() for i, t in enumerate(winners)}
            # Every winner is re-hashed on the host before it is sealed.
            ok = True
            states = be.to_host(s[:m, :n]).view(np.uint32) if len(winners) > 64 else None
            for t in winners:
                i, j = tile_origin(t, n, th, tw)
                if states is not None:
                    tile = states[i : i + th, j : j + tw]
                else:
                    tile = be.to_host(s[i : i + th, j : j + tw]).view(np.uint32)
                host_j = ticket(sigma_a, t, tile)
                if host_j != win_tickets[t] or not ticket_wins(host_j, threshold):
                    ok = False
                    break
            stages.add_host("tickets_check", time.perf_counter() - t0)
            if not ok:
                warnings.warn(
                    "GPU ticket hash disagreed with the host; hashing on the host", stacklevel=2
                )
                self.gpu_tickets = False
                tickets = None
        if not self.gpu_tickets:
            t0 = time.perf_counter()
            states = be.to_host(s[:m, :n]).view(np.uint32)
            tickets = []
            for t in range(ntiles):
                i, j = tile_origin(t, n, th, tw)
                tickets.append(ticket(sigma_a, t, states[i : i + th, j : j + tw]))
            winners = [t for t, jt in enumerate(tickets) if ticket_wins(jt, threshold)]
            win_tickets = {t: tickets[t] for t in winners}
            stages.add_host("tickets_host", time.perf_counter() - t0)
        if tickets_out is not None and tickets is not None:
            tickets_out.extend(tickets)
        t0 = time.perf_counter()
        seals = [
            make_seal(params, work, a, b, t, win_tickets[t], row_levels, col_levels)
            for t in winners
        ]
        stages.add_host("seals", time.perf_counter() - t0)
        return seals


__all__ = ["DEFAULT_CHUNK_MULTIPLY_ADDS", "CupyEngine"]
