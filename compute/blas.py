"""Direct access to the OpenBLAS that NumPy already loaded: sgemm and its thread count.

The transcript calls sgemm once per r-step from compiled (Numba) code with beta = 1,
so a float32 block accumulates several steps without a Python call or a zeroing pass
per step. That needs the C entry point, found here by looking for the OpenBLAS shared
object NumPy loaded (wheels bundle ``scipy_openblas``; distributions link
``libopenblas``). Nothing is installed or downloaded; when no usable library is found
(MKL or Accelerate builds, other platforms) ``find_blas`` returns None and the engine
uses ``np.matmul(..., out=)`` instead.

Thread count: the engine runs one worker thread per core, each calling single-threaded
sgemm. OpenBLAS built with pthreads has one process-wide thread count (even its
``_local`` setter changes it for everybody), so ``single_threaded`` lowers it for the
duration of a transcript and restores it when the last user leaves.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("pouw.compute")

CBLAS_ROW_MAJOR = 101
CBLAS_NO_TRANS = 111
CBLAS_TRANS = 112

# (sgemm symbol, set_num_threads symbol, get_num_threads symbol, 64-bit integers)
_SYMBOL_SETS = (
    (
        "scipy_cblas_sgemm64_",
        "scipy_openblas_set_num_threads64_",
        "scipy_openblas_get_num_threads64_",
        True,
    ),
    (
        "scipy_cblas_sgemm",
        "scipy_openblas_set_num_threads",
        "scipy_openblas_get_num_threads",
        False,
    ),
    ("cblas_sgemm64_", "openblas_set_num_threads64_", "openblas_get_num_threads64_", True),
    ("cblas_sgemm", "openblas_set_num_threads", "openblas_get_num_threads", False),
)


@dataclass(frozen=True)
class Blas:
    path: str
    # ctypes cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    sgemm: Any
    set_threads: Callable[[int], None] | None
    get_threads: Callable[[], int] | None
    ilp64: bool


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and "openblas" in os.path.basename(parts[-1]).lower():
                    paths.append(parts[-1])
    except OSError:
        pass
    np_dir = os.path.dirname(np.__file__)
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*"):
        paths.extend(sorted(glob.glob(os.path.join(np_dir, pattern))))
    seen: set[str] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def _load(path: str) -> Blas | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for sgemm_name, set_name, get_name, ilp64 in _SYMBOL_SETS:
        if not hasattr(lib, sgemm_name):
            continue
        if not ilp64 and hasattr(lib, "openblas_get_config"):
            get_config = lib.openblas_get_config
            get_config.restype = ctypes.c_char_p
            if b"USE64BITINT" in (get_config() or b""):
                ilp64 = True
        c_int = ctypes.c_int64 if ilp64 else ctypes.c_int32
        proto = ctypes.CFUNCTYPE(
            None,
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.c_int32,
            c_int,
            c_int,
            c_int,
            ctypes.c_float,
            ctypes.c_void_p,
            c_int,
            ctypes.c_void_p,
            c_int,
            ctypes.c_float,
            ctypes.c_void_p,
            c_int,
        )
        sgemm = proto((sgemm_name, lib))
        set_threads = get_threads = None
        if hasattr(lib, set_name) and hasattr(lib, get_name):
            setter = getattr(lib, set_name)
            setter.argtypes = [ctypes.c_int]
            setter.restype = None
            getter = getattr(lib, get_name)
            getter.restype = ctypes.c_int
            set_threads, get_threads = setter, getter
        blas = Blas(path, sgemm, set_threads, get_threads, ilp64)
        if _self_test(blas):
            return blas
        log.warning("sgemm in %s (%s) failed its self-test; not using it", path, sgemm_name)
    return None


def _self_test(blas: Blas) -> bool:
    rng = np.random.default_rng(7)
    a = rng.integers(-127, 127, (5, 7)).astype(np.float32)
    b = rng.integers(-127, 127, (7, 3)).astype(np.float32)
    c = np.ones((5, 3), np.float32)
    blas.sgemm(
        CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, 5, 3, 7, 1.0,
        a.ctypes.data, 7, b.ctypes.data, 3, 1.0, c.ctypes.data, 3,
    )  # fmt: skip
    at = np.ascontiguousarray(a.T)
    d = np.zeros((5, 3), np.float32)
    blas.sgemm(
        CBLAS_ROW_MAJOR, CBLAS_TRANS, CBLAS_NO_TRANS, 5, 3, 7, 1.0,
        at.ctypes.data, 5, b.ctypes.data, 3, 0.0, d.ctypes.data, 3,
    )  # fmt: skip
    expect = a.astype(np.int64) @ b.astype(np.int64)
    return bool(np.array_equal(c, expect + 1) and np.array_equal(d, expect))


_found: Blas | None = None
_searched = False
_search_lock = threading.Lock()


def find_blas() -> Blas | None:
    """The OpenBLAS NumPy uses, with a working sgemm; None when there is none."""
    global _found, _searched
    with _search_lock:
        if not _searched:
            _searched = True
            for path in _candidate_paths():
                _found = _load(path)
                if _found is not None:
                    log.debug("using sgemm from %s", path)
                    break
            else:
                log.info("no OpenBLAS sgemm found next to NumPy; using np.matmul")
        return _found


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextmanager
def single_threaded(blas: Blas | None) -> Iterator[None]:
    """Run BLAS single-threaded inside the block (the callers bring their own threads)."""
    global _threads_users, _threads_saved
    if blas is None or blas.set_threads is None or blas.get_threads is None:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = blas.get_threads()
            blas.set_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                blas.set_threads(_threads_saved)
