"""The ``jobs`` WebSocket topic: after each change of the active chain, the jobs that
it touched, as ``getjob`` shows them on chain.

A job changes by its own transactions (submit, claim, commit, ...) and by the market's
timers (a claim that lapses, a window that closes, an expiry), which no transaction
names; the undo data of a block lists every state key the block wrote, so the jobs
are found there, for the blocks connected and for those disconnected (their undo data
stays stored with them); a disconnected block whose undo data is missing names its
jobs by its market transactions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from chain.block import Block
from chain.job_payloads import JobPayloadError, decode_job_payload
from chain.job_record import PREFIX_JOB, Job
from chain.state import decode_undo
from chain.txkind import TxKind

JOB_KEY_LEN = len(PREFIX_JOB) + 32
# Jobs per notification: a busy block can touch thousands (timers included); each
# notification stays near 200 KB, and a client reads them one by one.
JOBS_PER_NOTICE = 256


def jobs_in_undo(undo: bytes | None) -> Iterator[tuple[bytes, bytes | None]]:
    """The jobs whose records a block wrote, with each record as it was before the block
    (its undo data's job keys)."""
    if undo is None:
        return
    for key, before in decode_undo(undo).items():
        if len(key) == JOB_KEY_LEN and key.startswith(PREFIX_JOB):
            yield key[len(PREFIX_JOB) :], before


def jobs_named(block: Block) -> Iterator[bytes]:
    """The ids of the jobs a block's market transactions name (a submit's is its txid)."""
    for tx in block.txs:
        if tx.kind == TxKind.JOB_SUBMIT:
            yield tx.txid
        elif tx.kind != TxKind.TRANSFER:
            try:
                job_id = getattr(decode_job_payload(tx.kind, tx.payload), "job_id", None)
            except (JobPayloadError, ValueError):
                continue
            if isinstance(job_id, bytes):
                yield job_id


def touched_jobs(
    connected: Iterable[Block], disconnected: Iterable[Block],
    undo_of: Callable[[bytes], bytes | None], record_now: Callable[[bytes], bytes | None],
) -> list[bytes]:  # fmt: skip
    """Every job whose record a tip change altered, each once, in the order first met:
    those a disconnected block wrote, and those whose record ``record_now`` (by job id)
    differs from what it was before the first connected block that wrote it."""
    named: dict[bytes, None] = {}
    for block in disconnected:
        undo = undo_of(block.hash)
        found = [j for j, _ in jobs_in_undo(undo)] if undo is not None else jobs_named(block)
        named.update(dict.fromkeys(found))
    before: dict[bytes, bytes | None] = {}
    for block in connected:
        for job_id, old in jobs_in_undo(undo_of(block.hash)):
            before.setdefault(job_id, old)
    changed = (
        j for j, old in before.items() if j not in named and _seen(record_now(j)) != _seen(old)
    )
    return [*named, *changed]


def _seen(record: bytes | None) -> Job | None:
    """A job record as a client sees it: without ``wake_height``, which a timer moves at
    each look at a deadline that has not passed (nothing a client sees changed)."""
    return None if record is None else dataclasses.replace(Job.from_bytes(record), wake_height=0)


def notices(
    tip_height: int, tip_hash: bytes, reorg: bool, jobs: list[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """The ``jobs`` topic's notification results: the tip and up to JOBS_PER_NOTICE jobs
    each (``more``: another notification of this change follows)."""
    for start in range(0, len(jobs), JOBS_PER_NOTICE):
        part = jobs[start : start + JOBS_PER_NOTICE]
        yield {
            "height": tip_height, "hash": tip_hash.hex(), "reorg": reorg, "jobs": part,
            "more": start + JOBS_PER_NOTICE < len(jobs),
        }  # fmt: skip
