"""Node settings after flags and defaults are merged (a TOML file comes with issue 7)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_datadir() -> Path:
    return Path(os.environ.get("POUW_DATADIR", Path.home() / ".pouw"))


def network_dir(datadir: Path, network: str) -> Path:
    """Each network keeps its own folder, so one datadir can hold all three."""
    return Path(datadir) / network


@dataclass(frozen=True)
class NodeConfig:
    network: str = "devnet"
    datadir: Path = Path(".")
    mine: bool = False
    miner_address: str | None = None
    engine: str | None = None  # "numpy", "cupy" or None for automatic
    reindex: bool = False
    max_blocks: int | None = None  # stop after mining this many blocks (tests, demos)

    @property
    def network_dir(self) -> Path:
        return network_dir(self.datadir, self.network)
