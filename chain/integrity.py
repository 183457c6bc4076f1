"""Is a stored block what its key says? Every block read from the database is checked.

A block's key is its hash, and its header commits to its transactions (tx root), so a
block read back must decode, hash to its key, and carry the transactions its header
commits to; anything else is damage on disk (LevelDB checksums catch most, not all).
"""

from __future__ import annotations

from chain.block import Block
from chain.encoding import DecodeError


def decode_checked(raw: bytes, block_hash: bytes) -> tuple[Block | None, str]:
    """(the block, "") when ``raw`` is the block ``block_hash``; else (None, why not)."""
    try:
        block = Block.from_bytes(raw)
    except DecodeError as exc:
        return None, f"does not decode: {exc}"
    if block.hash != block_hash:
        return None, f"its header hashes to {block.hash.hex()}"
    if block.header.height > 0 and block.computed_tx_root() != block.header.tx_root:
        return None, "its transactions do not match the header's tx root"
    return block, ""


def block_problem(raw: bytes, block_hash: bytes) -> str | None:
    """Why ``raw`` is not the block ``block_hash`` (None when it is)."""
    block, problem = decode_checked(raw, block_hash)
    return None if block is not None else problem
