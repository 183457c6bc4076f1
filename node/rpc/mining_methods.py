"""RPC methods of mining: block templates (with long-poll), submitblock, getmininginfo."""

from __future__ import annotations

import time
from typing import Any

from chain.block import Block
from chain.encoding import DecodeError
from chain.state import StateError
from chain.validation import Verdict
from compute.engine import engine_path
from consensus.difficulty import block_work
from consensus.params import PouwParams
from consensus.seal import check_shape
from node.rpc.base import MethodsBase
from node.rpc.encode import difficulty, hex256, template_json
from node.rpc.errors import DESERIALIZATION_ERROR, INVALID_PARAMETER, RpcError
from node.rpc.market import MarketMethods
from node.rpc.params import SubmitParams, TemplateParams
from node.rpc.protocol import CallContext, NoParams
from node.template import build_template


def shape_rules(pouw: PouwParams, m: int, k: int, n: int) -> str:
    """The network's shape rules that ``[m, k, n]`` breaks, with their numbers."""
    broken = []
    if not (pouw.k_min <= k <= pouw.k_max) or k % pouw.noise_rank:
        broken.append(f"k a multiple of {pouw.noise_rank} from {pouw.k_min} to {pouw.k_max}")
    if not (0 < m <= pouw.m_max) or m % pouw.tile_rows:
        broken.append(f"m a multiple of {pouw.tile_rows} up to {pouw.m_max}")
    if not (0 < n <= pouw.n_max) or n % pouw.tile_cols:
        broken.append(f"n a multiple of {pouw.tile_cols} up to {pouw.n_max}")
    if not broken:
        broken.append(f"m*k*n at most {pouw.max_multiply_adds} multiply-adds (it is {m * k * n})")
    return "; ".join(broken)


class MiningMethods(MarketMethods, MethodsBase):
    async def getblocktemplate(self, ctx: CallContext, p: TemplateParams) -> dict[str, Any]:
        """A block template for ``miner`` (long-poll with ``longpollid``)."""
        miner = self.address(p.miner, "miner")
        if p.shape is None:
            shape = (self.net.filler.m, self.net.filler.k, self.net.filler.n)
        else:
            m, k, n = p.shape
            check = check_shape(self.net.pouw, m, k, n)
            if not check.ok:
                assert check.reason is not None
                raise RpcError(
                    INVALID_PARAMETER,
                    f"invalid parameter 'shape': [{m}, {k}, {n}] is refused by the network "
                    f"({check.reason.value}): give {shape_rules(self.net.pouw, m, k, n)}",
                )
            shape = (m, k, n)
        if p.longpollid is not None:
            wanted = p.longpollid
            await self.service.wait_change(lambda: self.service.longpollid() != wanted, None, ctx)
        chain = self.node.chain
        ref = None
        if p.job is not None:
            ref, shape = self.claimed_job(bytes.fromhex(p.job), miner)
        try:
            template = build_template(
                chain, miner, self.node.mempool.select(), shape, int(time.time()), job=ref
            )
        except StateError as exc:
            raise RpcError(INVALID_PARAMETER, f"invalid parameter 'job': {exc}") from None
        out = template_json(template, self.net)
        out["longpollid"] = self.service.longpollid()
        out["mintime"] = self.mediantime(chain.tip) + 1
        out["curtime"] = template.header.timestamp
        out["fees"] = sum(tx.fee for tx in template.txs)
        return out

    def submitblock(self, ctx: CallContext, p: SubmitParams) -> str | None:
        """Submit a mined block (hex). BIP22: null, "duplicate", "inconclusive" or a reason."""
        try:
            block = Block.from_bytes(bytes.fromhex(p.hexdata))
        except (DecodeError, ValueError) as exc:
            raise RpcError(DESERIALIZATION_ERROR, f"Block decode failed: {exc}") from None
        result = self.node.submit_block(block)
        if result.duplicate:
            return "duplicate"
        if result.check.verdict is Verdict.DEFER:
            return "inconclusive"
        if not result.check.ok:
            reason = result.check.reason
            return reason.value if reason is not None else "rejected"
        if any(b.hash == block.hash for b in result.connected):
            return None
        return "inconclusive"  # valid, stored on a side chain

    def getmininginfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """Height, difficulty, target, network rate estimate, pool size, own miner stats."""
        chain = self.node.chain
        rate = self.network_rate()
        miner = self.node.miner
        return {
            "chain": self.net.name,
            "blocks": chain.tip.height,
            "difficulty": difficulty(self.net, chain.tip_header.target),
            "target": hex256(chain.tip_header.target),
            "networkmultiplyaddsps": rate,
            "pooledtx": len(self.node.mempool),
            "mining": miner is not None,
            "engine": miner.engine.name if miner else None,
            "enginepath": engine_path(miner.engine) if miner else None,
            "localmultiplyaddsps": miner.counters.multiply_adds_per_s() if miner else 0.0,
            "localproducts": miner.counters.products if miner else 0,
            "localmultiplyadds": miner.counters.multiply_adds if miner else 0,
            "localjobmultiplyadds": miner.counters.job_multiply_adds if miner else 0,
            "market": self.local_market() if miner else None,
            "blocksfound": miner.counters.blocks_accepted if miner else 0,
            "filler": [self.net.filler.m, self.net.filler.k, self.net.filler.n],
            "blockwork": hex256(block_work(chain.tip_header.target)),
        }
