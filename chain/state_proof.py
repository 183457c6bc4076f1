"""Proofs that a key holds a value, or is absent, in the state with a given root
(the state tree of chain/state_tree.py; encoding in docs/PROTOCOL.md, "State root").

``StateTree.prove`` makes them; ``verify_state_proof`` checks one against a root you
trust (a header's state_root) with the hashes of chain/state_hash.py alone, so a wallet
or light client needs neither the tree nor the chain's state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chain.state_hash import (
    EMPTY_HASH,
    MAX_KEY_LEN,
    PATH_BITS,
    TOP_BIT,
    leaf_hash,
    node_hash,
    state_path,
    value_digest,
)
from consensus.hashing import HASH_SIZE

__all__ = ["MAX_PROOF_BYTES", "StateProof", "StateProofError", "verify_state_proof"]

# depth u16 | bitmap (32) | up to 256 siblings | kind u8 | leaf path + value digest
MAX_PROOF_BYTES = 2 + PATH_BITS // 8 + PATH_BITS * HASH_SIZE + 1 + 2 * HASH_SIZE

_U16 = struct.Struct(">H")


class StateProofError(ValueError):
    """A state proof is malformed (bad encoding, wrong shape, over the size caps)."""


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


@dataclass(frozen=True, slots=True)
class StateProof:
    """The path of one key through the tree, from the root down to where it ends.

    ``siblings[i]`` is the hash of the sibling subtree at depth ``i + 1`` (root first;
    EMPTY_HASH for an empty subtree), so ``len(siblings)`` is the depth where the path
    ends. ``leaf`` is ``(path, value_digest)`` of the leaf the path ends in, or None if
    it ends in an empty subtree. The key is present iff ``leaf[0] == state_path(key)``;
    otherwise the proof shows it absent. The proof does not depend on the value, and
    the root is not in it: verify against a root you trust (a header's state_root).

    Encoding (``to_bytes``): u16be depth d (0..256) | bitmap of ceil(d/8) bytes, bit i
    (MSB first) set iff siblings[i] is not EMPTY, padding bits zero | the non-empty
    siblings in order, 32 bytes each | u8 kind: 0 = ends in empty, 1 = ends in a leaf |
    for kind 1: leaf path (32) || value digest (32). Nothing may follow. A depth > 0
    path cannot end in an empty subtree whose sibling is also empty (that node would
    not exist), so such a proof is rejected.
    """

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None

    def __post_init__(self) -> None:
        if not isinstance(self.siblings, tuple) or len(self.siblings) > PATH_BITS:
            raise StateProofError(f"siblings must be a tuple of at most {PATH_BITS} hashes")
        for s in self.siblings:
            if not _is_hash(s):
                raise StateProofError("every sibling must be a 32-byte hash")
        if self.leaf is None:
            if self.siblings and self.siblings[-1] == EMPTY_HASH:
                raise StateProofError("path ends in an empty subtree next to an empty sibling")
        elif not (
            isinstance(self.leaf, tuple)
            and len(self.leaf) == 2
            and _is_hash(self.leaf[0])
            and _is_hash(self.leaf[1])
        ):
            raise StateProofError("leaf must be (path, value_digest), two 32-byte hashes")

    @property
    def depth(self) -> int:
        return len(self.siblings)

    def to_bytes(self) -> bytes:
        d = len(self.siblings)
        bitmap = bytearray((d + 7) // 8)
        body = []
        for i, s in enumerate(self.siblings):
            if s != EMPTY_HASH:
                bitmap[i >> 3] |= 0x80 >> (i & 7)
                body.append(s)
        tail = b"\x00" if self.leaf is None else b"\x01" + self.leaf[0] + self.leaf[1]
        return _U16.pack(d) + bytes(bitmap) + b"".join(body) + tail

    @classmethod
    def from_bytes(cls, data: bytes) -> StateProof:
        """Strict decode; any non-canonical or malformed input raises StateProofError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("StateProof.from_bytes needs bytes")
        data = bytes(data)
        if len(data) > MAX_PROOF_BYTES:
            raise StateProofError(f"proof is {len(data)} bytes, at most {MAX_PROOF_BYTES}")
        if len(data) < 3:
            raise StateProofError("proof too short")
        (d,) = _U16.unpack_from(data, 0)
        if d > PATH_BITS:
            raise StateProofError(f"proof depth {d} > {PATH_BITS}")
        nb = (d + 7) // 8
        off = 2 + nb
        if len(data) < off + 1:
            raise StateProofError("proof truncated in its bitmap")
        bitmap = data[2:off]
        if d % 8 and bitmap[-1] & (0xFF >> (d % 8)):
            raise StateProofError("proof bitmap has padding bits set")
        siblings = []
        for i in range(d):
            if bitmap[i >> 3] & (0x80 >> (i & 7)):
                s = data[off : off + HASH_SIZE]
                if len(s) != HASH_SIZE:
                    raise StateProofError("proof truncated in its siblings")
                if s == EMPTY_HASH:
                    raise StateProofError("an empty sibling must be left out (bitmap bit 0)")
                siblings.append(s)
                off += HASH_SIZE
            else:
                siblings.append(EMPTY_HASH)
        if off >= len(data):
            raise StateProofError("proof truncated before its terminal")
        kind = data[off]
        off += 1
        leaf: tuple[bytes, bytes] | None
        if kind == 0:
            leaf = None
        elif kind == 1:
            if len(data) < off + 2 * HASH_SIZE:
                raise StateProofError("proof truncated in its leaf")
            leaf = (data[off : off + HASH_SIZE], data[off + HASH_SIZE : off + 2 * HASH_SIZE])
            off += 2 * HASH_SIZE
        else:
            raise StateProofError(f"unknown proof terminal kind {kind}")
        if off != len(data):
            raise StateProofError(f"{len(data) - off} trailing bytes after the proof")
        return cls(tuple(siblings), leaf)


def verify_state_proof(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> bool:
    """True iff ``proof`` shows that, in the state with this root, ``key`` maps to
    ``value`` (``value is None``: the key is absent). Pure; never raises."""
    try:
        if not _is_hash(root) or not isinstance(proof, StateProof):
            return False
        if not isinstance(key, bytes) or len(key) > MAX_KEY_LEN:
            return False
        if value is not None and not isinstance(value, bytes):
            return False
        siblings = proof.siblings
        d = len(siblings)
        if d > PATH_BITS:
            return False
        path = state_path(key)
        pi = int.from_bytes(path, "big")
        if proof.leaf is None:
            if value is not None:
                return False
            h = EMPTY_HASH
        else:
            lpath, lvd = proof.leaf
            if not (_is_hash(lpath) and _is_hash(lvd)):
                return False
            if lpath == path:
                if value is None or value_digest(value) != lvd:
                    return False
            else:
                # Absent: another key's leaf sits where our path ends (same first d bits).
                if value is not None or d == PATH_BITS:
                    return False
                if (int.from_bytes(lpath, "big") ^ pi) >> (PATH_BITS - d):
                    return False
            h = leaf_hash(lpath, lvd)
        for i in range(d - 1, -1, -1):
            s = siblings[i]
            if not _is_hash(s):
                return False
            h = node_hash(s, h) if (pi >> (TOP_BIT - i)) & 1 else node_hash(h, s)
        return h == root
    except Exception:
        return False
