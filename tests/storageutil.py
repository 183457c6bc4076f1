"""Helpers for storage fault tests: a datadir with a real chain, `pouw node` runs, and
checks on what the operator sees (one ERROR line, no traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from chain.chainstate import ChainState
from tests.chainutil import Clock, easy_devnet, mine_block, open_db
from tests.test_rpc_util import easy_genesis_file

NET = easy_devnet()
# Seconds between the blocks mined here: above the easy devnet's target spacing.
BLOCK_SPACING_S = 60


def build_chain(datadir: Path, blocks: int, more: int = 0) -> list[str]:
    """Mine ``blocks`` blocks, reopen the database (LevelDB then moves its log into a
    table file), mine ``more``; the active hashes by height (hex) come back."""
    datadir.mkdir(parents=True, exist_ok=True)
    easy_genesis_file(datadir)
    clock = Clock(NET.genesis_time + 1000)
    for count in (blocks, more):
        db = open_db(datadir / "devnet", NET)
        try:
            chain = ChainState(db, NET, clock)
            for _ in range(count):
                clock.now += BLOCK_SPACING_S
                chain.process_block(mine_block(chain))
            hashes = [chain.active_hash(h) for h in range(chain.tip.height + 1)]
        finally:
            db.close()
    return [h.hex() for h in hashes if h is not None]


def node_cmd(datadir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "node.cli", "node", "--network", "devnet",
        "--datadir", str(datadir), "--genesis-file", str(datadir / "easy-devnet.json"),
        "--nop2p", "--norpc", "--nodebuglogfile", "--progress", "never", *extra,
    ]  # fmt: skip


def run_node(datadir: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`pouw node` that mines one block and stops (or fails at start)."""
    return subprocess.run(
        node_cmd(datadir, "--mine", "--max-blocks", "1", "--engine", "numpy", *extra),
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if " ERROR " in line]


def assert_one_clean_error(
    proc: subprocess.CompletedProcess[str], *words: str, code: int = 1
) -> str:
    """The run failed with exit ``code`` (2: a usage error), one ERROR line holding
    ``words``, and no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out, out
    errors = error_lines(out)
    assert len(errors) == 1, out
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


FIX = re.compile(r"`(pouw node [^`]+)`")


def fix_command(error: str) -> list[str]:
    """The extra flags of the `pouw node ...` command an error line names."""
    m = FIX.search(error)
    assert m is not None, f"no command in: {error}"
    words = m.group(1).split()
    return [w for w in words[2:] if w.startswith("--") and w in ("--repair", "--reindex")]


def tip_height(datadir: Path) -> int:
    db = open_db(datadir / "devnet", NET)
    try:
        return ChainState(db, NET).tip.height
    finally:
        db.close()
