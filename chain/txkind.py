"""Transaction kinds: what a transaction does (the job kinds: docs/MARKET.md).

Kept apart from chain/tx.py so that the market's payload codec (chain/job_payloads.py)
and the transaction's context-free rules can both name kinds without importing each
other or the market's state rules.
"""

from __future__ import annotations

import enum


class TxKind(enum.IntEnum):
    TRANSFER = 1
    JOB_SUBMIT = 2  # buyer: post a product with an escrowed bounty (amount = bounty)
    JOB_COMMIT = 3  # claimant: commit to C's root and where C is served
    JOB_CHALLENGE = 4  # anyone: prove one committed entry wrong (O(k) data)
    JOB_RECLAIM = 5  # buyer: cancel an open (unclaimed) job
    JOB_CLAIM = 6  # worker: take an open job until a deadline (amount = bond)
    JOB_PROBE = 7  # anyone: ask the claimant to publish one chunk of C (amount = deposit)
    JOB_REVEAL = 8  # claimant: publish the probed chunk with its branches


# Kinds whose amount is escrowed by the market rather than sent to a recipient; each
# must be at least 1 (a bounty, a bond, a deposit). Every other job kind moves nothing.
AMOUNT_KINDS: frozenset[int] = frozenset({TxKind.JOB_SUBMIT, TxKind.JOB_CLAIM, TxKind.JOB_PROBE})
