"""An engine over the consensus reference (int64 NumPy): slow, obviously right.

Useful to cross-check the fast engines and to debug a disagreement; never the
default (``pouw node --engine reference`` asks for it explicitly).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import numpy.typing as npt

from compute.engine import MiningOutput, MiningStats, WorkTemplate
from consensus.commitments import commit_cols, commit_rows
from consensus.params import PouwParams
from consensus.pouw import mine_reference


class ReferenceEngine:
    name = "reference"

    def mine(
        self,
        params: PouwParams,
        a: npt.NDArray[np.int8],
        b: npt.NDArray[np.int8],
        template: WorkTemplate,
        stop: threading.Event | None = None,
        tickets_out: list[bytes] | None = None,
        keep_product_on_stop: bool = False,
    ) -> MiningOutput:
        started = time.perf_counter()
        (m, k), n = a.shape, b.shape[1]
        work = template.statement(m, k, n, commit_rows(a), commit_cols(b))
        result = mine_reference(params, work, a, b)
        if tickets_out is not None:
            tickets_out.extend(result.tickets)
        stats = MiningStats(m * n * k, len(result.tickets), {"total": time.perf_counter() - started})
        return MiningOutput(work, result.product.astype(np.int32), result.seals, False, stats)
