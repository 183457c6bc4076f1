"""The standalone miner's results: C delivered to the node and committed (kept and
tried again each market round while the node does not answer), probes answered from
the node's copy of C, and the jobs the chain says our key holds taken back (after a
restart or a crash: a claimed job is computed, a committed one's probes answered).

``ResultDelivery`` is a part of node/remote_market.RemoteMarket, which owns the state
it reads (declared below)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.keys import PrivateKey
from chain.network import Network
from compute.blob_fetch import FetchReport, fetch_blob
from compute.blobs import BlobError
from compute.engine import OperandLeaves
from consensus.result import RESULT_CHUNK, row_proof
from node.bond_messages import LAPSED_BEFORE_COMMIT, LAPSED_UNCOMMITTED, REFUNDED
from node.remote_rivals import UNCLAIMED_STATUSES
from wallet.job_txs import commit_tx, reveal_tx
from wallet.rpc import RpcClient, RpcConnectionError, RpcError

log = logging.getLogger("pouw.market")
# A C upload waits at most this long on the node's socket: it runs on the miner's main
# loop (block submission and market rounds wait meanwhile), and one not through is
# retried at the next round; a buyer's uploads wait longer (wallet/jobs.UPLOAD_WAIT_S).
C_UPLOAD_WAIT_S = 60.0

HELD_STATUSES = ("claimed", "committed")
CLAIM_CONFIRM_S = 60.0  # a claim not on chain after this long is given up
# A commit or reveal we sent is looked for on the node this often while it is not on
# chain (the node may have restarted and lost its pool): one gettransaction each time.
RECHECK_S = 2.0
# A commit tried again this long after C's upload uploads C again: unneeded until its
# commit is pooled, C may have been deleted by the node's retention meanwhile
# (node/blob_retention.FRESH_S, 600 s); on the node a second upload only refreshes it.
REUPLOAD_S = 60.0
# C that ended after our claim lapsed is kept on the node (its root here) to claim the
# reopened job again and commit it, not compute it again: at most this many roots, for
# at most this long (the node's retention keeps an unreferenced C 10 minutes,
# node/blob_retention.FRESH_S; the job reopens within a few blocks of the lapse)
MAX_LATE_C = 64
LATE_C_KEEP_S = 300.0

@dataclass
class RemoteHeld:
    job: dict[str, Any]
    claimed_at: float
    # no rival claim can be on its way (we know no other miner, or we claimed in the
    # designated miner's turn, before any other's): computed without the rival wait
    unrivalled: bool = False
    claim_txid: bytes = b""
    rivals_seen: set[bytes] = field(default_factory=set)  # others' claims noted (txids)
    rivals_read: float = 0.0  # when ``RivalWatch.watch`` last read the job
    a: npt.NDArray[np.int8] | None = None
    bt: npt.NDArray[np.int8] | None = None  # B^T, as downloaded
    leaves: OperandLeaves | None = None  # of A's rows and B's columns, checked
    dispatched: bool = False  # handed to a worker (never twice)
    # The product is done. C itself is not kept: the node stores and serves it, and a
    # probe's chunk is built from the node's copy (a miner keeping every C of its
    # challenge windows would hold an hour of products on mainnet).
    computed: bool = False
    # Until the commit is on chain (the node may be down or restarting when a product
    # ends, or lose C and the commit with a restart): C kept for the upload, tried
    # again each round.
    unsent: npt.NDArray[np.int32] | None = None
    c_on_node: bool = False  # ``unsent`` was uploaded (since the last loss)
    uploaded_at: float = 0.0  # when (an upload refreshes C's age in the node's store)
    result_root: bytes | None = None  # C's root, once the node holds C
    commit_sent: bool = False
    commit_txid: bytes = b""  # checked while the claim is on chain uncommitted
    checked_at: float = 0.0  # when the node last said it holds our commit or reveal
    warned: bool = False  # a delivery that failed was logged (once per job)
    commit_failed: str = ""  # our commit was included as failed: its receipt's reason
    # our claim is over: paid, or the bond lost (said and counted once); kept only until
    # the node no longer shows the job as ours
    ended: bool = False
    reveals: dict[tuple[int, int], bytes] = field(default_factory=dict)  # probe -> txid
    probe_failed: set[tuple[int, int]] = field(default_factory=set)  # logged once each
    # committed on chain, but the node lost C (a crash, a deleted blob directory):
    # computed again only to upload it and answer probes, never committed
    restore: bool = False
    unservable: bool = False  # C computed again did not match the committed root


class ResultDelivery:
    rpc: RpcClient
    network: Network
    key: PrivateKey
    address: str
    blob_url: str
    blob_auth: tuple[str, str]
    fee: int
    held: dict[str, RemoteHeld]
    products: int
    recomputed: int
    commits: int
    job_multiply_adds: int
    bonds_lost: int
    _computed: set[str]
    _in_work: dict[str, int]
    _late_c: dict[str, tuple[bytes, float]]  # job id -> (C's root, when kept)

    def _send(self, tx: Any, what: str) -> bool:
        """Send a transaction to the node; False (logged) if it was not taken."""
        try:
            self.rpc.call("sendrawtransaction", tx.to_bytes().hex())
        except (RpcError, RpcConnectionError) as exc:
            log.warning("%s not accepted: %s", what, exc)
            return False
        return True

    def _nonce(self) -> int:
        return int(self.rpc.call("getaccount", self.address)["pending_nonce"])

    def _take_back(self, ours: list[dict[str, Any]], now: float) -> None:
        """Hold every job the tip says our key holds (``ours``): after a restart or a
        crash with claims and commits in flight, and as the node catches up to them,
        so that a claimed job is computed and committed before its deadline and a
        committed one's probes are answered from the node's copy of C (else each
        would cost its bond). A claimed job whose commit of ours waits in the node's
        pool is not computed again."""
        counts = dict.fromkeys(HELD_STATUSES, 0)
        for job in ours:
            job_id = job["job_id"]
            if job_id in self.held or job["status"] not in counts:
                continue
            # on chain as ours: no rival wait; "on its way" only while a claim of ours
            # is pooled, should a reorg reopen it
            held = RemoteHeld(job, now - CLAIM_CONFIRM_S, unrivalled=True)
            done = job["status"] == "committed"
            if not done:
                try:
                    pending = self.rpc.call("getjob", job_id).get("pending_commit") or {}
                except RpcError:
                    continue
                if pending.get("claimant") == self.address:
                    done = True
                    held.result_root = bytes.fromhex(pending["result_root"])
                    held.commit_txid = bytes.fromhex(pending["txid"])
            held.computed = held.dispatched = held.commit_sent = done
            self.held[job_id] = held
            counts["committed" if done else "claimed"] += 1
        if any(counts.values()):
            log.info(
                "took back the jobs our key holds on chain: %d claimed (computed next), "
                "%d committed (probes answered from the node's copy of C)",
                counts["claimed"], counts["committed"],
            )  # fmt: skip

    def deliver(self, job_id: str, c: npt.NDArray[np.integer]) -> None:
        """A worker finished the product: upload C to the node, commit its root."""
        held = self.held.get(job_id)
        if job_id in self._computed and not (held is not None and held.restore):
            self.recomputed += 1  # (C computed again after the node lost it is not one)
        self._computed.add(job_id)
        self.products += 1
        self.job_multiply_adds += self._in_work.pop(job_id, 0)
        if held is None or held.ended:  # our claim lapsed (or failed) before C: kept to
            self._keep_late(job_id, c)  # claim the job again with it, if it can come back
            return
        if held.commit_sent and not held.restore:
            return  # (a second product)
        held.a = held.bt = None
        held.leaves = None
        held.computed = True
        held.unsent = np.ascontiguousarray(c, dtype=np.int32)
        if held.restore:
            self._upload_restored(job_id, held)
        elif self._still_ours(job_id, held):
            self._send_result(job_id, held)
        elif held.ended:  # (said lapsed by that look at the job)
            self._keep_late(job_id, c)

    def _keep_late(self, job_id: str, c: npt.NDArray[np.integer]) -> None:
        """C of a job whose claim lapsed before it ended: uploaded to the node and its
        root kept, so that the market round claims the job again once it reopens and
        commits this C (``RemoteMarket._claim_late``) instead of computing it again."""
        from wallet.jobs import JobError, upload_blob

        try:
            job = self.rpc.call("getjob", job_id)
        except (RpcError, RpcConnectionError):
            return
        if job.get("claimant") not in (None, self.address) or job["status"] not in (
            "open", "claimed"
        ):  # fmt: skip
            return  # another miner's now, or ended: it does not come back to us
        try:
            root = upload_blob(self.blob_url, "c", np.ascontiguousarray(c, dtype=np.int32),
                               self.blob_auth, timeout=C_UPLOAD_WAIT_S)  # fmt: skip
        except JobError as exc:
            log.info("job %s: C that ended too late not kept (%s)", job_id[:16], exc)
            return
        self._late_c[job_id] = (root, time.monotonic())
        while len(self._late_c) > MAX_LATE_C:
            self._late_c.pop(next(iter(self._late_c)))
        log.info("job %s: C ended after our claim lapsed: kept to claim the job again once "
                 "it reopens", job_id[:16])  # fmt: skip

    def _still_ours(self, job_id: str, held: RemoteHeld) -> bool:
        """Before a commit: the node's job as it is now (``_can_commit``); True when
        the node cannot be asked (the commit's own call says what is wrong, and is
        tried again)."""
        try:
            job = self.rpc.call("getjob", job_id)
        except (RpcError, RpcConnectionError):
            return True
        return self._can_commit(job_id, held, job, LAPSED_BEFORE_COMMIT)

    def _can_commit(self, job_id: str, held: RemoteHeld, job: dict[str, Any], why: str) -> bool:
        """A commit of ours can still count (``job``: getjob's now): our claim holds the
        job and has not lapsed, or a claim of ours is on its way to a job still open. A
        claim that lapsed (said as ``why``), a job another claimant holds, or one that
        settled: no commit (it would fail and cost its fee)."""
        status = job["status"]
        if job.get("claimant") == self.address:  # claimed, or committed already (no lapse)
            held.job = job
            if status != "claimed":
                held.commit_sent = True  # (a commit of ours the node already took)
                return False
            return not self._lapsed_now(job_id, held, why)
        if status in UNCLAIMED_STATUSES and self.address in job.get("pending_claimants", ()):
            return True  # our claim on its way: the commit follows it
        # our claim failed, was dropped from the pool, or took the job and lapsed (the
        # job reopened or another holds it): a commit would fail
        self._ended(job_id, held, job)
        return False

    def _took_it(self, held: RemoteHeld) -> bool:
        """Our claim took the job on the node's chain: we saw the job as ours, or our
        claim transaction is in a block and did not fail (seen or not: a miner that was
        suspended or cut off meanwhile may never see the job as ours)."""
        if self._was_ours(held):
            return True
        if not held.claim_txid:
            return False
        receipt = self._receipt(held.claim_txid)
        if receipt is None:
            return False
        return receipt.get("status") == "ok" and bool(receipt.get("confirmations"))

    def _was_ours(self, held: RemoteHeld) -> bool:
        """The job as we last saw it was claimed or committed by us on chain."""
        return held.job.get("claimant") == self.address and held.job.get("status") in (
            HELD_STATUSES
        )  # fmt: skip

    def _ended(self, job_id: str, held: RemoteHeld, job: dict[str, Any]) -> bool:
        """The node no longer shows the job (getjob's ``job``) as ours: True if our
        claim of it is over, paid or with the bond lost (said and counted here, once),
        so that it can be forgotten; False if we never held it on chain or a reorg took
        our claim back (pooled again, or the MTP before its deadline)."""
        if held.ended:
            return True
        if self.address in job.get("pending_claimants", ()):
            return False  # a claim of ours still pooled (sent, or put back by a reorg)
        seen = self._was_ours(held)
        if not (seen or self._took_it(held)):
            return False
        ours = job.get("claimant") == self.address
        if ours and job["status"] == "paid":
            held.ended = True
            log.info("job %s paid: its bounty and our bond are ours", job_id[:16])
        elif ours and job["status"] == "refunded":
            self._lapse(job_id, held, REFUNDED)
        elif not ours and (
            not seen or int(job.get("mtp", 0)) >= int(held.job.get("claim_deadline", 0))
        ):  # reopened (maybe claimed by another since): our claim lapsed
            if not held.job.get("bond"):  # never seen as ours: the bond the job asks
                held.job["bond"] = self.network.market.bond_for(int(job["bounty"]))
            self._lapse(job_id, held, LAPSED_UNCOMMITTED)
        return held.ended

    def _lapsed_now(self, job_id: str, held: RemoteHeld, why: str) -> bool:
        """Our claim lapsed (``held.job``'s ``claim_lapsed``, the node's as of its tip):
        the next block reopens the job and the bond goes to the buyer."""
        if not held.job.get("claim_lapsed"):
            return False
        self._lapse(job_id, held, why)
        return True

    def _lapse(self, job_id: str, held: RemoteHeld, why: str) -> None:
        """Our bond is lost (``why``): a warning and ``bonds_lost``, once per claim. The
        job stays held (``ended``: neither computed nor committed) until the node no
        longer shows it as ours, so that it is not taken back meanwhile."""
        if held.ended:
            return
        held.ended = True
        held.unsent = held.a = held.bt = held.leaves = None  # no product of it counts now
        self.bonds_lost += 1
        log.warning("job %s: %s (bond %s)", job_id[:16], why, held.job.get("bond", "?"))

    def _restore(self, job_id: str, held: RemoteHeld, why: str) -> None:
        """A committed job's C is gone from the node: compute it again (a worker's next
        product, the lottery riding on it) and upload it, so that buyers can fetch it and
        probes are answered before the bond is lost."""
        if held.restore or held.unservable:
            return
        held.restore, held.computed, held.dispatched = True, False, False
        log.warning("job %s: %s: computing C again to serve it", job_id[:16], why)

    def _upload_restored(self, job_id: str, held: RemoteHeld) -> None:
        """Upload C computed again (``_restore``), if it is the committed one; tried
        again each round while the node does not take it."""
        from wallet.jobs import JobError, upload_blob

        assert held.unsent is not None
        try:
            root = upload_blob(self.blob_url, "c", held.unsent, self.blob_auth,
                               timeout=C_UPLOAD_WAIT_S)  # fmt: skip
        except JobError as exc:
            log.warning("job %s: C computed again not uploaded yet (%s)", job_id[:16], exc)
            return
        held.restore, held.unsent = False, None
        if root.hex() != held.job["result_root"]:
            held.unservable = True
            log.error(
                "job %s: C computed again has root %s, not the committed %s: its probes "
                "cannot be answered", job_id[:16], root.hex()[:16], held.job["result_root"][:16],
            )  # fmt: skip
            return
        held.probe_failed.clear()
        log.info("job %s: C computed again and uploaded: served again", job_id[:16])
        if "probe" in held.job:  # the probe that found C gone: answered now, not next tip
            self._reveal(job_id, held, held.job["probe"])

    def _send_result(self, job_id: str, held: RemoteHeld) -> bool:
        """Upload C to the node (once) and send the commit; False if either did not
        get through (``_redeliver`` tries again next round)."""
        from wallet.jobs import JobError, upload_blob

        try:
            stale = time.monotonic() - held.uploaded_at > REUPLOAD_S
            if held.unsent is not None and (not held.c_on_node or stale):
                held.result_root = upload_blob(self.blob_url, "c", held.unsent, self.blob_auth,
                                               timeout=C_UPLOAD_WAIT_S)  # fmt: skip
                held.c_on_node, held.uploaded_at = True, time.monotonic()
            assert held.result_root is not None
            tx = commit_tx(self.network, self.key, self._nonce(), bytes.fromhex(job_id),
                           held.result_root, url=self.blob_url, fee=self.fee)  # fmt: skip
            self.rpc.call("sendrawtransaction", tx.to_bytes().hex())
        except (JobError, RpcError, RpcConnectionError) as exc:
            if isinstance(exc, RpcConnectionError):
                held.c_on_node = False  # the node may have died with C unwritten
            if not held.warned:
                held.warned = True
                log.warning(
                    "job %s: C not delivered yet (%s); trying again each market round while "
                    "the claim holds: check that the node runs and that %s pays the fee",
                    job_id[:16], exc, self.address,
                )  # fmt: skip
            else:
                log.debug("job %s: C not delivered yet (%s)", job_id[:16], exc)
            return False
        held.commit_sent, held.commit_txid = True, tx.txid
        held.checked_at = time.monotonic()
        self.commits += 1
        log.info("sent the commit of job %s, result root %s", job_id[:16],
                 held.result_root.hex()[:16])  # fmt: skip
        return True

    def _receipt(self, txid: bytes) -> dict[str, Any] | None:
        """The node's gettransaction of a transaction of ours (in a block: ``status`` ok
        or failed, with the failure's reason); None if the node holds it nowhere (a
        restart emptied its pool before a block took it)."""
        try:
            return dict(self.rpc.call("gettransaction", txid.hex()))
        except RpcError:
            return None

    def _node_has(self, txid: bytes) -> bool:
        """The node holds the transaction (pool or chain)."""
        return self._receipt(txid) is not None

    def _redeliver(self) -> None:
        """Each round: the products whose upload or commit did not get through, and
        (every RECHECK_S) commits the node no longer has. A commit the node took though
        its answer was lost is not sent again."""
        now = time.monotonic()
        for job_id, held in list(self.held.items()):
            if not held.computed or held.ended:
                continue
            if held.restore:  # C computed again, its upload not through yet
                self._upload_restored(job_id, held)
                continue
            if held.commit_sent:
                claimed = held.job.get("status") == "claimed"
                if claimed and held.commit_txid and now - held.checked_at >= RECHECK_S:
                    held.checked_at = now
                    receipt = self._receipt(held.commit_txid)
                    if receipt is None:
                        self._lost_commit(job_id, held)
                    elif receipt.get("status") == "failed":
                        held.commit_failed = str(receipt.get("failure") or "failed")
                        held.commit_txid = b""  # nothing more to look for
                        log.warning(
                            "job %s: our commit %s was included as failed (%s): it does "
                            "not count", job_id[:16], receipt.get("txid", "")[:16],
                            held.commit_failed,
                        )  # fmt: skip
                if held.commit_sent or not held.computed:
                    continue
            try:
                job = self.rpc.call("getjob", job_id)
            except RpcError:  # gone from the node: _refresh forgets it
                continue
            ours = job.get("claimant") == self.address
            pending = (job.get("pending_commit") or {}).get("claimant") == self.address
            if (ours and job["status"] == "committed") or pending:
                held.commit_sent = True
                continue
            if self._can_commit(job_id, held, job, LAPSED_UNCOMMITTED):
                self._send_result(job_id, held)

    def _lost_commit(self, job_id: str, held: RemoteHeld) -> None:
        """The node no longer has our commit, not yet in a block (it restarted): send C
        again from memory and commit again; without C in memory (a job taken back),
        commit again if the node still holds C, else compute C again."""
        held.commit_sent, held.c_on_node = False, False
        if held.unsent is None and held.result_root is not None:
            if self._node_has_blob(held.result_root) is False:
                held.computed = held.dispatched = False
                held.result_root = None
                log.warning("job %s: the node lost our commit and C: computing it again",
                            job_id[:16])  # fmt: skip
                return
        log.warning("job %s: the node lost our commit (restarted?): sending it again",
                    job_id[:16])  # fmt: skip

    def _node_has_blob(self, root: bytes) -> bool | None:
        """The node's blob endpoint holds ``root``; None if it does not answer."""
        import urllib.error
        import urllib.request

        try:
            url = f"{self.blob_url.rstrip('/')}/blob/{root.hex()}/info"
            with urllib.request.urlopen(url, timeout=5):
                return True
        except urllib.error.HTTPError as exc:
            return False if exc.code == 404 else None
        except OSError:
            return None

    def _reveal(self, job_id: str, held: RemoteHeld, probe: dict[str, Any]) -> None:
        """Answer a probe with the chunk from the node's copy of C: the probed row and C's
        row roots, fetched and checked against the committed root (not all of C). A
        reveal the node lost (restarted before a block took it) is sent again."""
        where = (int(probe["row"]), int(probe["chunk"]))
        if not held.computed:
            return
        sent = held.reveals.get(where)
        if sent is not None:
            now = time.monotonic()
            if now - held.checked_at < RECHECK_S:
                return
            held.checked_at = now
            if self._node_has(sent):
                return
        job = held.job
        urls = [self.blob_url, job.get("result_url", "")]
        report = FetchReport()
        try:
            row = asyncio.run(fetch_blob(
                urls, bytes.fromhex(job["result_root"]), "c", job["m"], job["n"],
                report=report, lines=range(where[0], where[0] + 1),
            ))  # fmt: skip
        except (BlobError, KeyError) as exc:
            if self._node_has_blob(bytes.fromhex(job["result_root"])) is False:
                self._restore(job_id, held, "probed but the node does not hold C")
                return
            if where not in held.probe_failed:
                held.probe_failed.add(where)
                log.error(
                    "job %s is probed but its C cannot be read from the node (%s): the bond "
                    "is lost unless the node's blob store gets C back before the reveal "
                    "window ends", job_id[:16], exc,
                )  # fmt: skip
            return
        assert report.leaves is not None
        data, chunk_branch, result_branch = row_proof(
            row.astype("<i4").tobytes(), report.leaves, where[0], where[1] * RESULT_CHUNK
        )  # fmt: skip
        tx = reveal_tx(self.network, self.key, self._nonce(), bytes.fromhex(job_id), data,
                       tuple(chunk_branch), tuple(result_branch), fee=self.fee)  # fmt: skip
        if self._send(tx, f"reveal for {job_id[:16]}"):
            held.reveals[where] = tx.txid
            held.checked_at = time.monotonic()
            log.info("revealed chunk %s of job %s", where, job_id[:16])
