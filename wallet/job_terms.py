"""The buyer's defaults and error type, shared by the job CLI, the Python API and the
miners, in a module that loads no NumPy: every `pouw` command builds the job CLI's
parser, and only the job commands need the arrays (wallet/job_txs.py)."""

from __future__ import annotations

DEFAULT_JOB_FEE = 1000
DEFAULT_EXPIRY_S = 3600  # a job stays claimable an hour unless the buyer says otherwise
# `pouw job list` shows this many products unless told: each part costs one getjob call
DEFAULT_LIST_LIMIT = 10


class JobError(Exception):
    """A job operation failed; the message says why and what to do."""
