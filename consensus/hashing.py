"""Domain-separated SHA-256, the one hash function of the protocol.

Every hash in pouw is a *tagged* hash in the style of BIP-340:

    tagged_hash(tag, data) = SHA256(SHA256(tag) || SHA256(tag) || data)

The 64-byte prefix fills exactly one SHA-256 block, so a hasher with the prefix
already absorbed can be copied cheaply for each message (``tagged_hasher``).
Tags are ASCII strings of the form ``pouw/<purpose>``; every tag in use is listed
in ``TAGS`` and in docs/PROTOCOL.md, and no two purposes share a tag.
"""

from __future__ import annotations

import hashlib
from functools import cache

HASH_SIZE = 32

# Every domain tag of the protocol. A new purpose gets a new tag, never a reused one.
TAG_MERKLE_LEAF = "pouw/merkle/leaf"
TAG_MERKLE_NODE = "pouw/merkle/node"
TAG_SEED_B = "pouw/seed/b"
TAG_SEED_A = "pouw/seed/a"
TAG_NOISE = "pouw/noise"
TAG_TICKET = "pouw/ticket"
TAG_FILLER = "pouw/filler"
TAG_HEADER = "pouw/header"
TAG_HEADER_PREFIX = "pouw/header/prefix"
TAG_TX = "pouw/tx"
TAG_TX_SIG = "pouw/tx/sig"
TAG_ADDRESS = "pouw/address"
TAG_STATE_LEAF = "pouw/state/leaf"
TAG_STATE_NODE = "pouw/state/node"
TAG_TX_LEAF = "pouw/tx/leaf"
TAG_TX_NODE = "pouw/tx/node"
TAG_GENESIS = "pouw/genesis"
TAG_RESULT_LEAF = "pouw/result/leaf"
TAG_RESULT_NODE = "pouw/result/node"
TAG_RESULT_ROW = "pouw/result/row"

TAGS: tuple[str, ...] = (
    TAG_MERKLE_LEAF,
    TAG_MERKLE_NODE,
    TAG_SEED_B,
    TAG_SEED_A,
    TAG_NOISE,
    TAG_TICKET,
    TAG_FILLER,
    TAG_HEADER,
    TAG_HEADER_PREFIX,
    TAG_TX,
    TAG_TX_SIG,
    TAG_ADDRESS,
    TAG_STATE_LEAF,
    TAG_STATE_NODE,
    TAG_TX_LEAF,
    TAG_TX_NODE,
    TAG_GENESIS,
    TAG_RESULT_LEAF,
    TAG_RESULT_NODE,
    TAG_RESULT_ROW,
)


@cache
def _prefixed(tag: str) -> hashlib._Hash:
    tag_digest = hashlib.sha256(tag.encode("ascii")).digest()
    return hashlib.sha256(tag_digest + tag_digest)


def tagged_hasher(tag: str) -> hashlib._Hash:
    """A fresh SHA-256 object with the tag prefix already absorbed."""
    return _prefixed(tag).copy()


def tagged_hash(tag: str, *parts: bytes) -> bytes:
    """SHA256(SHA256(tag) || SHA256(tag) || parts[0] || parts[1] || ...)."""
    h = _prefixed(tag).copy()
    for part in parts:
        h.update(part)
    return h.digest()
