"""A market miner's operands: A and Bᵀ of each job it holds, downloaded once (from the
claim on, beside whatever the mining loop is doing), every row checked against the
job's roots on the way in. The leaves checked there and Bᵀ as it came go to the
engine (MiningEngine.mine(operand_leaves=, b_t=)), which then neither hashes the
operands again nor transposes B."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from chain.job_record import Job
from compute.blob_fetch import FetchReport, fetch_blob
from compute.blobs import BlobError, BlobStore
from compute.engine import OperandLeaves

log = logging.getLogger("pouw.market")


class FetchSettings(Protocol):
    """What the fetcher reads of the miner's settings (node/market_claims.MarketSettings)."""

    fetch_timeout: float
    extra_sources: tuple[str, ...]  # other blob endpoints to try for A and B


class BlobPeers(Protocol):
    """Where peers serve blobs (p2p/service.P2PService)."""

    def blob_sources(
        self, root: bytes, kind: str | None = None, rows: int | None = None,
        line_bytes: int | None = None,
    ) -> list[str]: ...  # fmt: skip

    def report_blob_source(self, root: bytes, url: str, reason: str, misbehaved: bool) -> None: ...


@dataclass
class Held:
    """A job this miner claimed (or is claiming)."""

    job: Job
    claimed_at: float
    claim_txid: bytes
    a: npt.NDArray[np.int8] | None = None
    b: npt.NDArray[np.int8] | None = None  # the view b_t.T
    b_t: npt.NDArray[np.int8] | None = None  # as downloaded (the engine packs B' from it)
    computed: bool = False
    result_root: bytes | None = None
    commit_txid: bytes = b""  # our last commit of the job (node/market_commits.py)
    commit_sent_at: float = 0.0  # (monotonic) when it was last sent, or tried
    commit_failed: str = ""  # it was included as failed: the receipt's reason (said once)
    # our claim is over: paid, or the bond lost (said and counted once); kept only
    # until the tip no longer shows the job as ours (node/market_commits.py)
    ended: bool = False
    bond_counted_lost: bool = False  # this claim's bond is in bonds_lost (a reorg undoes it)
    lost_c: bool = False  # C was lost from the blob store before its commit confirmed
    revealed: set[tuple[int, int]] = field(default_factory=set)
    unrivalled: bool = False  # claimed in our turn as a fresh job's designated miner
    # committed on chain, but C is gone from the blob store (a crash, a deleted blob
    # directory): computed again only to serve it and answer probes, never committed
    restore: bool = False
    unservable: bool = False  # C computed again did not match the committed root
    restore_after: float = 0.0  # (monotonic) a restore's operands failed: not before this
    leaves: OperandLeaves | None = None  # of A's rows and B's columns, checked
    download: asyncio.Future[bool] | None = None  # the operands' download, once started


class OperandFetcher:
    """Downloads and keeps the operands of held jobs (MarketMiner.operands)."""

    def __init__(
        self, store: BlobStore, settings: FetchSettings, peers: BlobPeers | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.peers = peers

    async def operand(self, root: bytes, kind: str, rows: int, cols: int, job: Job) -> np.ndarray:
        have = self.store.get(root)
        if have is not None:
            return np.asarray(have)
        urls = [job.data_url.decode(errors="replace"), *self.settings.extra_sources]
        named = {u.rstrip("/") for u in urls if u}
        from_peers: list[str] = []
        if self.peers is not None:  # a blob of kind a / bt has 1-byte entries
            found = self.peers.blob_sources(root, kind, rows, cols)
            from_peers = [u for u in dict.fromkeys(found) if u.rstrip("/") not in named]
        report = FetchReport()
        log.info(
            "fetching %s %s from the job's URL and %d peer source(s)",
            kind, root.hex()[:16], len(from_peers),
        )  # fmt: skip
        try:
            return await fetch_blob(
                [*urls, *from_peers], root, kind, rows, cols, self.store,
                timeout=self.settings.fetch_timeout, report=report,
            )  # fmt: skip
        finally:
            if self.peers is not None:
                for url in from_peers:
                    why = report.bad_peers.get(url.rstrip("/"))
                    if why is not None:
                        lied = url.rstrip("/") in report.bad_data
                        self.peers.report_blob_source(root, url, why, lied)

    def prefetch(self, job_id: bytes, held: Held) -> None:
        """Start downloading a job's operands now (a task on the event loop), while the
        mining loop still finishes or drops a filler product."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a test driving the miner directly)
            return
        if held.download is None:
            held.download = asyncio.ensure_future(self._download(job_id, held))

    async def fetch(self, job_id: bytes, held: Held) -> bool:
        """The job's operands in hand (downloaded once, by the prefetch task if there is
        one); False if no source served them (the next call tries again)."""
        if held.a is not None and held.b is not None:
            return True
        self.prefetch(job_id, held)
        if held.download is None:  # no event loop
            return await self._download(job_id, held)
        task = held.download
        try:
            ok = await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we are cancelled, not the download: it goes on
            ok = False
        if not ok and held.download is task:
            held.download = None
        return ok

    async def _download(self, job_id: bytes, held: Held) -> bool:
        job = held.job
        started = time.monotonic()
        try:
            a, bt = await asyncio.gather(
                self.operand(job.h_a, "a", job.m, job.k, job),
                self.operand(job.h_b, "bt", job.n, job.k, job),
            )
        except BlobError as exc:
            # Our claim stands: its bond is lost unless another source appears in time.
            log.warning("job %s: operands unavailable: %s", job_id.hex()[:16], exc)
            return False
        held.a = np.asarray(a, dtype=np.int8)
        held.b_t = np.ascontiguousarray(bt, dtype=np.int8)
        held.b = held.b_t.T  # a view: the engine reads B^T's rows (or the Miner transposes)
        # checked on the way in: the engine need not hash the operands again
        row_leaves, col_leaves = self.store.leaf_words(job.h_a), self.store.leaf_words(job.h_b)
        if row_leaves is not None and col_leaves is not None:
            held.leaves = (row_leaves, col_leaves)
        log.info(
            "job %s: operands in hand after %.3f s (%.3f s since the claim)",
            job_id.hex()[:16], time.monotonic() - started, time.monotonic() - held.claimed_at,
        )  # fmt: skip
        return True
