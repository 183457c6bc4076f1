"""How the GPU engine readies itself and picks its transcript kernel: compile the
kernels, self-test them once per device, time the passing mma kernels once per
device and noise rank (autotune), and run the transcript on padded operands in
chunks that a stop can cut short.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

from compute.cublas_baselines import time_device
from compute.cuda_mma_variants import MMA_VARIANT_BY_NAME
from compute.cupy_device import (
    BLOCK_K,
    BLOCK_M,
    BLOCK_N,
    KERNEL_LOCK,
    TRANSCRIPT_KERNELS,
    round_up,
)
from compute.cupy_host import Stages, kernel_r_multiple
from compute.gpu_backends import CupyBackend

_SELF_TEST_CACHE: dict[int, dict[str, Any]] = {}  # per device: kernels are shared
_AUTOTUNE_CACHE: dict[tuple[int, int], tuple[str, dict[str, float]]] = {}  # (device, r)
# Tuning variants of the mma kernel (compute/cuda_mma_variants.py, MMA_VARIANTS): each is
# compiled and self-tested like the kernels above; prepare() times the survivors and
# kernel_for() returns the fastest. POUW_MMA_VARIANTS="none" (or a comma-separated list
# of names) limits which are built.
AUTOTUNE_RANKS = (128,)  # ranks tuned by prepare(); others on first use in kernel_for()
AUTOTUNE_SHAPE = (4096, 4096, 4096)  # m, k, n of the timed product


class KernelChoice:
    """CupyEngine's preparation (compile, self-test, autotune), its choice of transcript
    kernel for a noise rank, and the transcript on padded device operands (a mixin: the
    attributes are CupyEngine's)."""

    kernel: str
    gpu_tickets: bool
    gpu_commit: bool
    gpu_noise: bool
    chunk_multiply_adds: int
    device_id: int | None
    self_check: bool
    autotune: bool
    _backend: Any
    _self_test: dict[str, Any] | None
    _tuned: dict[int, str]
    _tune_info: dict[str, Any]
    _lock: Any

    if TYPE_CHECKING:  # CupyEngine's, from compute/cupy_self_test.py

        def self_test(self, seed: int = 0) -> dict[str, Any]: ...

    def prepare(self) -> dict[str, Any]:
        """Compile the kernels, run the self-test once and time the passing mma kernels
        for the ranks in AUTOTUNE_RANKS; returns the self-test results (with
        "kernel_r{r}": the choice and "autotune_r{r}": {kernel: seconds})."""
        with self._lock:
            if self._backend is None:
                self._backend = CupyBackend(self.device_id)
            if self._self_test is None:
                if self.self_check and not self._backend.emulated:
                    dev = self._backend.device_id
                    with KERNEL_LOCK:
                        cached = _SELF_TEST_CACHE.get(dev)
                    if cached is None:
                        with self._backend.device():
                            cached = self.self_test()
                        with KERNEL_LOCK:
                            _SELF_TEST_CACHE[dev] = cached
                    self._self_test = dict(cached)
                else:
                    # Untested: trust the compiled kernels, but never an untested variant
                    # on a real device.
                    self._self_test = {
                        k: True
                        for k in self._backend.kernels.compiled
                        if k not in MMA_VARIANT_BY_NAME or self._backend.emulated
                    }
                    self._self_test["tickets"] = True
                    self._self_test["commit"] = True
                    self._self_test["noise"] = True
                if not self._self_test.get("commit", False):
                    if self.gpu_commit:
                        warnings.warn(
                            "GPU commitments failed their self-test; hashing on the host",
                            stacklevel=2,
                        )
                    self.gpu_commit = False
                if not self._self_test.get("noise", False):
                    if self.gpu_noise:
                        warnings.warn(
                            "GPU noise failed its self-test; deriving it on the host",
                            stacklevel=2,
                        )
                    self.gpu_noise = False
                if not self._self_test.get("tickets", False):
                    if self.gpu_tickets:
                        warnings.warn(
                            "GPU ticket hashing failed its self-test; hashing on the host",
                            stacklevel=2,
                        )
                    self.gpu_tickets = False
                for r in AUTOTUNE_RANKS:
                    self._tune(r)
            return {**self._self_test, **self._tune_info}

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self.prepare()
        return self._backend

    def kernel_for(self, r: int) -> str:
        """The transcript kernel mine() will use for noise rank r: with kernel="auto" and
        r % 32 == 0, the fastest passing mma kernel ("mma" or a tuning variant; see
        _tune); otherwise the first of "mma" (mma.sync, r % 32 == 0), "wmma" (<mma.h>),
        "wmma_ptx" (inline PTX) (r % 16 == 0) that compiled and passed the self-test,
        else "plain"."""
        self.prepare()
        compiled = self.backend.kernels.compiled
        passed = self._self_test or {}
        if self.kernel == "auto" and r % 32 == 0:
            tuned = self._tune(r)
            if tuned is not None:
                return tuned
        if self.kernel == "plain":
            return "plain"
        if self.kernel != "auto":
            if self.kernel not in compiled or r % kernel_r_multiple(self.kernel):
                errors = self.backend.kernels.wmma_errors.get(self.kernel, "")
                raise RuntimeError(f"kernel {self.kernel} unavailable for r={r}: {errors}")
            return self.kernel
        for cand in TRANSCRIPT_KERNELS[:-1]:
            if cand in compiled and passed.get(cand) and r % kernel_r_multiple(cand) == 0:
                return cand
        return "plain"

    def passed_mma_kernels(self) -> list[str]:
        """The "mma" kernel and the tuning variants that compiled and passed the self-test."""
        self.prepare()
        passed = self._self_test or {}
        return [
            k
            for k in self.backend.kernels.compiled
            if (k == "mma" or k in MMA_VARIANT_BY_NAME) and passed.get(k)
        ]

    def _tune(self, r: int) -> str | None:
        """The fastest passing mma kernel for rank r (r % 32 == 0), timed once per device
        and r on AUTOTUNE_SHAPE with the fold; None when there is nothing to time."""
        with self._lock:
            if r in self._tuned:
                return self._tuned[r]
            if self._self_test is None or self._backend is None:
                return None
            cands = self.passed_mma_kernels()
            if not cands or r % 32:
                return None
            if not self.autotune or self._backend.emulated or len(cands) == 1:
                cached = (cands[0], {})
            else:
                dev = self._backend.device_id
                with KERNEL_LOCK:
                    cached = _AUTOTUNE_CACHE.get((dev, r))
                if cached is None:
                    with self._backend.device():
                        cached = self._autotune(r, cands)
                    with KERNEL_LOCK:
                        _AUTOTUNE_CACHE[(dev, r)] = cached
            choice, times = cached
            self._tuned[r] = choice
            self._tune_info[f"kernel_r{r}"] = choice
            self._tune_info[f"autotune_r{r}"] = dict(times)
            return choice

    def _autotune(self, r: int, cands: list[str]) -> tuple[str, dict[str, float]]:
        """Times each candidate (one launch over AUTOTUNE_SHAPE, random int8 operands,
        with the fold; median of 3 after a warm-up): (fastest, {kernel: seconds})."""
        cp = self._backend.cp
        times: dict[str, float] = {}
        try:
            m, k, n = AUTOTUNE_SHAPE
            k = max(r, k - k % r)
            kp = round_up(k, BLOCK_K)
            rs = cp.random.RandomState(12345)
            ap = rs.randint(-127, 127, size=(m, kp), dtype=cp.int32).astype(cp.int8)
            btp = rs.randint(-127, 127, size=(n, kp), dtype=cp.int32).astype(cp.int8)
            c = cp.empty((m, n), dtype=cp.int32)
            s = cp.empty((m, n), dtype=cp.int32)
            for kern in cands:
                try:
                    times[kern] = self.time_kernel(ap, btp, c, s, k, r, kern, True, repeat=3)
                except Exception:  # noqa: BLE001 - a kernel that cannot launch is not chosen
                    continue
            del ap, btp, c, s
            cp.get_default_memory_pool().free_all_blocks()
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: keep the default
            warnings.warn(f"transcript autotune failed: {exc!r}", stacklevel=2)
        if not times:
            return cands[0], times
        return min(times, key=lambda x: times[x]), times

    def time_kernel(
        self,
        ap: Any,
        btp: Any,
        c: Any,
        s: Any,
        k: int,
        r: int,
        kernel: str,
        fold: bool,
        repeat: int = 3,
        warmup: int = 1,
    ) -> float:
        """Median device seconds of one launch of a transcript kernel over all of the
        padded operands (c, s preallocated, mp x np int32)."""
        kern = self.backend.kernels
        brows = ap.shape[0] // BLOCK_M
        return time_device(
            lambda: kern.transcript(ap, btp, c, s, k, r, 0, brows, fold, kernel),
            repeat=repeat,
            warmup=warmup,
        )

    # -- the transcript on padded device operands ---------------------------------------

    def transcript_device(
        self,
        ap: Any,
        btp: Any,
        k: int,
        r: int,
        *,
        fold: bool = True,
        kernel: str | None = None,
        stop: threading.Event | None = None,
        keep_on_stop: bool = False,
        stages: Stages | None = None,
    ) -> tuple[Any, Any, bool]:
        """C' and the fold states (mp x np int32) of padded A' (mp x kp), B'^T (np x kp).

        mp and np must be multiples of 128 and kp a multiple of 64 (see pad_operands).
        Returns (c, s, stopped). When stopped without keep_on_stop, c and s are partial.
        """
        be = self.backend
        xp = be.xp
        kern = kernel or self.kernel_for(r)
        mp, kp = ap.shape
        np_ = btp.shape[0]
        if mp % BLOCK_M or np_ % BLOCK_N or kp % BLOCK_K or btp.shape[1] != kp:
            raise ValueError(f"operands not padded: A' {ap.shape}, B'^T {btp.shape}")
        if k > kp or k % r or r % kernel_r_multiple(kern):
            raise ValueError(f"bad k={k}, r={r} for kernel {kern} (kp={kp})")
        c = xp.zeros((mp, np_), dtype=xp.int32)
        s = xp.zeros((mp, np_), dtype=xp.int32)
        brows = mp // BLOCK_M
        per_brow = BLOCK_M * np_ * max(kp, 1)
        # Block rows per launch: about chunk_multiply_adds of work (the default keeps
        # thousands of blocks per launch on large products, a few ms each on an H100).
        chunk = max(1, min(brows, -(-self.chunk_multiply_adds // per_brow)))
        if kern == "plain":  # ~50x slower: keep launches short for the stop latency
            chunk = max(1, min(chunk, -(-(self.chunk_multiply_adds >> 6) // per_brow)))
        var = MMA_VARIANT_BY_NAME.get(kern)
        if var is not None and var.bm > BLOCK_M:  # whole block tiles per launch
            step = var.bm // BLOCK_M
            chunk = min(brows, -(-chunk // step) * step)
        stopped = False
        in_flight: list[Any] = []
        ev0 = be.event()
        for b0 in range(0, brows, chunk):
            if not stopped and stop is not None and stop.is_set():
                stopped = True
                if not keep_on_stop:
                    break
            nb = min(chunk, brows - b0)
            be.kernels.transcript(ap, btp, c, s, k, r, b0, nb, fold and not stopped, kern)
            in_flight.append(be.event())
            if len(in_flight) >= 2:
                be.wait(in_flight.pop(0))
        ev1 = be.event()
        if stages is not None:
            stages.device("transcript", ev0, ev1)
        return c, s, stopped

    def pad_operands(self, ap: Any, btp: Any) -> tuple[Any, Any]:
        """Zero-pad A' (m x k) and B'^T (n x k), int8 device arrays, to kernel multiples."""
        xp = self.backend.xp
        m, k = ap.shape
        n = btp.shape[0]
        mp, np_, kp = round_up(m, BLOCK_M), round_up(n, BLOCK_N), round_up(k, BLOCK_K)
        out = []
        for x, rows in ((ap, mp), (btp, np_)):
            if x.shape == (rows, kp) and x.dtype == xp.int8 and x.flags.c_contiguous:
                out.append(x)
            else:
                y = xp.zeros((rows, kp), dtype=xp.int8)
                y[: x.shape[0], :k] = x
                out.append(y)
        return out[0], out[1]
