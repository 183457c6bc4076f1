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
# A genesis file is a few KiB (parameters and allocations); a larger one is the wrong
# file, and reading it whole would only cost memory.
MAX_GENESIS_BYTES = 4 * 1024 * 1024


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


def _table(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise NetworkError(f"{name}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_network(data: dict[str, Any]) -> Network:
    """A Network from a decoded genesis JSON object; NetworkError for anything wrong."""
    try:
        return _parse_network(data)
    except NetworkError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as exc:
        # ValueError covers AddressError and ParamsError; each message names the field.
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise NetworkError(f"genesis file is invalid: {what}") from None


def _parse_network(data: Any) -> Network:
    data = _table(data, "genesis file")
    try:
        name = data["network"]
        if name not in NETWORKS:
            raise NetworkError(f"unknown network {name!r}; expected one of {NETWORKS}")
        hrp = HRP_BY_NETWORK[name]
        pouw = PouwParams(**_ints(data["pouw"], "pouw"))
        difficulty = DifficultyParams(**_ints(data["difficulty"], "difficulty"))
        subsidy = SubsidyParams(**_ints(data["subsidy"], "subsidy"))
        filler = FillerShape(**_ints(data["filler"], "filler"))
        market = MarketParams(**_ints(data.get("market", {}), "market"))
        genesis = _table(data["genesis"], "genesis")
        if not isinstance(genesis["allocations"], list):
            raise NetworkError("genesis.allocations: expected a JSON list")
        allocations = tuple(
            (
                decode_address(_table(a, "genesis.allocations[]")["address"], hrp),
                _int(a["amount"], "genesis.allocations.amount"),
            )
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
            seeds=_seeds(data.get("seeds", [])),
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


def _ints(table: Any, name: str) -> dict[str, int]:
    return {k: _int(v, f"{name}.{k}") for k, v in _table(table, name).items()}


def _seeds(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise NetworkError("seeds: expected a list of strings")
    return tuple(value)


def load_network(name: str, path: Path | None = None) -> Network:
    """Load a shipped network by name, or a genesis file at ``path``.

    Anything wrong with the file (unreadable, too large, not UTF-8 JSON, a bad field)
    raises NetworkError naming the file.
    """
    if path is None:
        if name not in NETWORKS:
            raise NetworkError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
        raw = resources.files("genesis").joinpath(f"{name}.json").read_bytes()
        where = f"shipped genesis of {name}"
    else:
        where = f"genesis file {path}"
        try:
            with Path(path).open("rb") as f:
                raw = f.read(MAX_GENESIS_BYTES + 1)
        except OSError as exc:
            raise NetworkError(
                f"cannot read {where} ({exc.strerror or exc}); check --genesis-file"
            ) from None
        if len(raw) > MAX_GENESIS_BYTES:
            raise NetworkError(f"{where} is larger than {MAX_GENESIS_BYTES} bytes: not a genesis")
    return parse_genesis(raw, where)


def parse_genesis(raw: bytes, where: str = "genesis file") -> Network:
    """A Network from the bytes of a genesis file; only NetworkError on bad input."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise NetworkError(f"{where} is not UTF-8 text: {exc}") from None
    except ValueError as exc:  # (JSONDecodeError, or an integer of over 4300 digits)
        raise NetworkError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise NetworkError(f"{where} is not a genesis file: JSON nested too deeply") from None
    try:
        return parse_network(data)
    except NetworkError as exc:
        raise NetworkError(f"{where}: {exc}") from None
