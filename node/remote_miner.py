"""The standalone miner: templates over JSON-RPC, paid jobs (node/remote_market.py) and
filler products on one process per GPU.

Layout::

    main process                                  worker process i (spawn; device d_i)
    ------------                                  ----------------------------------
    template thread: getblocktemplate long-poll   listener thread: job queue -> latest
      -> new template: verify, job += 1,            job, sets the stop event (the engine
         send (job, header bytes) to workers        drops the product in flight)
    main loop: result queue                       loop: filler_matrices(seed), engine.mine
      found -> assemble the block, submitblock      -> ("found", job, h_a, h_b, seal)
      stats -> status line / log lines             -> ("stats", multiply-adds, tickets)
    market thread: claims, downloads; a paid      a paid job first: A and B from the
      job's A and B into the worker's order         order file, C written back into it
      file (node/shared_arrays.py)                  -> ("product", worker, job id)
      product -> C copied out, uploaded, commit
    a worker that dies: its paid job goes to another worker

Workers get only the header (h_a, h_b and seal blank): they never see transactions,
and the main process assembles the block from its own copy of the template. The
worker process is node/miner_worker.py, spawned and watched through
node/remote_workers.py; templates are parsed and checked by node/remote_template.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from chain.address import decode_address
from chain.block import Block
from chain.header import Header
from chain.network import Network
from compute.transpose import transposed
from node.miner_worker import WorkerSpec
from node.remote_market import MARKET_ROUND_S, RemoteMarket
from node.remote_results import RemoteHeld
from node.remote_template import RemoteTemplate, TemplateError, template_from_json
from node.remote_workers import WorkerPool
from node.shared_arrays import sweep
from wallet.rpc import LONGPOLL_TIMEOUT, RpcClient, RpcConnectionError, RpcError, RpcTimeoutError
from wallet.rpc_calls import get_block_template, submit_block

log = logging.getLogger("pouw.miner")

# submitblock answers (BIP22) that mean "valid, but not the new tip": our block lost a
# race, or was mined on a parent that is no longer the tip.
# JSON-RPC errors that no retry can fix: invalid params, invalid address or parameter.
FATAL_RPC_CODES = frozenset({-32602, -32601, -5, -8})
# HTTP answers that say the URL is no node's RPC for us (credentials refused even after
# the cookie was read again, or a server that is not the node's RPC, such as its blob
# port): after this many in a row the miner stops and says so, instead of retrying for
# ever. (More than one: a cookie read during a node's restart gets another chance.)
REFUSED_STATUSES = frozenset({401, 403, 404, 405})
REFUSED_IN_A_ROW = 3
# While the node does not answer getblocktemplate, ask again after 1, 2, 4, then every
# 8 s, as the market rounds do: mining resumes within 8 s of a node's restart.
TEMPLATE_RETRY_MAX_S = 8.0
STALE_ANSWERS = frozenset({"inconclusive", "duplicate", "stale-prevblk", "stale-work"})
# A market round woken early waits this long first: the rest of a buyer's batch of
# submits arrives, and a burst of pooled transactions makes one round, not one each.
MARKET_SETTLE_S = 0.01
# Rounds start at most this often, however many transactions wake them (each round is a
# few RPC calls, one of them a walk of the node's jobs in flight).
MARKET_MIN_GAP_S = 0.05
# While the node does not answer, market rounds come less often, doubling up to this:
# a restart takes seconds, and a round per quarter second would flood the log.
MARKET_DOWN_MAX_S = 8.0


def _devices_said(devices: Sequence[int | None]) -> str:
    """``2 CPU workers``, ``gpu 0, gpu 1``: what the miner runs on, for its first line."""
    cpus = sum(d is None for d in devices)
    gpus = [f"gpu {d}" for d in devices if d is not None]
    said = [f"{cpus} CPU worker{'s' if cpus > 1 else ''}"] if cpus else []
    return ", ".join(said + gpus)


@dataclass
class MinerStats:
    started: float = field(default_factory=time.monotonic)
    multiply_adds: int = 0
    tickets: int = 0
    products: int = 0
    found: int = 0
    accepted: int = 0
    stale: int = 0
    rejected: int = 0
    undelivered: int = 0  # found while the node did not answer (down, restarting)
    templates: int = 0

    def rates(self) -> tuple[float, float]:
        """(useful multiply-adds per second, tickets per second) since the start."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.multiply_adds / elapsed, self.tickets / elapsed

    def line(self, height: int | None) -> str:
        mac, tps = self.rates()
        return (
            f"height {height if height is not None else '?'} | {2 * mac / 1e12:.4g} TOPS "
            f"({mac:.3g} multiply-adds/s) | {tps:.3g} tickets/s | "
            f"blocks found {self.found} accepted {self.accepted} stale {self.stale} "
            f"rejected {self.rejected}"
            + (f" undelivered {self.undelivered}" if self.undelivered else "")
            + f" | {self.products} products, "
            f"{self.multiply_adds} multiply-adds"
        )


class RemoteMiner:
    def __init__(
        self,
        rpc: RpcClient,
        network: Network,
        address: str,
        backend: str = "numpy",
        devices: list[int | None] | None = None,
        max_blocks: int | None = None,
        shape: tuple[int, int, int] | None = None,
        threads: int | None = None,
        status: TextIO | None = None,
        longpoll_timeout: float = LONGPOLL_TIMEOUT,
        market: RemoteMarket | None = None,
        status_every: float | None = None,
    ) -> None:
        self.rpc = rpc
        self.network = network
        self.address = address
        self.miner = decode_address(address, network.hrp)
        self.backend = backend
        self.devices = devices or [None]
        self.max_blocks = max_blocks
        self.shape = shape
        self.threads = threads
        self.status = status
        self.longpoll_timeout = longpoll_timeout
        self.status_every = status_every  # None: 1 s on a terminal, 10 s in a log
        self.stats = MinerStats()
        self.salt = secrets.token_bytes(8)
        self._templates: dict[int, RemoteTemplate] = {}
        self._job = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._solved: set[bytes] = set()  # parents we already extended
        self._workers = WorkerPool()
        self.height: int | None = None
        self.failure: str | None = None
        self.market = market  # None: filler only
        self._busy: dict[int, tuple[str, int]] = {}  # worker -> (job id, template number)
        self._kept: set[int] = set()  # template numbers of products in flight
        self._market_lock = threading.Lock()
        # wakes the market loop before its round: a worker came free, or we stop
        self._market_wake = threading.Event()

    # -- templates ---------------------------------------------------------------------

    def _fetch(self, longpollid: str | None) -> RemoteTemplate | None:
        timeout = self.longpoll_timeout + 30 if longpollid else None
        try:
            data = get_block_template(self.rpc, self.address, self.shape, longpollid, timeout)
        except RpcTimeoutError:
            return None
        return template_from_json(data, self.network, self.miner)

    def _publish(self, rt: RemoteTemplate) -> None:
        with self._lock:
            self._job += 1
            job = self._job
            self._templates[job] = rt
            for old in [j for j in self._templates if j < job - 16 and j not in self._kept]:
                del self._templates[old]
            self.height = rt.header.height
            self.stats.templates += 1
        self._workers.broadcast((job, rt.header.to_bytes()))
        log.debug("job %d: height %d parent %s", job, rt.header.height, rt.header.parent.hex())

    def _template_loop(self) -> None:
        longpollid: str | None = None
        current: Header | None = None
        backoff = 1.0
        refused = 0
        last_said = ""  # the last failure logged: a new one is said even while backing off
        while not self._stop.is_set():
            try:
                rt = self._fetch(longpollid)
            except (RpcError, RpcConnectionError, TemplateError) as exc:
                status = exc.status if isinstance(exc, RpcConnectionError) else None
                refused = refused + 1 if status in REFUSED_STATUSES else 0
                if (isinstance(exc, RpcError) and exc.code in FATAL_RPC_CODES) or (
                    refused >= REFUSED_IN_A_ROW
                ):  # fmt: skip
                    log.error("getblocktemplate: %s", exc)  # a bad request will not get better
                    self.failure = str(exc)
                    self.request_stop()
                    return
                if backoff < TEMPLATE_RETRY_MAX_S or str(exc) != last_said:  # (no log flood)
                    log.warning("getblocktemplate: %s; retrying in %.0f s", exc, backoff)
                    last_said = str(exc)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, TEMPLATE_RETRY_MAX_S)
                longpollid = None
                continue
            backoff, refused, last_said = 1.0, 0, ""
            self._node_down = False  # it answers: the next outage is said again
            if rt is None:  # long-poll timed out on our side: ask again
                continue
            if longpollid is not None and self.market is not None:
                self._market_wake.set()  # a new tip or a new pooled tx: maybe a new job
            if current is None or rt.header != current:
                current = rt.header
                self._publish(rt)
            if rt.longpollid is None:  # node without long-poll: poll every 2 s
                self._stop.wait(2.0)
            longpollid = rt.longpollid

    # -- paid jobs (market) ------------------------------------------------------------

    def _market_loop(self) -> None:
        """Claims, and probes on each new tip; a claimed job to each idle worker. A
        round every MARKET_ROUND_S, sooner when the node's template long-poll answers
        (a new tip or a new pooled transaction, such as a buyer's submit), a worker
        comes free, or a claim of ours with an idle worker waiting for it becomes
        computable (the rival wait old)."""
        assert self.market is not None
        delay, last_round = MARKET_ROUND_S, 0.0
        down = 0.0  # while the node does not answer: the wait between rounds, doubling
        while True:
            if self._market_wake.wait(delay):
                settle = max(MARKET_SETTLE_S, last_round + MARKET_MIN_GAP_S - time.monotonic())
                if self._stop.wait(settle):
                    return
            self._market_wake.clear()
            if self._stop.is_set():
                return
            delay, last_round = MARKET_ROUND_S, time.monotonic()
            answered = True  # the node answered this round (an error from it counts)
            try:
                # A job claimed and fetched earlier goes to a worker that came free at
                # once: the round's RPCs (a listing of every unclaimed job) come after.
                self._hand_out()
                for step in self.market.round_steps():
                    with self._market_lock:
                        step()
                idle = self._hand_out()
                with self._market_lock:
                    self.market.prefetch()
                    if idle:
                        delay = min(delay, self.market.next_computable_in())
            except RpcConnectionError as exc:  # the node is down or restarting: said once
                if not down:
                    log.warning("market: %s; trying again, less often while it lasts", exc)
                down = min(MARKET_DOWN_MAX_S, 2 * down or MARKET_ROUND_S)
                delay, answered = down, False
            except (RpcError, TemplateError, OSError) as exc:
                log.warning("market: %s", exc)  # OSError: no room for an order file
            except (KeyError, TypeError, ValueError, OverflowError) as exc:  # not shaped as ours
                log.warning("market: unexpected answer from the node (%r); is it a pouw node "
                            "of this version?", exc)  # fmt: skip
            except Exception:  # noqa: BLE001 - a bug must not stop the market for good
                log.exception("market round failed (a bug: please report it); next round")
            if answered and down:
                log.info("market: the node answers again")
                down = 0.0

    def _hand_out(self) -> bool:
        """Give each idle worker a claimed job that may be computed now; True if a
        worker is left idle."""
        assert self.market is not None
        for index in range(len(self._workers)):
            if index in self._busy or index in self._workers.gone:
                continue
            with self._market_lock:
                work = self.market.next_job()
            if work is None:
                return True
            self._dispatch(index, *work)
        return False

    def _dispatch(self, index: int, job_id: str, held: RemoteHeld, named: bool) -> None:
        """Hand a claimed job to worker ``index``: A, B^T as downloaded and the leaves
        checked on the way in (a GPU worker gets B, transposed here as before: its
        engine reads B, and its process never loads the CPU kernels), the operands in
        the worker's order file, with room for C (node/shared_arrays.py). With our claim still in
        the pool (``named`` false) the template names no job: the product is mined as
        our own work, and C is committed all the same. If the job cannot be handed out
        (the node does not answer, no room for the file) it stays for the next round."""
        a, bt = held.a, held.bt
        assert a is not None and bt is not None
        try:
            if named:
                data = self.rpc.call("getblocktemplate", miner=self.address, job=job_id)
            else:
                shape = [a.shape[0], a.shape[1], bt.shape[0]]
                data = self.rpc.call("getblocktemplate", miner=self.address, shape=shape)
            rt = template_from_json(data, self.network, self.miner)
            as_bt = self.backend != "cupy"
            operand = bt if as_bt else transposed(bt)
            c_slot = ((a.shape[0], bt.shape[0]), "<i4")  # int32, written by the worker
            ref = self._workers.put_order(index, {"a": a, "b": operand}, {"c": c_slot})
        except BaseException:
            held.dispatched = False
            raise
        with self._lock:
            self._job += 1
            number = self._job
            self._templates[number] = rt
            self._kept.add(number)
        self._busy[index] = (job_id, number)
        order = (number, rt.header.to_bytes(), job_id, ref, as_bt, held.leaves)
        self._workers.send(index, ("product", *order))
        log.info("worker %d: job %s (%dx%dx%d)%s", index, job_id[:16], *a.shape, bt.shape[0],
                 "" if named else ", its claim still pooled")  # fmt: skip
        if index in self._workers.gone and self._busy.pop(index, None) is not None:
            with self._market_lock:  # it died meanwhile: the job goes to another worker
                assert self.market is not None
                self.market.release(job_id)

    def _delivered(self, index: int, job_id: str) -> None:
        """Worker ``index`` wrote the job's C into its order file: commit it."""
        c = self._workers.product(index) if self.market is not None else None
        _, number = self._busy.pop(index, (job_id, 0))
        self._market_wake.set()  # the next claimed job goes to this worker now
        with self._lock:
            self._kept.discard(number)
        if c is None or self.market is None:
            return
        with self._market_lock:
            self.market.deliver(job_id, c)

    # -- results ---------------------------------------------------------------------

    def _submit(self, job: int, h_a: bytes, h_b: bytes, seal: bytes) -> None:
        with self._lock:
            rt = self._templates.get(job)
            latest = self._job
            latest_rt = self._templates.get(latest)
        if rt is None or (latest_rt is not None and latest_rt.header.parent != rt.header.parent):
            # The tip moved on while this product ran: like the in-node miner, drop it.
            self.stats.stale += 1
            log.info("dropped a win on template %d: the tip changed (latest %d)", job, latest)
            return
        header = dataclasses.replace(rt.header, h_a=h_a, h_b=h_b, seal=seal)
        if header.parent in self._solved:
            return  # a second win on a parent we already extended: not worth a fork
        self.stats.found += 1
        block = Block(header, rt.template.txs)
        try:
            answer = submit_block(self.rpc, block.to_bytes())
        except RpcConnectionError as exc:  # not judged: the node did not answer
            if not self._node_down:  # said once an outage: a fast devnet finds many
                log.warning("submitblock %s not delivered (%s); blocks found until the node "
                            "answers again are counted as undelivered",
                            header.hash.hex()[:16], exc)  # fmt: skip
            self._node_down = True
            self.stats.undelivered += 1
            return
        except RpcError as exc:
            log.warning("submitblock %s failed: %s", header.hash.hex()[:16], exc)
            self.stats.rejected += 1
            return
        self._node_down = False
        if answer is None:
            self._solved.add(header.parent)
            self.stats.accepted += 1
            log.info(
                "block accepted height=%d hash=%s txs=%d template=%d",
                header.height, header.hash.hex(), len(block.txs), job,
            )  # fmt: skip
        elif answer in STALE_ANSWERS:
            self.stats.stale += 1
            log.info(
                "block %s at height %d is stale (%s; template %d, latest %d)",
                header.hash.hex()[:16], header.height, answer, job, latest,
            )  # fmt: skip
        else:
            self.stats.rejected += 1
            log.warning("block %s rejected: %s", header.hash.hex()[:16], answer)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "stats":
            _, _, mads, tickets = msg
            self.stats.multiply_adds += mads
            self.stats.tickets += tickets
            self.stats.products += 1
        elif kind == "found":
            _, _, job, h_a, h_b, seal = msg
            self._submit(job, h_a, h_b, seal)
        elif kind == "product":
            _, index, job_id = msg
            self._delivered(index, job_id)
        elif kind == "ready":
            _, index, engine, device, pid, path = msg
            dev = "" if device is None else f" on device {device}"
            how = "" if path == engine else f", {path}"
            log.info("worker %d ready: %s engine%s%s (pid %d)", index, engine, dev, how, pid)
        elif kind == "error":
            _, index, text = msg
            self._worker_gone(index, f"failed: {text}")

    def _reap(self) -> None:
        """Notice workers that died without a word (WorkerPool.reap)."""
        for index, why in self._workers.reap(self._handle):
            self._worker_gone(index, why)

    def _worker_gone(self, index: int, why: str) -> None:
        """Worker ``index`` will compute nothing more: its paid job, if it had one, goes
        to another worker (its operands are still in hand), and the miner stops once
        no worker is left."""
        if index in self._workers.gone:
            return
        self._workers.gone.add(index)
        left = self._workers.left()
        hint = "" if left else ": the miner stops (a signal 9 is often the OOM killer: see dmesg)"
        log.error("worker %d %s; %d worker(s) left%s", index, why, left, hint)
        self.failure = f"worker {index} {why}"
        self._workers.drop_order(index)
        job_id, number = self._busy.pop(index, ("", 0))
        with self._lock:
            self._kept.discard(number)
        if job_id and self.market is not None:
            with self._market_lock:
                self.market.release(job_id)
            if left:
                log.info("job %s goes to another worker", job_id[:16])
                self._market_wake.set()

    # -- lifetime -----------------------------------------------------------------------

    def start_workers(self) -> None:
        if self.market is not None and (stale := sweep()):
            log.info("removed %d order file(s) left by miners that no longer run", stale)
        self._workers.start(
            WorkerSpec(i, self.backend, device, self.network.pouw, self.salt, self.threads)
            for i, device in enumerate(self.devices)
        )

    _node_down = False  # the last submitblock found no node (an outage, said once)

    def request_stop(self) -> None:
        self._stop.set()
        self._market_wake.set()

    def run(self) -> int:
        """Mine until max_blocks are accepted, stop is requested, or every worker died."""
        self.stats = MinerStats()
        log.info(
            "mining to %s via %s with %s on %s",
            self.address, self.rpc.url, self.backend,
            _devices_said(self.devices),
        )  # fmt: skip
        self.start_workers()
        poller = threading.Thread(target=self._template_loop, name="pouw-gbt", daemon=True)
        poller.start()
        if self.market is not None:
            threading.Thread(target=self._market_loop, name="pouw-market", daemon=True).start()
        tty = self.status is not None and self.status.isatty()
        last_status = time.monotonic()
        interval = self.status_every or (1.0 if tty else 10.0)
        try:
            while not self._stop.is_set():
                if self.max_blocks is not None and self.stats.accepted >= self.max_blocks:
                    break
                with contextlib.suppress(queue.Empty):
                    self._handle(self._workers.get(timeout=0.25))
                self._reap()
                if self._workers.left() == 0:
                    break
                if time.monotonic() - last_status >= interval:
                    last_status = time.monotonic()
                    line = self.line()
                    if tty and self.status is not None:
                        self.status.write("\r\033[K" + line)
                        self.status.flush()
                    else:
                        log.info("%s", line)
        finally:
            self.close()
            if tty and self.status is not None:
                self.status.write("\n")
        log.info("miner stopped: %s", self.line())
        if self.failure and (self.max_blocks is None or self.stats.accepted < self.max_blocks):
            return 1
        return 0

    def line(self) -> str:
        """The status line: rates and totals, and the paid jobs' counts with the market."""
        line = self.stats.line(self.height)
        if self.market is not None:  # four counters: read without the market's lock,
            line += " | " + self.market.line()  # which a download may hold
        return line

    def close(self) -> None:
        self.request_stop()
        self._workers.stop()


def default_devices(backend: str) -> list[int | None]:
    if backend != "cupy":
        return [None]
    import cupy  # noqa: PLC0415

    return list(range(int(cupy.cuda.runtime.getDeviceCount())))
