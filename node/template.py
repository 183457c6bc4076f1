"""Block templates: everything of the next block but its operands' commitments and seal.

A template fixes the parent, time, target, transactions, miner and the product's
shape, and precomputes the state root the block will commit to (the state change
depends on the shape through the contribution ledger, not on the operands). The
mining engine then supplies hA and hB through ``statement`` and, if a tile wins,
``block_with_seal`` assembles the block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chain.block import Block
from chain.chainstate import ChainState
from chain.header import HEADER_VERSION, NO_JOB, Header
from chain.tx import Transaction, transactions_root
from chain.validation import expected_target
from consensus.difficulty import median_time_past
from consensus.seal import Seal, WorkStatement


class TemplateShapeError(ValueError):
    """The engine was handed operands of another shape than the template's."""


@dataclass(frozen=True)
class BlockTemplate:
    header: Header  # h_a, h_b and seal still blank
    txs: tuple[Transaction, ...]

    @property
    def target(self) -> int:
        return self.header.target

    def header_for(self, h_a: bytes, h_b: bytes) -> Header:
        return replace(self.header, h_a=h_a, h_b=h_b)

    def statement(self, m: int, k: int, n: int, h_a: bytes, h_b: bytes) -> WorkStatement:
        if (m, k, n) != (self.header.m, self.header.k, self.header.n):
            raise TemplateShapeError(
                f"operands are {m}x{k}x{n}, the template was built for "
                f"{self.header.m}x{self.header.k}x{self.header.n}"
            )
        return self.header_for(h_a, h_b).work_statement()

    def block_with_seal(self, work: WorkStatement, seal: Seal) -> Block:
        header = self.header_for(work.h_a, work.h_b).with_seal(seal)
        return Block(header, self.txs)


def next_timestamp(chain: ChainState, now: int) -> int:
    """Our clock, but always above the median time past of the tip."""
    return max(now, median_time_past(chain.parent_context(chain.tip).recent_timestamps) + 1)


def build_template(
    chain: ChainState,
    miner: bytes,
    txs: list[Transaction],
    shape: tuple[int, int, int],
    now: int,
) -> BlockTemplate:
    """A template on the current tip; ``txs`` must apply in order (mempool.select)."""
    m, k, n = shape
    tip = chain.tip
    header = Header(
        version=HEADER_VERSION,
        height=tip.height + 1,
        parent=tip.hash,
        timestamp=next_timestamp(chain, now),
        target=expected_target(chain.network, chain.parent_context(tip)),
        tx_root=transactions_root(txs),
        state_root=bytes(32),
        miner=miner,
        job_id=NO_JOB,
        m=m,
        k=k,
        n=n,
        h_a=bytes(32),
        h_b=bytes(32),
    )
    changes = chain.block_changes(header, txs)
    header = replace(header, state_root=chain.state_root_after(changes))
    return BlockTemplate(header, tuple(txs))
