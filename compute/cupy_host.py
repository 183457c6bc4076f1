"""Host-side helpers of the GPU engine: the rank each transcript kernel needs, sparse
patterns as CSR, hash prefixes and noise templates for the device kernels, the spot
checks of device-built Merkle levels, and the stage timer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.cuda_mma_variants import MMA_VARIANT_BY_NAME
from consensus.commitments import line_leaf
from consensus.hashing import TAG_MERKLE_NODE, TAG_NOISE, TAG_TICKET, tagged_hash


def kernel_r_multiple(kernel: str) -> int:
    """The noise rank must be a multiple of this for the kernel (its k step)."""
    if kernel in MMA_VARIANT_BY_NAME:
        return 32
    return {"mma": 32, "wmma": 16, "wmma_ptx": 16}.get(kernel, 1)


def pattern_csr(idx: npt.NDArray[np.int64], r: int) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, positions): positions p with idx[p] == q are positions[ptr[q]:ptr[q+1]]."""
    order = np.argsort(idx, kind="stable").astype(np.int32)
    ptr = np.zeros(r + 1, dtype=np.int32)
    ptr[1:] = np.cumsum(np.bincount(idx, minlength=r))
    return ptr, order


def be_words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=">u4").astype(np.uint32)


def ticket_prefix() -> bytes:
    return tag_prefix(TAG_TICKET)


def tag_prefix(tag: str) -> bytes:
    digest = hashlib.sha256(tag.encode("ascii")).digest()
    return digest + digest


def noise_template(seed: bytes, label: int) -> np.ndarray:
    """The one padded SHAKE-256 block (rate 136) of a dense noise stream, as 17
    little-endian lanes, with the 4 big-endian index bytes (offsets 97..100) left zero
    for the kernel to fill (consensus.noise.noise_stream)."""
    msg = tag_prefix(TAG_NOISE) + bytes(seed) + bytes([label]) + bytes(4)
    if len(msg) > 135:
        raise ValueError("noise seed too long for one SHAKE-256 block")
    block = bytearray(136)
    block[: len(msg)] = msg
    block[len(msg)] ^= 0x1F
    block[135] ^= 0x80
    return np.frombuffer(bytes(block), dtype="<u8").astype(np.uint64)


def split_levels(flat: np.ndarray, count: int) -> list[list[bytes]]:
    """Levels (leaves first) from the concatenated (nodes, 32) uint8 array."""
    raw = np.ascontiguousarray(flat).tobytes()
    levels: list[list[bytes]] = []
    off = 0
    size = count
    while True:
        levels.append([raw[32 * i : 32 * i + 32] for i in range(off, off + size)])
        off += size
        if size <= 1:
            break
        size = (size + 1) // 2
    return levels


def levels_ok(levels: list[list[bytes]], lines: Callable[[int], bytes], rng: Any) -> bool:
    """Spot check of device-built Merkle levels against consensus: a few leaves (first,
    last, random) re-hashed from their lines, and at every level a few parents (first,
    last, random) re-hashed from their children, odd-node promotion included."""
    count = len(levels[0])
    if count == 0:
        return False
    for i in {0, count - 1, *(int(x) for x in rng.integers(0, count, size=3))}:
        if levels[0][i] != line_leaf(lines(i)):
            return False
    for lv in range(1, len(levels)):
        below, level = levels[lv - 1], levels[lv]
        if len(level) != (len(below) + 1) // 2:
            return False
        size = len(level)
        for i in {0, size - 1, *(int(x) for x in rng.integers(0, size, size=2))}:
            if 2 * i + 1 < len(below):
                want = tagged_hash(TAG_MERKLE_NODE, below[2 * i], below[2 * i + 1])
            else:
                want = below[2 * i]
            if level[i] != want:
                return False
    return len(levels[-1]) == 1


PRE_STAGES = ("commit_gpu", "noise_gpu")


class Stages:
    """Device stage times from events (GPU) and host stage times from perf_counter."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.events: list[tuple[str, Any, Any]] = []
        self.host: dict[str, float] = {}

    def device(self, name: str, ev0: Any, ev1: Any) -> None:
        self.events.append((name, ev0, ev1))

    def add_host(self, name: str, seconds: float) -> None:
        self.host[name] = self.host.get(name, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        out = dict(self.host)
        if self.events:
            for name, e0, e1 in self.events:
                out[name] = out.get(name, 0.0) + self.backend.elapsed(e0, e1)
            # "device": the span of the mining proper (A'/B' build to tickets); the GPU
            # commitments and noise lines before it are reported as their own stages.
            main = [ev for ev in self.events if ev[0] not in PRE_STAGES] or self.events
            out["device"] = self.backend.elapsed(main[0][1], main[-1][2])
            out["device_all"] = out["device"] + sum(out.get(name, 0.0) for name in PRE_STAGES)
        return out
