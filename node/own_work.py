"""Your own int8 matrix products mine blocks: ``OwnWork.matmul(a, b)`` returns the exact
C = A . B and, on the way, draws the block lottery on a template from a node.

    from node.own_work import OwnWork
    work = OwnWork(rpc, network, "dpw1...")        # RpcClient with the node's auth
    c = work.matmul(a, b)                           # int8 in [-64, 63] -> exact int32 C
    work.stats                                      # products, multiply-adds, blocks

The product runs through the mining engine (compute/), so its partial sums are the
transcript the tickets come from; a winning tile becomes a block submitted to the node
for ``address``. Templates are fetched with the product's (padded) shape and reused for
``template_ttl_s`` or until the node's tip changes, so many products in a row share
one. Shapes the network does not take as a job (edges not multiples of the tile, k not
a multiple of r, or larger than the caps) are cut into parts and zero-padded as a
buyer's product is (wallet/products.py); C is put back together and cropped.

Failures never cost C: with the node down, a stale template or a rejected block, the
product is still returned (the lottery is lost, ``stats`` counts why). Only bad
operands (not integer, outside [-64, 63], shapes that do not multiply) raise
``OwnWorkError``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.address import decode_address
from chain.network import Network
from compute.engine import FixedTemplate, MiningEngine
from node.remote_template import TemplateError, template_from_json
from node.template import BlockTemplate
from wallet.job_terms import JobError
from wallet.job_txs import check_operand
from wallet.products import PlanError, assemble, plan_parts
from wallet.rpc import RpcClient, RpcConnectionError, RpcError
from wallet.rpc_calls import get_block_template, submit_block

log = logging.getLogger("pouw.ownwork")

TEMPLATE_TTL_S = 5.0  # a template is refetched this often (time and new transactions)


class OwnWorkError(ValueError):
    """The operands cannot be multiplied here; the message says how to fix them."""


@dataclass
class OwnWorkStats:
    products: int = 0  # engine calls (one per part)
    multiply_adds: int = 0  # of the padded parts: the work the lottery rode on
    blocks_found: int = 0
    blocks_accepted: int = 0
    stale: int = 0  # wins whose template the tip had left behind
    node_errors: int = 0  # products mined without a template (node unreachable)


class OwnWork:
    def __init__(
        self,
        rpc: RpcClient,
        network: Network,
        address: str,
        engine: MiningEngine | None = None,
        template_ttl_s: float = TEMPLATE_TTL_S,
    ) -> None:
        if engine is None:
            from compute.select import select_engine

            engine = select_engine(None)
        self.rpc = rpc
        self.network = network
        self.address = address
        self.miner = decode_address(address, network.hrp)
        self.engine = engine
        self.template_ttl_s = template_ttl_s
        self.stats = OwnWorkStats()
        self._templates: dict[tuple[int, int, int], tuple[float, str, BlockTemplate]] = {}

    def _template(self, shape: tuple[int, int, int]) -> BlockTemplate | None:
        """A template for this shape on the node's tip, or None when the node cannot
        give one (the product is then mined without a lottery)."""
        try:
            tip = str(self.rpc.call("getbestblockhash"))
            cached = self._templates.get(shape)
            if cached and cached[1] == tip and time.monotonic() - cached[0] < self.template_ttl_s:
                return cached[2]
            data = get_block_template(self.rpc, self.address, shape)
            template = template_from_json(data, self.network, self.miner).template
        except (RpcConnectionError, RpcError, TemplateError) as exc:
            self.stats.node_errors += 1
            log.warning("no template (%s): the product is computed without the lottery", exc)
            return None
        self._templates[shape] = (time.monotonic(), tip, template)
        return template

    def _mine(self, a: npt.NDArray[np.int8], b: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]:
        shape = (a.shape[0], a.shape[1], b.shape[1])
        template = self._template(shape)
        fixed = template is None
        out = self.engine.mine(
            self.network.pouw, a, b,
            template if template is not None else FixedTemplate(bytes(32), 0),
        )  # fmt: skip
        assert out.product is not None  # never stopped: no stop event
        self.stats.products += 1
        self.stats.multiply_adds += shape[0] * shape[1] * shape[2]
        if not fixed and out.seals:
            assert template is not None
            self._submit(template, out)
        return out.product

    def _submit(self, template: BlockTemplate, out: Any) -> None:
        block = template.block_with_seal(out.work, out.seals[0])
        self.stats.blocks_found += 1
        try:
            answer = submit_block(self.rpc, block.to_bytes())
        except (RpcConnectionError, RpcError) as exc:
            self.stats.node_errors += 1
            log.warning("submitblock failed: %s", exc)
            return
        if answer is None:
            self.stats.blocks_accepted += 1
            self._templates.clear()  # our block is the new tip
            log.info("block %s accepted at height %d", block.hash.hex()[:16], block.height)
        else:
            self.stats.stale += 1
            log.info("block %s not taken: %s", block.hash.hex()[:16], answer)

    def matmul(self, a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.int32]:
        """The exact product of int8 matrices with entries in [-64, 63] (int32; int64 if
        the inner dimension is cut into parts), drawing the block lottery on the way."""
        try:
            a8, b8 = check_operand(_host(a), "A"), check_operand(_host(b), "B")
        except JobError as exc:
            raise OwnWorkError(str(exc)) from None
        if a8.shape[1] != b8.shape[0]:
            raise OwnWorkError(f"A is {a8.shape}, B is {b8.shape}: inner dimensions differ")
        (m, k), n = a8.shape, b8.shape[1]
        try:
            parts = plan_parts(m, k, n, self.network.pouw, self.network.pouw.max_multiply_adds)
        except PlanError as exc:
            raise OwnWorkError(str(exc)) from None
        if len(parts) == 1 and parts[0].shape == (m, k, n):
            return self._mine(a8, b8)  # already a shape the network takes: no copies
        results = [self._mine(*part.operands(a8, b8)) for part in parts]
        c = assemble(m, n, parts, results)
        return c.astype(np.int32) if len({(p.k0, p.k1) for p in parts}) == 1 else c


def _host(x: Any) -> npt.NDArray[Any]:
    """An operand as a NumPy array. A GPU array (CuPy, or anything with the CUDA array
    interface and ``.get()``) is copied to the host: the engines stage operands through
    host memory today (the commitments are checked there), so there is no zero-copy
    path for device operands yet."""
    if hasattr(x, "__cuda_array_interface__"):
        get = getattr(x, "get", None)
        if get is None:
            raise OwnWorkError("a GPU array without .get(): copy it to the host first")
        return np.asarray(get())
    return np.asarray(x)
