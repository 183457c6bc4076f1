"""Lower the scheduling priority of the calling thread (Linux: threads have their own
nice value; elsewhere nothing happens).

A CPU miner's filler products (the lottery when no paid job is in hand) run in threads
at a higher nice value than everything else the node does: its network, its RPC, its
blob endpoint and paid products then get the cores first, and filler mining takes
what is left (node/miner.py). Measured on a 2-core machine with three miner processes
and a buyer's node: the buyer's submit and the miners' downloads were slowed by
filler mining that no one waited for.
"""

from __future__ import annotations

import os
import threading

FILLER_NICE = int(os.environ.get("POUW_FILLER_NICE", "10"))  # CFS weight 110 vs 1024 at nice 0


def lower_thread_priority(by: int = FILLER_NICE) -> bool:
    """Raise this thread's nice value by ``by`` (threads it starts inherit it). True if
    it took effect. Irreversible without privileges: call it in a thread of its own."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + by))
    except OSError:  # not allowed, or a platform whose threads share one nice value
        return False
    return True
