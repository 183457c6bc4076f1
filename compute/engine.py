"""The interface every mining engine implements (NumPy on the CPU, CuPy on a GPU).

An engine takes int8 operands A (m x k) and B (k x n) in [-64, 63] and a template
that turns the operands' commitments into a WorkStatement (the chain binds hA, hB
and the shape into the header, so the header prefix is known only once the operands
are). It returns the exact product and the seals of every winning tile: one call
both mines and does the useful work ("2-for-1"). Results must equal consensus/pouw.py
bit for bit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from consensus.params import PouwParams
from consensus.seal import Seal, WorkStatement

# The leaves of A's rows and of B's columns, each (lines, 8) uint32 words.
OperandLeaves = tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]


def packs_b_from_rows(engine: object, params: PouwParams) -> bool:
    """Whether ``engine.mine(..., b_t=)`` reads only B^T's rows (an engine without
    that path reads B, which the caller then transposes itself)."""
    packs = getattr(engine, "packs_b_from_rows", None)
    return bool(callable(packs) and packs(params))


def engine_path(engine: object) -> str:
    """How ``engine`` multiplies (NumpyEngine: int8-vnni, int8-avxvnni, int16-avx2,
    sgemm or np.matmul); an engine with one way only answers its name."""
    path = getattr(engine, "path", None)
    return path if isinstance(path, str) else str(getattr(engine, "name", "unknown"))


class WorkTemplate(Protocol):
    """Builds the statement a header would make about a product of these operands."""

    def statement(self, m: int, k: int, n: int, h_a: bytes, h_b: bytes) -> WorkStatement: ...


@dataclass(frozen=True)
class FixedTemplate:
    """A template whose header prefix hash is given (tests, benchmarks, filler work)."""

    prefix_hash: bytes
    target: int

    def statement(self, m: int, k: int, n: int, h_a: bytes, h_b: bytes) -> WorkStatement:
        return WorkStatement(self.prefix_hash, m, k, n, h_a, h_b, self.target)


@dataclass
class MiningStats:
    """Where the time went (seconds) and what was done; filled in by the engine."""

    multiply_adds: int = 0
    tickets: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class MiningOutput:
    work: WorkStatement
    product: npt.NDArray[np.int32] | None  # exact A . B; None if stopped before the end
    seals: list[Seal]  # winning tiles in tile-index order (empty if stopped early)
    stopped: bool  # True when ``stop`` was set before the product finished
    stats: MiningStats


class MiningEngine(Protocol):
    name: str

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
        """Mine A . B. If ``stop`` is set mid-way, return early with stopped=True.

        What a caller may already have (a market miner downloads A and B^T and checks
        every row against the job's roots), so that an engine need not compute it
        again: ``operand_leaves``, the Merkle leaves of A's rows and B's columns;
        ``b_t``, B^T itself (C-contiguous; the seals slice its rows). Wrong ones give
        seals that do not verify.

        The lottery of a stale header is dead but a useful product is not: with
        ``keep_product_on_stop`` the engine finishes C (skipping the fold and the
        tickets) and returns it with no seals; without it, product is None.

        When ``tickets_out`` is given, every tile's ticket is appended to it in
        tile-index order (tests compare them with the reference).
        """
        ...
