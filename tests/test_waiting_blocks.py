"""chain/waiting_blocks: the orphan and future-block pools stay under their byte cap
together, whichever pool a block goes to."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import chain.waiting_blocks as waiting
from chain.waiting_blocks import WaitingBlocks


def _block(i: int, size: int) -> Any:
    return SimpleNamespace(hash=bytes([i]) * 32, tx_bytes=size, header=SimpleNamespace(seal=b""))


def test_both_pools_stay_under_the_byte_cap_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block into an empty pool while the other holds nearly the cap: the other's
    oldest go (before, the two together went over the cap by that block)."""
    monkeypatch.setattr(waiting, "MAX_WAITING_BYTES", 1000)
    pools = WaitingBlocks()
    for i in range(3):
        pools.hold_future(_block(i, 300))
    pools.keep_orphan(_block(9, 300))
    assert pools.waiting_bytes() <= 1000
    assert list(pools.held) == [bytes([1]) * 32, bytes([2]) * 32]  # the oldest went
    assert list(pools.orphans) == [bytes([9]) * 32]
