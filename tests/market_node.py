"""A `pouw node` whose market miner mines with any devnet key, and can be made to
cheat (commit a wrong C), for tests of the challenge path.

    python -m tests.market_node [--blob-port P] [--market-key I] [--corrupt-odd] NODE ARGS...

``--market-key I`` mines with devnet key I (jobs first, filler otherwise);
``--corrupt-odd`` makes it commit a wrong C for jobs with an odd bounty (tests).
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
from node.market_miner import market_miner_for
from node.miner import Miner


class MarketMiningService:
    name = "market-miner"

    def __init__(self, node: object, key_index: int, corrupt_odd: bool) -> None:
        self.node = node
        self.key = devnet_key(key_index)
        self.corrupt_odd = corrupt_odd
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        node = self.node
        market = market_miner_for(node, self.key)
        if self.corrupt_odd:
            honest = market.commit_result

            def commit(job_id: bytes, c):  # type: ignore[no-untyped-def]
                from chain.jobs import get_job

                job = get_job(node.chain.state_get, job_id)  # type: ignore[attr-defined]
                if job is not None and job.bounty % 2:
                    c = c.copy()
                    c[1, 2] += 1
                return honest(job_id, c)

            market.commit_result = commit  # type: ignore[method-assign]
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
    own.add_argument("--corrupt-odd", action="store_true")
    mine, rest = own.parse_known_args(argv)
    args = build_parser().parse_args(["node", *rest])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from dataclasses import replace

    from node.cli import node_config
    from node.service import Node

    config = node_config(args)
    if mine.blob_port:
        config = replace(config, blob_port=mine.blob_port)
    node = Node(config)
    if mine.market_key is not None:
        node.services.append(MarketMiningService(node, mine.market_key, mine.corrupt_odd))
    try:
        asyncio.run(node.run())
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
