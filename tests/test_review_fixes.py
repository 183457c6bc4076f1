"""Small pure checks of fixes a review found: an operator's host names with underscores,
--nop2p binding no P2P port, and the jobs topic finding a disconnected block's timer
changes in its undo data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chain.job_record import job_key
from chain.state import encode_undo
from node.config import NodeConfig
from node.listeners import listeners
from node.rpc.job_events import touched_jobs
from p2p.addrbook import split_host_port


def test_an_operators_host_name_may_hold_underscores() -> None:
    assert split_host_port("pouw_node_1:8333", 1) == ("pouw_node_1", 8333)
    assert split_host_port("project_service_1", 7) == ("project_service_1", 7)
    for bad in ("a b:1", "http://x:1", "x:1_0", "_:"):
        with pytest.raises(ValueError, match="is not a peer address"):
            split_host_port(bad, 1)


def test_nop2p_binds_no_p2p_port(tmp_path: Path) -> None:
    names = [x.what for x in listeners(NodeConfig(datadir=tmp_path, p2p=False), 1, 2)]
    assert "P2P" not in names and "JSON-RPC" in names
    assert "P2P" in [x.what for x in listeners(NodeConfig(datadir=tmp_path), 1, 2)]


def test_a_disconnected_blocks_timer_changes_come_from_its_undo_data() -> None:
    """A block that only fired a timer names no job in its transactions: its undo data
    does, and a reorg that takes it away sends that job again."""
    lapsed = bytes([7]) * 32
    undo = {b"x" * 32: encode_undo({job_key(lapsed): b"claimed record"})}
    block: Any = SimpleNamespace(hash=b"x" * 32, txs=())
    assert touched_jobs([], [block], undo.get, lambda job_id: None) == [lapsed]
