"""The node's own mining loop: templates on the tip, filler operands, the engine.

Chain work happens on the event loop's thread; only the engine's product runs in a
worker thread, so the chain and the database are touched by one thread. A tip change
(or shutdown) sets the stop event, and the engine drops the stale lottery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from chain.block import Block
from chain.chainstate import ChainState, ProcessResult
from chain.state import StateError
from chain.tx import Transaction
from compute.engine import (
    MiningEngine,
    MiningOutput,
    WorkTemplate,
    engine_path,
    packs_b_from_rows,
)
from compute.priority import lower_thread_priority
from compute.transpose import transposed
from consensus.difficulty import block_work
from consensus.ints import u64
from consensus.params import PouwParams
from consensus.pouw import filler_matrices
from node.market_miner import MarketMiner
from node.template import BlockTemplate, JobRef, build_template

log = logging.getLogger("pouw.mining")

# A template is rebuilt at least this often (its timestamp stays near the clock and
# new transactions get in), and whenever the tip or the job change.
TEMPLATE_REFRESH_S = 5.0


@dataclass
class MiningCounters:
    products: int = 0
    multiply_adds: int = 0
    job_multiply_adds: int = 0  # of those, multiply-adds of paid jobs' products
    blocks_found: int = 0
    blocks_accepted: int = 0
    started: float = 0.0

    def multiply_adds_per_s(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.multiply_adds / elapsed if elapsed > 0 else 0.0


def _mine(
    engine: MiningEngine, params: PouwParams, a: np.ndarray, b: np.ndarray,
    template: WorkTemplate, stop: threading.Event, **known: Any,
) -> MiningOutput:  # fmt: skip
    """engine.mine on the executor. B that came as B^T's rows (a market job) is
    transposed there first, off the event loop, unless this engine reads B^T's rows."""
    b_t = known.get("b_t")
    if b_t is not None and not packs_b_from_rows(engine, params):
        b = transposed(b_t)  # 16 MB in about 20 ms: not on the node's event loop
    return engine.mine(params, a, b, template, stop, **known)


class Miner:
    def __init__(
        self,
        chain: ChainState,
        engine: MiningEngine,
        miner: bytes,
        submit: Callable[[Block], ProcessResult],
        select_txs: Callable[[], list[Transaction]] = list,
        market: MarketMiner | None = None,
    ) -> None:
        self.chain = chain
        self.engine = engine
        self.miner = miner
        self.submit = submit
        self.select_txs = select_txs
        self.stop_event = threading.Event()
        self.counters = MiningCounters()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pouw-mine")
        # Filler (no paid job in hand) runs at a lower priority, in a thread and on
        # engine workers of its own (compute/priority.py): it yields the cores to the
        # node's network, RPC and blob serving, and to paid products.
        twin = getattr(engine, "low_priority_twin", None)
        self.filler_engine: MiningEngine = twin() if callable(twin) else engine
        self._filler_pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pouw-filler", initializer=lower_thread_priority
        )
        self._attempt = 0
        self.market = market  # None: filler only
        self._filler_in_flight = False
        self._job_waiting = asyncio.Event()  # set by _job_claimed: leave the filler
        if market is not None:
            market.wake = self._job_claimed
        self._closing = False
        self.compute_rate = 0.0  # multiply-adds per second of the engine (moving average)
        self._cached_template: tuple[object, float, BlockTemplate] | None = None

    def interrupt(self) -> None:
        """Abandon the product in flight (tip changed, or shutting down)."""
        self.stop_event.set()

    def _job_claimed(self) -> None:
        """The market has a job for us between products: a filler product in flight is
        dropped and the mining loop goes on at once, without waiting for the filler
        thread to notice (a mainnet filler product takes seconds on a CPU, and a niced
        filler thread on a busy core took up to 0.1 s to reach its next stop check)."""
        if self._filler_in_flight:
            self.stop_event.set()
            self._job_waiting.set()

    async def _filler_or_job(self, running: asyncio.Future[MiningOutput]) -> bool:
        """Wait for a filler product, or for a job of ours (``_job_claimed``), whichever
        comes first; True if the filler finished."""
        self._job_waiting.clear()
        waiter: asyncio.Future[Any] = asyncio.ensure_future(self._job_waiting.wait())
        try:
            await asyncio.wait((running, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if running.done():
            return True
        running.add_done_callback(lambda f: f.cancelled() or f.exception())  # unread
        return False

    def _template(self, shape: tuple[int, int, int], job: JobRef | None) -> BlockTemplate:
        """A template on the tip, reused while the tip and the job are the same and it
        is younger than TEMPLATE_REFRESH_S: building one applies every pooled
        transaction, which with a busy pool costs more than a small product (new
        transactions wait for the next refresh, as with any miner's templates). Each
        product has operands of its own, so a reused header still draws fresh tickets
        (the seeds bind hA and hB)."""
        key = (self.chain.tip.hash, shape, job)
        now = time.monotonic()
        cached = self._cached_template
        if cached is not None and cached[0] == key and now - cached[1] < TEMPLATE_REFRESH_S:
            return cached[2]
        txs = self.select_txs()
        template = build_template(self.chain, self.miner, txs, shape, int(time.time()), job=job)
        self._cached_template = (key, now, template)
        return template

    async def mine_once(self) -> Block | None:
        """Multiply one product on a fresh template: a paid job whose claim we hold
        (``market``), else filler. Return a block if a tile won.

        A job's product is computed once, whatever happens to the tip meanwhile: a tip
        change kills its lottery, not the product (the engine finishes C), and C is
        committed either way. Filler is simply dropped on a tip change.
        """
        net = self.chain.network
        template = None
        self._attempt += 1
        work = None
        if self.market is not None:
            self.market.rate = self.compute_rate
            work = await self.market.next_work()
        if work is not None:
            ref, a, b = work
            shape = (a.shape[0], a.shape[1], b.shape[1])
            try:
                template = self._template(shape, ref if ref.named else None)
            except StateError as exc:  # the claim is gone from this tip
                log.info("job %s not minable: %s", ref.job_id.hex()[:16], exc)
                self.market.forget(ref.job_id)  # type: ignore[union-attr]
        if template is None:
            work = None
            shape = (net.filler.m, net.filler.k, net.filler.n)
            template = self._template(shape, None)
            seed = template.header.parent + self.miner + u64(self._attempt)
            a, b = filler_matrices(seed, *shape)
        self.stop_event = threading.Event()  # per product: a filler left behind keeps its own
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        paid = work is not None
        engine = self.engine if paid else self.filler_engine
        pool = self._pool if paid else self._filler_pool
        self._filler_in_flight = not paid
        known = self.market.known_of(work[0].job_id) if work and self.market else {}
        try:
            running = loop.run_in_executor(
                pool, partial(_mine, engine, keep_product_on_stop=paid, **known),
                net.pouw, a, b, template, self.stop_event,
            )  # fmt: skip
            if not paid and not await self._filler_or_job(running):
                return None  # the filler winds down on its own thread
            out = await running
        finally:
            self._filler_in_flight = False
        if work is not None and out.product is not None and not self._closing:
            log.info(
                "job %s: product %dx%dx%d in %.3f s",
                work[0].job_id.hex()[:16], *shape, time.monotonic() - started,
            )  # fmt: skip
            self.counters.job_multiply_adds += shape[0] * shape[1] * shape[2]
            self.market.deliver(work[0].job_id, out.product)  # type: ignore[union-attr]
        if out.product is None:
            return None
        took = time.monotonic() - started
        if took > 0:  # the engine's own speed, idle time left out
            rate = shape[0] * shape[1] * shape[2] / took
            old = self.compute_rate
            self.compute_rate = rate if not old else 0.8 * old + 0.2 * rate
        self.counters.products += 1
        self.counters.multiply_adds += shape[0] * shape[1] * shape[2]
        if out.stopped or not out.seals or template.header.parent != self.chain.tip.hash:
            return None
        self.counters.blocks_found += 1
        return template.block_with_seal(out.work, out.seals[0])

    async def run(self, max_blocks: int | None = None) -> None:
        self.counters.started = time.monotonic()
        log.info(
            "mining on %s with the %s engine (%s), filler %dx%dx%d",
            self.chain.network.name,
            self.engine.name,
            engine_path(self.engine),
            self.chain.network.filler.m,
            self.chain.network.filler.k,
            self.chain.network.filler.n,
        )
        last_block = time.monotonic()
        while max_blocks is None or self.counters.blocks_accepted < max_blocks:
            block = await self.mine_once()
            if block is None:
                continue
            result = self.submit(block)
            if result.accepted:
                self.counters.blocks_accepted += 1
                h = block.header
                log.info(
                    "mined block height=%d hash=%s work=%d txs=%d time=%.2fs rate=%.3g MAC/s",
                    h.height,
                    block.hash.hex(),
                    block_work(h.target),
                    len(block.txs),
                    time.monotonic() - last_block,
                    self.counters.multiply_adds_per_s(),
                )
                last_block = time.monotonic()
            else:
                log.warning("own block %s rejected: %s", block.hash.hex()[:16], result.check)

    def close(self) -> None:
        self._closing = True
        self.interrupt()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._filler_pool.shutdown(wait=True, cancel_futures=True)
