"""Helpers for chain tests: an easy devnet, a datadir, and mining real blocks.

Blocks are mined for real (the NumPy engine, real seals); only the difficulty of the
test network is lowered so that about one filler product in two wins.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from chain.address import address_from_pubkey
from chain.block import Block
from chain.chainstate import ChainState
from chain.keys import devnet_key
from chain.network import Network, parse_network
from chain.storage import ChainDB, open_chain
from chain.tx import Transaction, TxKind, sign
from compute.engine import MiningEngine
from compute.numpy_engine import NumpyEngine
from consensus.ints import u64
from consensus.pouw import filler_matrices
from node.template import BlockTemplate, build_template

EASY_WORK = 2**17  # expected multiply-adds per block: ~1 filler product of 64x128x64 in 4


def easy_devnet(**overrides: Any) -> Network:
    data = json.loads(resources.files("genesis").joinpath("devnet.json").read_text())
    data["difficulty"]["max_target"] = hex(2**256 // 2**12)
    data["difficulty"]["genesis_target"] = hex(2**256 // EASY_WORK)
    data["filler"] = {"m": 64, "k": 128, "n": 64}
    data["subsidy"]["coinbase_maturity"] = 3
    for key, value in overrides.items():
        data[key] = value
    return parse_network(data)


def open_db(path: Path, network: Network) -> ChainDB:
    """A test's own chain database: no fsyncs (nothing outlives the test)."""
    return open_chain(path, network=network.name, durable=False)


class Clock:
    """A settable clock for ChainState; templates read it too."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> float:
        return float(self.now)


_ENGINE: MiningEngine = NumpyEngine()
MINER = address_from_pubkey(devnet_key(4).public_key)


def mine_block(
    chain: ChainState,
    txs: list[Transaction] | None = None,
    miner: bytes = MINER,
    now: int | None = None,
    salt: bytes = b"",
) -> Block:
    """Mine a valid block on the current tip (loops over filler products until one wins)."""
    net = chain.network
    shape = (net.filler.m, net.filler.k, net.filler.n)
    now = int(chain.clock()) if now is None else now
    return seal_template(chain, build_template(chain, miner, list(txs or []), shape, now), salt)


def seal_template(chain: ChainState, template: BlockTemplate, salt: bytes = b"") -> Block:
    """Mine ``template`` as it is (tests use it to seal deliberately wrong headers)."""
    net = chain.network
    shape = (template.header.m, template.header.k, template.header.n)
    for attempt in range(10_000):
        a, b = filler_matrices(template.header.parent + salt + u64(attempt), *shape)
        out = _ENGINE.mine(net.pouw, a, b, template)
        if out.seals:
            return template.block_with_seal(out.work, out.seals[0])
    raise AssertionError("no block after 10,000 products: is the test difficulty wrong?")


def transfer(
    network: Network, key_index: int, nonce: int, recipient: bytes, amount: int, fee: int = 10
) -> Transaction:
    key = devnet_key(key_index)
    tx = Transaction(
        chain_id=network.chain_id,
        kind=TxKind.TRANSFER,
        sender_pubkey=key.public_key,
        nonce=nonce,
        fee=fee,
        recipient=recipient,
        amount=amount,
    )
    return sign(tx, key)


def address_of(key_index: int) -> bytes:
    return address_from_pubkey(devnet_key(key_index).public_key)
