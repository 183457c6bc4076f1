"""The genesis block of a network, derived from its genesis file.

Genesis is not mined: it carries no seal and no shape (m = k = n = 0). Its h_a field
holds the tagged hash of the genesis message, and its state root commits to the
allocations, so two networks with different files never share a genesis hash.
"""

from __future__ import annotations

from chain.block import Block
from chain.header import HEADER_VERSION, NO_JOB, Header
from chain.network import Network
from chain.state import Changes, genesis_state
from chain.state_tree import StateTree
from chain.tx import transactions_root
from consensus.hashing import TAG_GENESIS, tagged_hash


def genesis_changes(network: Network) -> Changes:
    return genesis_state(network.allocations)


def genesis_block(network: Network) -> Block:
    changes = genesis_changes(network)
    items = [(k, v) for k, v in changes.items() if v is not None]
    header = Header(
        version=HEADER_VERSION,
        height=0,
        parent=bytes(32),
        timestamp=network.genesis_time,
        target=network.difficulty.genesis_target,
        tx_root=transactions_root(()),
        state_root=StateTree.build(items).root,
        miner=bytes(20),
        job_id=NO_JOB,
        m=0,
        k=0,
        n=0,
        h_a=tagged_hash(TAG_GENESIS, network.genesis_message.encode()),
        h_b=bytes(32),
    )
    return Block(header, ())
