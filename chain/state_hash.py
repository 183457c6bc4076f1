"""The four hash functions of the state root (docs/PROTOCOL.md, "State root"):

    path(key)        = tagged_hash(TAG_STATE_LEAF, 0x00 || u8(len(key)) || key)
    value_digest(v)  = tagged_hash(TAG_STATE_LEAF, 0x01 || u32be(len(v)) || v)
    leaf(path, vd)   = tagged_hash(TAG_STATE_LEAF, 0x02 || path || vd)
    node(l, r)       = tagged_hash(TAG_STATE_NODE, l || r)
    EMPTY            = 32 zero bytes

Domain separation: leaves and inner nodes use different tags; the three leaf-tag
messages start with distinct bytes 0x00/0x01/0x02 and have fixed layouts (the key and
value are length prefixed); EMPTY is not the output of any hash short of a SHA-256
preimage. Hence two different states have different roots short of a SHA-256
collision, and a proof cannot pass a leaf off as a node or the reverse.

The tree (chain/state_tree.py) and its proofs (chain/state_proof.py) both hash with
these. ``hash_calls()`` counts every SHA-256 they compute (tests use it to check the
O(changes · log N) cost of an update; it is not a clock).
"""

from __future__ import annotations

import struct

from consensus.hashing import HASH_SIZE, TAG_STATE_LEAF, TAG_STATE_NODE, tagged_hasher

__all__ = [
    "EMPTY_HASH",
    "MAX_KEY_LEN",
    "PATH_BITS",
    "TOP_BIT",
    "hash_calls",
    "leaf_hash",
    "node_hash",
    "state_path",
    "value_digest",
]

MAX_KEY_LEN = 64
PATH_BITS = 256
TOP_BIT = PATH_BITS - 1  # a path's bit at depth d is (int(path) >> (TOP_BIT - d)) & 1
EMPTY_HASH = bytes(HASH_SIZE)

_PATH_PREFIX = b"\x00"
_VALUE_PREFIX = b"\x01"
_LEAF_PREFIX = b"\x02"
_U32 = struct.Struct(">I")
_LEAF_H = tagged_hasher(TAG_STATE_LEAF)
_NODE_H = tagged_hasher(TAG_STATE_NODE)

_hash_calls = 0


def hash_calls() -> int:
    """How many SHA-256 hashes the state root's functions have computed since import."""
    return _hash_calls


def state_path(key: bytes) -> bytes:
    """The key's 256-bit position: tagged_hash(TAG_STATE_LEAF, 0x00 || u8 len || key)."""
    global _hash_calls
    if len(key) > MAX_KEY_LEN:
        raise ValueError(f"state key is {len(key)} bytes, at most {MAX_KEY_LEN} allowed")
    _hash_calls += 1
    h = _LEAF_H.copy()
    h.update(_PATH_PREFIX + bytes((len(key),)) + key)
    return h.digest()


def value_digest(value: bytes) -> bytes:
    """tagged_hash(TAG_STATE_LEAF, 0x01 || u32be len || value)."""
    global _hash_calls
    _hash_calls += 1
    h = _LEAF_H.copy()
    h.update(_VALUE_PREFIX + _U32.pack(len(value)))
    h.update(value)
    return h.digest()


def leaf_hash(path: bytes, vdigest: bytes) -> bytes:
    """tagged_hash(TAG_STATE_LEAF, 0x02 || path || value_digest)."""
    global _hash_calls
    _hash_calls += 1
    h = _LEAF_H.copy()
    h.update(_LEAF_PREFIX + path + vdigest)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """tagged_hash(TAG_STATE_NODE, left || right); an empty child is EMPTY_HASH."""
    global _hash_calls
    _hash_calls += 1
    h = _NODE_H.copy()
    h.update(left + right)
    return h.digest()
