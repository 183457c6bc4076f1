"""The GPU engine's kernels compiled for one device, and the launch of each
(``_CupyKernels``, shared per device through ``cached_kernels``). CuPy is imported
lazily (``import_cupy``): this module imports on machines without CuPy or a GPU.
The tile sizes below are the kernels' (both transcript kernels chunk work in
BLOCK_M rows of C').
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import threading
from typing import Any

import numpy as np

from compute.cuda_kernels import COMMIT_NOISE_SOURCE, MMA_SHARED_BYTES, MMA_SOURCE
from compute.cuda_mma_variants import MMA_VARIANTS, MmaVariant, mma_variants_source
from compute.cuda_sources import BASIC_SOURCE, NVRTC_OPTIONS, WMMA_PTX_SOURCE, WMMA_SOURCE

BLOCK_M = 128  # rows of C' per thread block (both kernels chunk work in these units)
BLOCK_N = 128  # columns of C' per thread block of the WMMA kernel
BLOCK_K = 64  # bytes of k per shared-memory stage of the WMMA kernel
TICKET_THREADS = 128
HASH_THREADS = 64  # threads per block of the leaf / Merkle / noise kernels
TRANSCRIPT_KERNELS = ("mma", "wmma", "wmma_ptx", "plain")  # best first


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def import_cupy() -> Any:
    import cupy  # noqa: PLC0415 - optional dependency, imported on first use

    return cupy


def _include_dirs() -> list[str]:
    """Directories that may hold <mma.h>, for NVRTC builds that do not find it alone."""
    roots = [os.environ.get(v) for v in ("CUDA_PATH", "CUDA_HOME", "CUDA_ROOT")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    roots.append("/usr/local/cuda")
    try:
        cp = import_cupy()
        roots.append(cp.cuda.get_cuda_path())
    except Exception:  # noqa: BLE001 - best effort only
        pass
    found: list[str] = []
    for root in roots:
        if root and os.path.isfile(os.path.join(root, "include", "mma.h")):
            found.append(os.path.join(root, "include"))
    for entry in sys.path:  # pip CUDA wheels: site-packages/nvidia/<pkg>/include
        for inc in glob.glob(os.path.join(entry, "nvidia", "*", "include")):
            if os.path.isfile(os.path.join(inc, "mma.h")):
                found.append(inc)
    out: list[str] = []
    for d in found:
        if d not in out:
            out.append(d)
    return out


# ---------------------------------------------------------------------------------
# Backends: the device kernels behind a small interface, so that the host-side
# orchestration can also run (slowly) against a NumPy mirror of every kernel.
# ---------------------------------------------------------------------------------


class _CupyKernels:
    """Compiled modules for one device and the launches of each kernel."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self._sub: Any = None
        basic_error: Exception | None = None
        basic_attempts: list[tuple[str, ...]] = [NVRTC_OPTIONS, ()]
        for options in basic_attempts:
            try:
                basic = cp.RawModule(code=BASIC_SOURCE, options=options)
                self._plain = basic.get_function("pouw_transcript_plain")
                self._sparse = basic.get_function("pouw_sparse_lines")
                self._tickets = basic.get_function("pouw_tickets")
                self._noisy = basic.get_function("pouw_noisy_lines")
                break
            except Exception as exc:  # noqa: BLE001 - retried without options
                basic_error = exc
        else:
            raise RuntimeError(f"cannot compile the basic CUDA module: {basic_error}")
        # The WMMA kernel, both ways (see _WMMA_PRELUDE_*); either may fail to compile.
        self.wmma: dict[str, Any] = {}
        self.wmma_errors: dict[str, str] = {}
        errors = []
        attempts: list[tuple[str, ...]] = [NVRTC_OPTIONS]
        attempts += [NVRTC_OPTIONS + (f"-I{d}",) for d in _include_dirs()]
        for options in attempts:
            try:
                module = cp.RawModule(code=WMMA_SOURCE, options=options)
                self.wmma["wmma"] = module.get_function("pouw_transcript_wmma")
                break
            except Exception as exc:  # noqa: BLE001 - compile errors vary by toolkit
                errors.append(f"{options}: {exc}")
        if "wmma" not in self.wmma:
            self.wmma_errors["wmma"] = "\n".join(errors)[-4000:]
        for options in basic_attempts:
            try:
                module = cp.RawModule(code=WMMA_PTX_SOURCE, options=options)
                self.wmma["wmma_ptx"] = module.get_function("pouw_transcript_wmma")
                self.wmma_errors.pop("wmma_ptx", None)
                break
            except Exception as exc:  # noqa: BLE001
                self.wmma_errors["wmma_ptx"] = f"{options}: {exc}"[-4000:]
        # The mma.sync kernel (compute/cuda_kernels.py): header-free, optional.
        for options in basic_attempts:
            try:
                module = cp.RawModule(code=MMA_SOURCE, options=options)
                fn = module.get_function("pouw_transcript_mma")
                fn.max_dynamic_shared_size_bytes = MMA_SHARED_BYTES
                self.wmma["mma"] = fn
                self.wmma_errors.pop("mma", None)
                break
            except Exception as exc:  # noqa: BLE001
                self.wmma_errors["mma"] = f"{options}: {exc}"[-4000:]
        # Tuning variants of the mma kernel: one module, else one module per variant.
        self.variants: dict[str, MmaVariant] = {}
        wanted = _wanted_variants()
        if wanted:
            self._compile_variants(cp, wanted, basic_attempts)
        # Commitments and dense noise (optional: the host computes them otherwise).
        self._leaves: Any = None
        self._level: Any = None
        self._noise: Any = None
        self.commit_error = ""
        for options in basic_attempts:
            try:
                module = cp.RawModule(code=BASIC_SOURCE + COMMIT_NOISE_SOURCE, options=options)
                self._leaves = module.get_function("pouw_line_leaves")
                self._level = module.get_function("pouw_merkle_level")
                self._noise = module.get_function("pouw_noise_lines")
                self.commit_error = ""
                break
            except Exception as exc:  # noqa: BLE001
                self.commit_error = f"{options}: {exc}"[-4000:]

    def _compile_variants(
        self, cp: Any, wanted: tuple[MmaVariant, ...], attempts: list[tuple[str, ...]]
    ) -> None:
        def attach(module: Any, v: MmaVariant) -> None:
            fn = module.get_function(v.entry)
            fn.max_dynamic_shared_size_bytes = v.shared_bytes
            self.wmma[v.name] = fn
            self.variants[v.name] = v
            self.wmma_errors.pop(v.name, None)

        for options in attempts:
            try:
                module = cp.RawModule(code=mma_variants_source(wanted), options=options)
                # RawModule compiles lazily: compile now, so that a compile error falls
                # through to the per-variant modules below.
                if hasattr(module, "compile"):
                    module.compile()
                else:
                    module.get_function(wanted[0].entry)
                for v in wanted:
                    try:
                        attach(module, v)
                    except Exception as exc:  # noqa: BLE001 - e.g. too much shared memory
                        self.wmma_errors[v.name] = f"{options}: {exc}"[-4000:]
                return
            except Exception:  # noqa: BLE001 - find the culprit: one module each
                pass
        for v in wanted:
            for options in attempts:
                try:
                    attach(cp.RawModule(code=v.source(), options=options), v)
                    break
                except Exception as exc:  # noqa: BLE001
                    self.wmma_errors[v.name] = f"{options}: {exc}"[-4000:]

    @property
    def compiled(self) -> tuple[str, ...]:
        """Transcript kernels that compiled, best first (without a tuning: "mma", then
        the variants, then WMMA, then plain)."""
        first = tuple(k for k in TRANSCRIPT_KERNELS[:1] if k in self.wmma)
        rest = tuple(k for k in TRANSCRIPT_KERNELS[1:-1] if k in self.wmma)
        return first + tuple(self.variants) + rest + ("plain",)

    @property
    def has_commit(self) -> bool:
        return self._leaves is not None

    def line_leaves(self, mat: Any, prefix16: Any) -> Any:
        """(rows, 32) uint8: the tagged leaf hash of every row of mat (int8, 2-D)."""
        cp = self.cp
        mat = cp.ascontiguousarray(mat)
        rows, length = mat.shape
        out = cp.empty((rows, 8), dtype=cp.uint32)
        if rows:
            vec = 1 if (mat.data.ptr % 16 == 0 and length % 16 == 0) else 0
            self._leaves(
                ((rows + HASH_THREADS - 1) // HASH_THREADS,),
                (HASH_THREADS,),
                (
                    mat,
                    np.int64(length),
                    np.int32(rows),
                    np.int64(length),
                    prefix16,
                    np.int32(vec),
                    out,
                ),
            )
        return out.view(cp.uint8).reshape(rows, 32)

    def merkle_tree(self, leaves: Any, prefix16: Any) -> Any:
        """All levels, leaves first, concatenated: (total nodes, 32) uint8."""
        cp = self.cp
        count = int(leaves.shape[0])
        sizes = [count]
        while sizes[-1] > 1:
            sizes.append((sizes[-1] + 1) // 2)
        buf = cp.empty((sum(sizes), 8), dtype=cp.uint32)
        buf[:count] = leaves.view(cp.uint32).reshape(count, 8)
        off = 0
        for size in sizes[:-1]:
            nxt = (size + 1) // 2
            self._level(
                ((nxt + HASH_THREADS - 1) // HASH_THREADS,),
                (HASH_THREADS,),
                (
                    buf[off : off + size],
                    np.int32(size),
                    prefix16,
                    buf[off + size : off + size + nxt],
                ),
            )
            off += size
        return buf.view(cp.uint8).reshape(-1, 32)

    def noise_lines(self, tmpl17: Any, first: int, rows: int, r: int) -> Any:
        cp = self.cp
        out = cp.empty((rows, r), dtype=cp.int8)
        if rows:
            self._noise(
                ((rows + HASH_THREADS - 1) // HASH_THREADS,),
                (HASH_THREADS,),
                (tmpl17, np.int32(first), np.int32(rows), np.int32(r), out),
            )
        return out

    def transcript(
        self,
        ap: Any,
        btp: Any,
        c: Any,
        s: Any,
        k: int,
        r: int,
        brow0: int,
        nbrows: int,
        fold: bool,
        kernel: str,
    ) -> None:
        """Rows [brow0*128, (brow0+nbrows)*128) of C' and of the fold states."""
        mp, kp = ap.shape
        np_ = btp.shape[0]
        var = self.variants.get(kernel)
        if var is not None:
            row0 = brow0 * BLOCK_M
            row_end = min(mp, row0 + nbrows * BLOCK_M)
            self.wmma[kernel](
                (-(-np_ // var.bn), -(-(row_end - row0) // var.bm)),
                (var.threads,),
                (
                    ap,
                    btp,
                    c,
                    s,
                    np.int32(np_),
                    np.int32(kp),
                    np.int32(k),
                    np.int32(r),
                    np.int32(row0),
                    np.int32(row_end),
                    np.int32(1 if fold else 0),
                ),
                shared_mem=var.shared_bytes,
            )
        elif kernel in ("mma", "wmma", "wmma_ptx"):
            self.wmma[kernel](
                (np_ // BLOCK_N, nbrows),
                (256,),
                (
                    ap,
                    btp,
                    c,
                    s,
                    np.int32(np_),
                    np.int32(kp),
                    np.int32(k),
                    np.int32(r),
                    np.int32(brow0),
                    np.int32(1 if fold else 0),
                ),
                shared_mem=MMA_SHARED_BYTES if kernel == "mma" else 0,  # wmma: static smem
            )
        else:
            row0 = brow0 * BLOCK_M
            row1 = min(mp, row0 + nbrows * BLOCK_M)
            self._plain(
                ((np_ + 31) // 32, (row1 - row0 + 7) // 8),
                (32, 8),
                (
                    ap,
                    btp,
                    c,
                    s,
                    np.int32(np_),
                    np.int32(kp),
                    np.int32(k),
                    np.int32(r),
                    np.int32(row0),
                    np.int32(row1),
                    np.int32(1 if fold else 0),
                ),
            )

    def noisy_lines(self, out: Any, base: Any, left: Any, plus: Any, minus: Any) -> None:
        """out[:rows, :k] = base + left[:, plus] - left[:, minus] (all contiguous)."""
        rows, k = base.shape
        if rows and k:
            self._noisy(
                (rows, (k + 255) // 256),
                (256,),
                (
                    base,
                    left,
                    np.int32(left.shape[1]),
                    plus,
                    minus,
                    out,
                    np.int64(out.shape[1]),
                    np.int32(rows),
                    np.int32(k),
                ),
            )

    def sub_exact(self, c: Any, d: Any) -> Any:
        """C' - D as int32: D holds exact integers in float64 and the difference fits."""
        if self._sub is None:
            self._sub = self.cp.ElementwiseKernel(
                "int32 c, float64 d",
                "int32 out",
                "out = (int)((long long)c - (long long)d)",
                "pouw_sub_exact",
            )
        try:
            return self._sub(c, d)
        except Exception:  # noqa: BLE001 - same result, more memory passes
            cp = self.cp
            return (c.astype(cp.int64) - d.astype(cp.int64)).astype(cp.int32)

    def sparse_lines(self, mat: Any, rows: int, r: int, csr_plus: Any, csr_minus: Any) -> Any:
        cp = self.cp
        out = cp.empty((rows, r), dtype=cp.int32)
        total = rows * r
        if total:
            threads = 256
            self._sparse(
                ((total + threads - 1) // threads,),
                (threads,),
                (
                    mat,
                    np.int64(mat.shape[1]),
                    np.int32(rows),
                    np.int32(r),
                    csr_plus[0],
                    csr_plus[1],
                    csr_minus[0],
                    csr_minus[1],
                    out,
                ),
            )
        return out

    def tickets(
        self,
        s: Any,
        m: int,
        n: int,
        th: int,
        tw: int,
        prefix16: Any,
        sigma8: Any,
        thr8: Any,
        all_win: bool,
    ) -> tuple[Any, Any]:
        cp = self.cp
        ntiles = (m // th) * (n // tw)
        digests = cp.empty((ntiles, 8), dtype=cp.uint32)
        wins = cp.empty((ntiles,), dtype=cp.uint8)
        if ntiles:
            self._tickets(
                ((ntiles + TICKET_THREADS - 1) // TICKET_THREADS,),
                (TICKET_THREADS,),
                (
                    s,
                    np.int64(s.shape[1]),
                    np.int32(n),
                    np.int32(th),
                    np.int32(tw),
                    np.int32(ntiles),
                    prefix16,
                    sigma8,
                    thr8,
                    np.int32(1 if all_win else 0),
                    digests,
                    wins,
                ),
            )
        return digests, wins


_KERNEL_CACHE: dict[int, _CupyKernels] = {}


def _wanted_variants() -> tuple[MmaVariant, ...]:
    """MMA_VARIANTS, limited by the POUW_MMA_VARIANTS environment variable."""
    env = os.environ.get("POUW_MMA_VARIANTS", "").strip()
    if not env or env == "all":
        return MMA_VARIANTS
    if env == "none":
        return ()
    names = {x.strip() for x in env.split(",")}
    return tuple(v for v in MMA_VARIANTS if v.name in names)


KERNEL_LOCK = threading.Lock()


def cached_kernels(cp: Any, device_id: int) -> _CupyKernels:
    with KERNEL_LOCK:
        kern = _KERNEL_CACHE.get(device_id)
        if kern is None:
            kern = _CupyKernels(cp)
            _KERNEL_CACHE[device_id] = kern
        return kern
