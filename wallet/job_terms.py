"""The buyer's defaults and error type, shared by the job CLI, the Python API and the
miners, in a module that loads no NumPy: every `pouw` command builds the job CLI's
parser, and only the job commands need the arrays (wallet/job_txs.py)."""

from __future__ import annotations

DEFAULT_JOB_FEE = 1000  # also the fee miners pay for each claim and commit
MINER_TXS_PER_PART = 2  # a miner's claim and commit: the fees a part's bounty must beat
# A job's bounty below this costs its miner more in fees than it pays: miners leave it
# (node/market_claims.py, node/remote_market.py) and the client refuses to submit it.
LEAST_PART_BOUNTY = MINER_TXS_PER_PART * DEFAULT_JOB_FEE
DEFAULT_EXPIRY_S = 3600  # a job stays claimable an hour unless the buyer says otherwise
# `pouw job list` shows this many products unless told: each part costs one getjob call
DEFAULT_LIST_LIMIT = 10


class JobError(Exception):
    """A job operation failed; the message says why and what to do."""
