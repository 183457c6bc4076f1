"""A deep honest fork with more work is adopted through headers presync (real node
processes on 127.0.0.1): the node checks the fork's headers without storing them
until they show more work than its own chain, downloads them again against its
commitments, stores them, fetches the blocks and reorganises onto the fork. The
header requests are sized in bytes (getheaders max_bytes), so a small cap makes the
short default-run fork take many presync rounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.p2putil import (
    NodeProc,
    premine,
    procs_fixture,  # noqa: F401 - the "procs" fixture
    write_genesis,
)


def _adopt_fork(
    tmp_path: Path, procs: list[NodeProc], ours_n: int, theirs_n: int, env: dict[str, str]
) -> str:
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, theirs_n)
    premine(tmp_path / "ours", network, ours_n, miner_key=4)
    fork_tip = premine(tmp_path / "theirs", network, theirs_n, miner_key=6)
    theirs = NodeProc(tmp_path / "theirs", genesis)
    procs.append(theirs)
    theirs.start()
    theirs.wait_log("p2p listening")
    ours = NodeProc(tmp_path / "ours", genesis)
    procs.append(ours)
    ours.start("--connect", theirs.addr, env=env)
    height, tip = ours.wait_height(theirs_n, timeout=240)
    assert (height, tip) == (theirs_n, fork_tip.hex())
    ours.stop()
    theirs.stop()
    log = ours.log()
    assert "header presync with peer" in log and "from height 0" in log
    assert "downloading its headers again to store them" in log
    done = re.search(r"presync with peer \d+ done: .* headers stored to height (\d+)", log)
    assert done is not None and ours_n < int(done.group(1)) <= theirs_n, log[-3000:]
    assert "none stored" not in log and "discouraging" not in log
    return log


def test_fork_with_more_work_is_adopted_through_presync(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    # ~5 headers per reply (each ~5.4 KB), a commitment bit per 2 headers and a
    # second-pass buffer of 6: presync, commitment checks and early release all run.
    env = {
        "POUW_P2P_HEADERS_MAX_BYTES": "30000",
        "POUW_P2P_PRESYNC_PERIOD": "2",
        "POUW_P2P_PRESYNC_BUFFER": "6",
    }
    log = _adopt_fork(tmp_path, procs, 40, 60, env)
    rounds = re.findall(r"header presync with peer \d+ from height", log)
    assert len(rounds) == 1, rounds


@pytest.mark.slow
def test_fork_deeper_than_2000_blocks_is_adopted_with_default_settings(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    _adopt_fork(tmp_path, procs, 2000, 2100, {})
