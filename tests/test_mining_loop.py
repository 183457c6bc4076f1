"""node/miner.Miner's loop: a job claimed between products does not wait for the filler
product in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from compute.engine import MiningOutput, MiningStats
from node.miner import Miner
from tests.chainutil import address_of
from tests.marketutil import market_devnet, new_chain


class StubbornEngine:
    """A filler product that looks at its stop event only after a second (a niced
    thread on a busy core, or a mainnet filler product on a CPU)."""

    name = "stubborn"

    def __init__(self) -> None:
        self.started = threading.Event()

    def mine(self, params: Any, a: Any, b: Any, template: Any, stop: Any = None,
             tickets_out: Any = None, keep_product_on_stop: bool = False,
             **known: Any) -> MiningOutput:  # fmt: skip
        self.started.set()
        time.sleep(1.0)
        work = template.statement(a.shape[0], a.shape[1], b.shape[1], b"\0" * 32, b"\0" * 32)
        return MiningOutput(work, None, [], True, MiningStats())


def test_a_job_for_us_cuts_the_filler_short_without_waiting_for_it(tmp_path: Path) -> None:
    net = market_devnet()
    chain = new_chain(tmp_path / "chain", net)
    engine = StubbornEngine()
    miner = Miner(chain, engine, address_of(4), chain.process_block)  # type: ignore[arg-type]

    async def run() -> tuple[object, float, threading.Event]:
        task = asyncio.ensure_future(miner.mine_once())
        while not engine.started.is_set():
            await asyncio.sleep(0.005)
        stop = miner.stop_event
        t0 = time.monotonic()
        miner._job_claimed()  # noqa: SLF001 - what MarketMiner.wake calls
        result = await asyncio.wait_for(task, 5.0)
        return result, time.monotonic() - t0, stop

    try:
        result, waited, stop = asyncio.run(run())
    finally:
        miner.close()
    assert result is None and stop.is_set()
    assert waited < 0.5, f"the loop waited {waited:.2f} s for the filler"
