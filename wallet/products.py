"""A buyer's product cut into jobs, and put back together.

A product A (m x k) . B (k x n) of any size is cut into parts that each fit the
network's job rules (consensus/seal.check_shape): rows and columns in blocks of at
most ``m_max`` / ``n_max`` (multiples of the ticket tile), the inner dimension in
blocks of at most ``k_max`` (multiples of the noise rank r), each part at most
``max_multiply_adds``, and no part larger than the buyer's ``max_part_multiply_adds``
so that many miners can work on one product at once. Asked for more parts than that
(``min_parts``), it cuts the larger operand's free dimension first (B's columns when
n > m, else A's rows): each part then ships a slice of the larger operand and all of
the smaller one. Edges are padded with zeros
(which change no entry of C). C is the sum over inner blocks of each part's product,
cropped back to m x n.

The plan and the job ids are kept in a manifest (JSON), so that ``pouw job status``
and ``pouw job result`` can follow a product across processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consensus.params import PouwParams

# A part big enough that its transfers and transactions are small next to its work,
# small enough that a product of a few such parts spreads over several miners.
DEFAULT_PART_MULTIPLY_ADDS = 2**31
MAX_PARTS = 256  # one submit transaction per part: keeps a product's batch bounded


class PlanError(ValueError):
    """The product cannot be cut into jobs on this network (the message says why)."""


@dataclass(frozen=True)
class Part:
    """Rows [r0, r1) of A, columns [c0, c1) of B, inner indices [k0, k1); padded to
    ``shape`` (m, k, n) for the job."""

    r0: int
    r1: int
    c0: int
    c1: int
    k0: int
    k1: int
    shape: tuple[int, int, int]

    @property
    def multiply_adds(self) -> int:
        m, k, n = self.shape
        return m * k * n

    def operands(
        self, a: npt.NDArray[np.int8], b: npt.NDArray[np.int8]
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
        m, k, n = self.shape
        if (self.r1 - self.r0, self.k1 - self.k0, self.c1 - self.c0) == (m, k, n):
            # no padding: views, not 18 MB of copies on the way to a submit or a check
            return a[self.r0 : self.r1, self.k0 : self.k1], b[self.k0 : self.k1, self.c0 : self.c1]
        pa = np.zeros((m, k), np.int8)
        pa[: self.r1 - self.r0, : self.k1 - self.k0] = a[self.r0 : self.r1, self.k0 : self.k1]
        pb = np.zeros((k, n), np.int8)
        pb[: self.k1 - self.k0, : self.c1 - self.c0] = b[self.k0 : self.k1, self.c0 : self.c1]
        return pa, pb

    def operand_bt(self, bt: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
        """The part's Bᵀ cut from the whole product's Bᵀ (B transposed once for all the
        parts): rows [c0, c1), padded as ``operands`` pads B. A view where the part is
        not padded (of contiguous rows where it takes every k, so nothing is copied)."""
        _, k, n = self.shape
        block = bt[self.c0 : self.c1, self.k0 : self.k1]
        if block.shape == (n, k):
            return block
        out = np.zeros((n, k), np.int8)
        out[: self.c1 - self.c0, : self.k1 - self.k0] = block
        return out


def _round_up(x: int, step: int) -> int:
    return -(-x // step) * step


class _Blocks:
    """[0, total) cut into the fewest near-equal blocks of at most ``cap`` (a multiple
    of ``step``), each but the last a multiple of ``step``: counted and measured without
    listing them (a shape of 10^8 would list millions)."""

    def __init__(self, total: int, cap: int, step: int) -> None:
        count = -(-total // cap)
        self.total = total
        self.size = min(cap, _round_up(-(-total // count), step))
        self.count = -(-total // self.size)
        self.widest = min(self.size, total)

    def spans(self) -> list[tuple[int, int]]:
        return [(lo, min(self.total, lo + self.size)) for lo in range(0, self.total, self.size)]


def plan_parts(
    m: int, k: int, n: int, pouw: PouwParams,
    max_part_multiply_adds: int = DEFAULT_PART_MULTIPLY_ADDS, min_parts: int = 1,
) -> list[Part]:  # fmt: skip
    """The parts of an m x k x n product (see the module's docstring). Raises PlanError."""
    if min(m, k, n) < 1:
        raise PlanError(f"shape {m}x{k}x{n}: every dimension must be at least 1")
    plain_count = 0  # the parts without min_parts (0: not asked for)
    if min_parts > 1:  # at least that many: the job size may already cut as many or more
        plain = plan_parts(m, k, n, pouw, max_part_multiply_adds)
        if len(plain) >= min_parts:
            return plain
        plain_count = len(plain)
    th, tw, r = pouw.tile_rows, pouw.tile_cols, pouw.noise_rank
    k_cap = pouw.k_max - pouw.k_max % r
    k_blocks = _Blocks(k, k_cap, r)
    kp = max(pouw.k_min, _round_up(k_blocks.widest, r))
    col_cap = pouw.n_max - pouw.n_max % tw
    wanted = max(1, -(-min_parts // k_blocks.count))
    if n > m:  # cut B's columns first: every part then ships all of the smaller A
        col_cap = min(col_cap, max(tw, _round_up(-(-n // wanted), tw)))
    c_blocks = _Blocks(n, col_cap, tw)
    npad = _round_up(c_blocks.widest, tw)
    budget = min(pouw.max_multiply_adds, max(max_part_multiply_adds, th * kp * npad))
    row_cap = min(pouw.m_max - pouw.m_max % th, max(th, budget // (kp * npad) // th * th))
    wanted = max(1, -(-min_parts // (k_blocks.count * c_blocks.count)))
    row_cap = min(row_cap, max(th, _round_up(-(-m // wanted), th)))
    r_blocks = _Blocks(m, row_cap, th)
    count = k_blocks.count * r_blocks.count * c_blocks.count
    if count > MAX_PARTS and plain_count:  # the shape alone fits: the asked count does not
        over = (
            f"is more than the {MAX_PARTS} jobs a product may have" if min_parts > MAX_PARTS
            else f"would cut {m}x{k}x{n} into {count} jobs, more than the {MAX_PARTS} a "
            "product may have"
        )  # fmt: skip
        raise PlanError(
            f"--parts {min_parts} {over}: lower --parts (without it {m}x{k}x{n} takes "
            f"{plain_count})"
        )
    if count > MAX_PARTS:  # counted before any part is made: a huge shape answers at once
        raise PlanError(
            f"{m}x{k}x{n} needs {count} jobs, more than {MAX_PARTS}: submit it in pieces"
        )
    parts = [
        Part(r0, r1, c0, c1, k0, k1, (_round_up(r1 - r0, th), kp, npad))
        for (k0, k1) in k_blocks.spans() for (r0, r1) in r_blocks.spans()
        for (c0, c1) in c_blocks.spans()
    ]  # fmt: skip
    if any(p.multiply_adds > pouw.max_multiply_adds for p in parts):
        raise PlanError(f"{m}x{k}x{n}: a part exceeds the network's job size")
    return parts


def split_bounty(total: int, parts: Sequence[Part]) -> list[int]:
    """The bounty of each part, in proportion to its multiply-adds (sums to ``total``)."""
    work = sum(p.multiply_adds for p in parts)
    shares = [total * p.multiply_adds // work for p in parts]
    shares[-1] += total - sum(shares)
    if min(shares) < 1:
        raise PlanError(
            f"a bounty of {total} base units cannot give each of the product's {len(parts)} "
            "job(s) a base unit in proportion to its work: raise --bounty (`pouw job quote` "
            "suggests one at the going rate)"
        )
    return shares


def least_total_bounty(parts: Sequence[Part], per_part: int) -> int:
    """A total whose ``split_bounty`` gives every part ``per_part`` or more (at most a
    few units above the least): the smallest part's share decides (shares follow the
    work, so parts of unequal work need more than ``per_part`` times their count)."""
    work = sum(p.multiply_adds for p in parts)
    smallest = min(p.multiply_adds for p in parts)
    return -(-per_part * work // smallest)  # its share, total * smallest // work, is enough


def assemble(m: int, n: int, parts: Sequence[Part], results: Sequence[npt.NDArray[Any]]
             ) -> npt.NDArray[np.int64]:  # fmt: skip
    """C (m x n, int64) from each part's product (padded shape)."""
    c = np.zeros((m, n), np.int64)
    for part, res in zip(parts, results, strict=True):
        c[part.r0 : part.r1, part.c0 : part.c1] += res[: part.r1 - part.r0, : part.c1 - part.c0]
    return c


@dataclass
class Manifest:
    """What a client needs to follow a product: its shape, its parts, their jobs."""

    m: int
    k: int
    n: int
    parts: list[Part]
    job_ids: list[str] = field(default_factory=list)
    bounties: list[int] = field(default_factory=list)
    network: str = ""
    # each part's signed JOB_SUBMIT (hex): sent again should the node lose it (a restart
    # before a block took it)
    submits: list[str] = field(default_factory=list)

    @property
    def product_id(self) -> str:
        """A handle for the product: a hash of its job ids (one job: that job's id)."""
        if len(self.job_ids) == 1:
            return self.job_ids[0]
        return hashlib.sha256("".join(self.job_ids).encode()).hexdigest()

    def to_json(self) -> str:
        data = asdict(self)
        data["product_id"] = self.product_id
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
            parts = [Part(**{**p, "shape": tuple(p["shape"])}) for p in data["parts"]]
            return cls(
                int(data["m"]), int(data["k"]), int(data["n"]), parts,
                [str(j) for j in data["job_ids"]], [int(x) for x in data["bounties"]],
                str(data.get("network", "")), [str(x) for x in data.get("submits", [])],
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise PlanError(f"not a product manifest: {exc}") from None
        except RecursionError:
            raise PlanError("not a product manifest: JSON nested too deeply") from None

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.product_id}.json"
        path.write_text(self.to_json())
        return path
