"""A `pouw node` whose market miner mines with any devnet key, and can be made to
cheat, for tests of the market's defences.

    python -m tests.market_node [--blob-port P] [--market-key I] [--cheat MODE]
                                [--only-bounty N] NODE ARGS...

``--market-key I`` mines with devnet key I (jobs first, filler otherwise).
``--cheat``: ``wrong`` commits a wrong C; ``withhold`` commits the right root but
drops C and never answers a probe; ``other-root`` commits the root of another C and
serves the real one under its own root; ``vanish`` claims jobs and never computes.
``--only-bounty N`` takes only jobs whose bounty is N (to aim a cheater at one job).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import suppress

from chain.address import address_from_pubkey
from chain.keys import devnet_key
from compute.numpy_engine import NumpyEngine
from node.cli import build_parser
from node.market_miner import MarketMiner, market_miner_for
from node.miner import Miner


def cheat(market: MarketMiner, mode: str | None, only_bounty: int | None) -> None:
    """Make ``market`` misbehave in ``mode`` (see the module docstring)."""
    import numpy as np

    from consensus.result import result_root

    if only_bounty is not None:
        pick = market.candidates
        market.candidates = lambda: [  # type: ignore[method-assign]
            (jid, job) for jid, job in pick() if job.bounty == only_bounty
        ]
    honest_commit = market.commit_result
    if mode == "wrong":

        def commit(job_id: bytes, c: np.ndarray) -> object:
            c = c.copy()
            c[1, 2] += 1
            return honest_commit(job_id, c)

        market.commit_result = commit  # type: ignore[method-assign,assignment]
    elif mode == "withhold":

        def commit(job_id: bytes, c: np.ndarray) -> object:
            tx = honest_commit(job_id, c)
            market.store.delete(result_root(c))
            return tx

        market.commit_result = commit  # type: ignore[method-assign,assignment]
        market._reveal = lambda *args: None  # type: ignore[method-assign]  # noqa: SLF001
    elif mode == "other-root":

        def commit(job_id: bytes, c: np.ndarray) -> object:
            market.store.put("c", c)  # served, but under its own root
            fake = c.copy()
            fake[0, 0] += 1
            tx = honest_commit(job_id, fake)
            market.store.delete(result_root(fake))
            return tx

        market.commit_result = commit  # type: ignore[method-assign,assignment]
    elif mode == "vanish":

        taken: set[bytes] = set()
        pick_vanish = market.candidates
        market.candidates = lambda: [  # type: ignore[method-assign]
            (jid, job) for jid, job in pick_vanish() if jid not in taken
        ]

        async def next_work() -> None:
            market.on_tip()
            market._claim_more()  # noqa: SLF001
            for job_id, held in market.held.items():
                held.computed = True  # never computed, never committed
                taken.add(job_id)  # and never claimed again
            return None

        market.next_work = next_work  # type: ignore[method-assign,assignment]


class MarketMiningService:
    name = "market-miner"

    def __init__(
        self, node: object, key_index: int, mode: str | None, only_bounty: int | None
    ) -> None:
        self.node = node
        self.key = devnet_key(key_index)
        self.mode = mode
        self.only_bounty = only_bounty
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        node = self.node
        market = market_miner_for(node, self.key)
        cheat(market, self.mode, self.only_bounty)
        miner = Miner(
            node.chain,  # type: ignore[attr-defined]
            NumpyEngine(),
            address_from_pubkey(self.key.public_key),
            submit=node.submit_block,  # type: ignore[attr-defined]
            select_txs=node.mempool.select,  # type: ignore[attr-defined]
            market=market,
        )
        node.miner = miner  # type: ignore[attr-defined]
        self.task = asyncio.create_task(miner.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.node.miner.interrupt()  # type: ignore[attr-defined]
            self.task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self.task


def main(argv: list[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--blob-port", type=int)
    own.add_argument("--market-key", type=int)
    own.add_argument("--cheat", choices=["wrong", "withhold", "other-root", "vanish"])
    own.add_argument("--only-bounty", type=int)
    mine, rest = own.parse_known_args(argv)
    args = build_parser().parse_args(["node", *rest])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from dataclasses import replace

    from node.cli import exit_after_shutdown, node_config
    from node.service import Node

    config = node_config(args)
    if mine.blob_port:
        config = replace(config, blob_port=mine.blob_port)
    node = Node(config)
    if mine.market_key is not None:
        node.services.append(
            MarketMiningService(node, mine.market_key, mine.cheat, mine.only_bounty)
        )
    try:
        asyncio.run(node.run())
    finally:
        node.close()
    exit_after_shutdown(0)


if __name__ == "__main__":
    sys.exit(main())
