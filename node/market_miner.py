"""The miner's side of the compute market: choose a job, fetch and check A and B,
and after its block is in, commit C (JOB_COMMIT) and serve it from the blob store.

Choice: open jobs the next block may name, whose bounty per multiply-add is at least
``min_bounty_per_mac``, best paying first. A job whose data cannot be fetched (or
does not match its commitments) is skipped for ``RETRY_FAILED_S``. With no job worth
it, the miner mines filler (node/miner.py).

Sources of A and B: the job's URL, ``extra_sources``, then the blob endpoints of peers
that announced the root with the job's shape (``BlobPeers``: the P2P service). Every
row is checked (compute/blobs.py); a peer source that sends data not matching what it
announced is reported back and discouraged, one that is just unreachable is forgotten.
A fetched blob is stored, and the store's listener announces it to our peers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from chain.chainstate import ChainState
from chain.jobs import PREFIX_JOB, Job, JobStatus, get_job
from chain.keys import PrivateKey
from chain.state import Account, account_key
from chain.tx import Transaction
from compute.blobs import BlobError, BlobStore, FetchReport, fetch_blob
from consensus.seal import check_shape
from node.template import JobRef

log = logging.getLogger("pouw.market")

RETRY_FAILED_S = 60.0


@dataclass
class MarketSettings:
    key: PrivateKey  # signs JOB_COMMIT; its address must be the miner address
    serve_url: str = ""  # where this node serves C (its blob endpoint), put in the commit
    min_bounty_per_mac: float = 0.0  # base units per multiply-add
    fetch_timeout: float = 20.0
    commit_fee: int = 1000
    extra_sources: tuple[str, ...] = ()  # other blob endpoints to try for A and B


class BlobPeers(Protocol):
    """Where peers serve blobs (p2p/service.P2PService)."""

    def blob_sources(
        self, root: bytes, kind: str | None = None, rows: int | None = None,
        line_bytes: int | None = None,
    ) -> list[str]: ...  # fmt: skip

    def report_blob_source(self, root: bytes, url: str, reason: str, misbehaved: bool) -> None: ...


def open_jobs(chain: ChainState) -> list[tuple[bytes, Job]]:
    """Jobs the next block on the tip may name."""
    height = chain.tip.height + 1
    out = []
    for key, raw in chain.db.iter_state(PREFIX_JOB):
        job = Job.from_bytes(raw)
        if job.status == JobStatus.OPEN and height <= job.expiry:
            out.append((key[1:], job))
    return out


class MarketMiner:
    def __init__(
        self,
        chain: ChainState,
        store: BlobStore,
        settings: MarketSettings,
        submit_tx: Callable[[Transaction], object],
        peers: BlobPeers | None = None,
    ) -> None:
        self.chain = chain
        self.peers = peers
        self.store = store
        self.settings = settings
        self.submit_tx = submit_tx
        self._failed: dict[bytes, float] = {}
        self._products: dict[bytes, npt.NDArray[np.int32]] = {}
        self._next_nonce = 0
        self.committed: list[bytes] = []

    def candidates(self) -> list[tuple[bytes, Job]]:
        now = time.monotonic()
        rate = self.settings.min_bounty_per_mac
        jobs = [
            (jid, job) for jid, job in open_jobs(self.chain)
            if self._failed.get(jid, 0.0) <= now
            and job.bounty >= rate * job.multiply_adds
            and check_shape(self.chain.network.pouw, job.m, job.k, job.n).ok
        ]  # fmt: skip
        jobs.sort(key=lambda item: (-item[1].bounty / item[1].multiply_adds, item[0]))
        return jobs

    def forget(self, job_id: bytes) -> None:
        self._failed[job_id] = time.monotonic() + RETRY_FAILED_S

    async def _operand(self, root: bytes, kind: str, rows: int, cols: int, job: Job) -> np.ndarray:
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

    async def pick(self) -> tuple[JobRef, npt.NDArray[np.int8], npt.NDArray[np.int8]] | None:
        for job_id, job in self.candidates():
            try:
                a = await self._operand(job.h_a, "a", job.m, job.k, job)
                bt = await self._operand(job.h_b, "bt", job.n, job.k, job)
            except BlobError as exc:
                log.warning("job %s: operands unavailable: %s", job_id.hex()[:16], exc)
                self.forget(job_id)
                continue
            b = np.ascontiguousarray(np.asarray(bt, dtype=np.int8).T)
            return JobRef(job_id, job.h_a, job.h_b), np.asarray(a, dtype=np.int8), b
        return None

    def remember_product(self, job_id: bytes, product: object) -> None:
        if product is not None:
            self._products = {job_id: product}  # type: ignore[dict-item]

    def commit_result(self, job_id: bytes, c: npt.NDArray[np.integer]) -> Transaction:
        """Store C, and send the JOB_COMMIT for it (used by on_mined; tests call it with
        a deliberately wrong C)."""
        from wallet.jobs import commit_tx

        root = self.store.put("c", c)
        address = self.settings.key.public_key
        from chain.address import address_from_pubkey

        acct = Account.from_bytes(self.chain.state_get(account_key(address_from_pubkey(address))))
        nonce = max(acct.nonce, self._next_nonce)
        tx = commit_tx(
            self.chain.network, self.settings.key, nonce, job_id, root,
            url=self.settings.serve_url, fee=self.settings.commit_fee,
        )  # fmt: skip
        self._next_nonce = nonce + 1
        self.submit_tx(tx)
        self.committed.append(job_id)
        log.info("committed job %s result root %s", job_id.hex(), root.hex())
        return tx

    def on_mined(self, job_id: bytes) -> None:
        """Our block naming ``job_id`` is in: commit C."""
        c = self._products.pop(job_id, None)
        job = get_job(self.chain.state_get, job_id)
        if c is None or job is None or job.status != JobStatus.MINED:
            log.warning("mined job %s but have no product to commit", job_id.hex()[:16])
            return
        self.commit_result(job_id, c)


def market_miner_for(node: object, key: PrivateKey, **settings: object) -> MarketMiner:
    """A MarketMiner wired to a Node: its chain, its blob service's store and URL,
    ``submit_transaction``, and its P2P service (if any) for blob sources that peers
    announced. The node must run node/blobs.BlobService."""
    blobs = next(s for s in node.services if getattr(s, "name", "") == "blobs")  # type: ignore[attr-defined]
    p2p = next(
        (s for s in node.services if getattr(s, "name", "") == "p2p"  # type: ignore[attr-defined]
         and hasattr(s, "blob_sources")),
        None,
    )  # fmt: skip
    return MarketMiner(
        node.chain,  # type: ignore[attr-defined]
        blobs.store,
        MarketSettings(key=key, serve_url=blobs.url, **settings),  # type: ignore[arg-type]
        node.submit_transaction,  # type: ignore[attr-defined]
        peers=p2p,
    )
