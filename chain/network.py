"""Networks: the parameters and genesis allocations shipped in genesis/<name>.json.

The JSON is the single source of truth; this module loads it into typed,
validated objects. The genesis *block* is derived from it in chain/genesis.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from chain.address import HRP_BY_NETWORK, decode_address
from consensus.params import (
    DifficultyParams,
    MarketParams,
    ParamsError,
    PouwParams,
    SubsidyParams,
)
from consensus.subsidy import subsidy_fits_cap

NETWORKS = ("devnet", "testnet", "mainnet")


class NetworkError(ValueError):
    """An unknown network name or a genesis file that breaks the rules."""


@dataclass(frozen=True)
class FillerShape:
    """Shape of the pseudo-random product a miner with no job multiplies."""

    m: int
    k: int
    n: int


@dataclass(frozen=True)
class Network:
    name: str
    chain_id: int
    hrp: str
    p2p_port: int
    rpc_port: int
    pouw: PouwParams
    difficulty: DifficultyParams
    subsidy: SubsidyParams
    filler: FillerShape
    genesis_time: int
    genesis_message: str
    allocations: tuple[tuple[bytes, int], ...]  # (address, base units)
    seeds: tuple[str, ...]
    market: MarketParams = MarketParams()

    @property
    def genesis_funds(self) -> int:
        return sum(amount for _, amount in self.allocations)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise NetworkError(f"{name}: expected an integer, got {value!r}")
    try:
        return int(value, 0) if isinstance(value, str) else value
    except ValueError as exc:
        raise NetworkError(f"{name}: {value!r} is not an integer") from exc


def parse_network(data: dict[str, Any]) -> Network:
    try:
        name = data["network"]
        if name not in NETWORKS:
            raise NetworkError(f"unknown network {name!r}; expected one of {NETWORKS}")
        hrp = HRP_BY_NETWORK[name]
        pouw = PouwParams(**{k: _int(v, f"pouw.{k}") for k, v in data["pouw"].items()})
        difficulty = DifficultyParams(
            **{k: _int(v, f"difficulty.{k}") for k, v in data["difficulty"].items()}
        )
        subsidy = SubsidyParams(**{k: _int(v, f"subsidy.{k}") for k, v in data["subsidy"].items()})
        filler = FillerShape(**{k: _int(v, f"filler.{k}") for k, v in data["filler"].items()})
        market = MarketParams(
            **{k: _int(v, f"market.{k}") for k, v in data.get("market", {}).items()}
        )
        genesis = data["genesis"]
        allocations = tuple(
            (decode_address(a["address"], hrp), _int(a["amount"], "genesis.allocations.amount"))
            for a in genesis["allocations"]
        )
        network = Network(
            name=name,
            chain_id=_int(data["chain_id"], "chain_id"),
            hrp=hrp,
            p2p_port=_int(data["p2p_port"], "p2p_port"),
            rpc_port=_int(data["rpc_port"], "rpc_port"),
            pouw=pouw,
            difficulty=difficulty,
            subsidy=subsidy,
            filler=filler,
            genesis_time=_int(genesis["timestamp"], "genesis.timestamp"),
            genesis_message=str(genesis.get("message", "")),
            allocations=allocations,
            seeds=tuple(str(s) for s in data.get("seeds", [])),
            market=market,
        )
    except (KeyError, TypeError) as exc:
        raise NetworkError(f"genesis file is missing or mistypes a field: {exc}") from exc
    try:
        pouw.validate()
        difficulty.validate()
        subsidy.validate()
        market.validate()
    except ParamsError as exc:
        raise NetworkError(f"{name}: {exc}") from exc
    if not subsidy_fits_cap(subsidy, network.genesis_funds):
        raise NetworkError(f"{name}: genesis funds plus all subsidies exceed the supply cap")
    if any(amount <= 0 for _, amount in allocations):
        raise NetworkError(f"{name}: genesis allocations must be positive")
    return network


def load_network(name: str, path: Path | None = None) -> Network:
    """Load a shipped network by name, or a genesis file at ``path``."""
    if path is None:
        if name not in NETWORKS:
            raise NetworkError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
        text = resources.files("genesis").joinpath(f"{name}.json").read_text()
    else:
        text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetworkError(f"genesis file for {name} is not valid JSON: {exc}") from exc
    return parse_network(data)
