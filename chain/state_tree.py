"""The state tree: an authenticated key-value map whose root every header commits to.

The state is a set of ``(key, value)`` byte pairs (keys 0..64 bytes, values any length).
Its root is defined byte-exactly in docs/PROTOCOL.md, section "State root"; in short:

    path(key)        = tagged_hash(TAG_STATE_LEAF, 0x00 || u8(len(key)) || key)
    value_digest(v)  = tagged_hash(TAG_STATE_LEAF, 0x01 || u32be(len(v)) || v)
    leaf(path, vd)   = tagged_hash(TAG_STATE_LEAF, 0x02 || path || vd)
    node(l, r)       = tagged_hash(TAG_STATE_NODE, l || r)
    EMPTY            = 32 zero bytes

and the tree is a *compressed sparse Merkle tree* (SMT) over the 256-bit paths: the hash
of the subtree of all paths starting with a bit prefix P is EMPTY if no key's path
starts with P, ``leaf(path, vd)`` if exactly one does (the "shortcut" leaf sits at the
highest level where it is alone), and ``node(hash(P||0), hash(P||1))`` otherwise. The
root is the hash of the empty prefix; the empty state's root is EMPTY.

Why this design and not the list Merkle tree of consensus/merkle.py
-------------------------------------------------------------------
The list tree's positions shift when a key is inserted (so one insert rehashes O(N)
nodes) and its root does not commit to the leaf count (so absence would need
sorted-neighbour proofs plus a separate count commitment). The fixed 2^16-bucket
layout reuses it, but a changed bucket costs O(N / 65536) leaf hashes, i.e. O(N)
asymptotically, and a bucket also needs a count commitment for absence proofs. The
SMT's shape depends only on the *set* of paths, so the root is order independent by
construction, an update costs O(log N) hashes whatever N is, and an absence proof is
just "the path ends in EMPTY" or "the path ends in another key's leaf". Only
consensus/hashing.py is shared.

The hash functions and their domain separation: chain/state_hash.py; proofs of one
key (present or absent) and their check: chain/state_proof.py.

Implementation
--------------
Nodes are immutable (persistent tree with path copying). ``apply`` builds new nodes
only along the changed paths (each shared ancestor once per batch) and keeps every
untouched subtree, so a batch of k changes costs at most about k·(3 + depth) hashes,
depth ≈ log2 N + O(1) for random paths. Because old versions stay intact:

* ``root_after(changes)`` computes the root of the changed state without touching the
  tree (the new nodes are simply dropped);
* ``snapshot()`` is O(1) and ``restore(snapshot)`` is O(1): a validator can
  ``snap = tree.snapshot(); root = tree.apply(changes)`` and ``tree.restore(snap)``
  if the block turns out invalid;
* ``copy()`` is O(1), the copies share nodes and never see each other's changes.

Leaves keep the key's path and value digest, not the key or value (those live in
LevelDB, ``ChainDB.iter_state``), so memory is O(N): about 400 bytes per key in
CPython. Nodes are plain tuples, which CPython's GC untracks after their first
collection, so a large tree costs nothing in later collections; the cyclic GC is
paused while a build or apply allocates them (no cycles are possible).

Typical node use::

    tree = StateTree.build(db.iter_state())          # at start: O(N) hashes
    new_root = tree.root_after(changes)             # candidate block
    if new_root == header.state_root and block_ok:
        with db.atomic() as batch:
            for k, v in changes.items():
                batch.put_state(k, v) if v is not None else batch.delete_state(k)
        tree.apply(changes)

``chain.state_hash.hash_calls()`` counts every SHA-256 the tree computes (tests use
it to check the O(changes · log N) cost; it is not a clock).
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chain.state_hash import (
    EMPTY_HASH,
    PATH_BITS,
    TOP_BIT,
    leaf_hash,
    node_hash,
    state_path,
    value_digest,
)
from chain.state_proof import StateProof
from consensus.hashing import HASH_SIZE

__all__ = ["StateSnapshot", "StateTree"]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while allocating many nodes (they never form cycles).

    Building 1M keys allocates ~2M tracked objects; with the GC on, its repeated
    young-generation passes more than double the build time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- nodes ---------------------------------------------------------------------------


# A subtree is None (empty), a leaf ``(hash, path || value_digest)`` or an inner node
# ``(hash, left, right)`` (its depth is implicit: the number of edges from the root).
# Plain tuples of bytes and tuples: CPython's GC untracks them after one young-generation
# pass, so even a 1M-key tree adds nothing to later full collections.
_Tree = tuple[Any, ...] | None


def _leaf(path: bytes, vd: bytes) -> tuple[bytes, bytes]:
    return (leaf_hash(path, vd), path + vd)


def _node(left: _Tree, right: _Tree) -> tuple[bytes, _Tree, _Tree]:
    return (
        node_hash(
            EMPTY_HASH if left is None else left[0],
            EMPTY_HASH if right is None else right[0],
        ),
        left,
        right,
    )


def _build(
    ints: list[int], paths: list[bytes], vds: list[bytes], lo: int, hi: int, depth: int
) -> _Tree:
    """Canonical subtree at ``depth`` over sorted, distinct ``paths[lo:hi]``."""
    n = hi - lo
    if n == 0:
        return None
    if n == 1:
        return _leaf(paths[lo], vds[lo])
    a = ints[lo]
    split = PATH_BITS - (a ^ ints[hi - 1]).bit_length()  # first bit where they differ
    shift = TOP_BIT - split
    mid = bisect_left(ints, ((a >> shift) | 1) << shift, lo, hi)
    node: _Tree = _node(
        _build(ints, paths, vds, lo, mid, split + 1), _build(ints, paths, vds, mid, hi, split + 1)
    )
    # One-sided inner nodes from depth `split - 1` up to `depth`, all paths on one side.
    for d in range(split - 1, depth - 1, -1):
        node = _node(None, node) if (a >> (TOP_BIT - d)) & 1 else _node(node, None)
    return node


class _Batch:
    """Changes of one apply, sorted by path: vds[i] is None for a delete."""

    __slots__ = ("ints", "paths", "vds", "delta")

    def __init__(self, changes: Mapping[bytes, bytes | None]) -> None:
        rows = []
        for key, value in changes.items():
            if not isinstance(key, bytes):
                raise TypeError(f"state key must be bytes, not {type(key).__name__}")
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"state value must be bytes or None, not {type(value).__name__}")
            path = state_path(key)
            rows.append(
                (int.from_bytes(path, "big"), path, None if value is None else value_digest(value))
            )
        rows.sort(key=lambda r: r[0])
        self.ints = [r[0] for r in rows]
        self.paths = [r[1] for r in rows]
        self.vds: list[bytes | None] = [r[2] for r in rows]
        self.delta = 0  # change in the number of keys

    def rebuild(self, old: _Tree, lo: int, hi: int, depth: int) -> _Tree:
        """The subtree replacing ``old`` (empty or one leaf) after changes[lo:hi]."""
        ints: list[int] = []
        paths: list[bytes] = []
        vds: list[bytes] = []
        if old is not None:
            old_path, old_vd = old[1][:HASH_SIZE], old[1][HASH_SIZE:]
        old_int = -1 if old is None else int.from_bytes(old_path, "big")
        old_pending = old is not None
        for i in range(lo, hi):
            pi = self.ints[i]
            if old_pending and old_int <= pi:
                old_pending = False
                assert old is not None
                if old_int == pi:  # changed or deleted; never re-counted below
                    self.delta -= 1
                else:
                    ints.append(old_int)
                    paths.append(old_path)
                    vds.append(old_vd)
            vd = self.vds[i]
            if vd is not None:
                self.delta += 1
                ints.append(pi)
                paths.append(self.paths[i])
                vds.append(vd)
        if old_pending:
            assert old is not None
            ints.append(old_int)
            paths.append(old_path)
            vds.append(old_vd)
        if old is not None and len(ints) == 1 and vds[0] == old_vd and paths[0] == old_path:
            return old  # rewritten with the same value: keep the node, no hashing
        return _build(ints, paths, vds, 0, len(ints), depth)

    def update(self, node: _Tree, lo: int, hi: int, depth: int) -> _Tree:
        if lo == hi:
            return node
        if node is None or len(node) != 3:
            return self.rebuild(node, lo, hi, depth)
        shift = TOP_BIT - depth
        mid = bisect_left(self.ints, ((self.ints[lo] >> shift) | 1) << shift, lo, hi)
        old_left, old_right = node[1], node[2]
        left = self.update(old_left, lo, mid, depth + 1)
        right = self.update(old_right, mid, hi, depth + 1)
        if left is old_left and right is old_right:
            return node
        if left is None and (right is None or len(right) == 2):
            return right  # empty, or a lone leaf moving up
        if right is None and left is not None and len(left) == 2:
            return left
        return _node(left, right)


# --- the tree ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """An O(1), immutable handle on one version of a StateTree (see ``restore``)."""

    _node: _Tree
    _count: int

    @property
    def root(self) -> bytes:
        return EMPTY_HASH if self._node is None else self._node[0]


class StateTree:
    """The state's compressed sparse Merkle tree (see the module docstring)."""

    __slots__ = ("_node", "_count")

    def __init__(self) -> None:
        """An empty state (root EMPTY_HASH)."""
        self._node: _Tree = None
        self._count = 0

    @classmethod
    def build(cls, items: Iterable[tuple[bytes, bytes]]) -> StateTree:
        """Tree of the given (key, value) pairs: O(N) hashes plus one sort of the paths.

        A key given twice raises ValueError.
        """
        with _gc_paused():
            rows = []
            for key, value in items:
                if not isinstance(key, bytes) or not isinstance(value, bytes):
                    raise TypeError("state items must be (bytes, bytes) pairs")
                path = state_path(key)
                rows.append((int.from_bytes(path, "big"), path, value_digest(value)))
            rows.sort(key=lambda r: r[0])
            ints = [r[0] for r in rows]
            for i in range(1, len(ints)):
                if ints[i] == ints[i - 1]:
                    raise ValueError("duplicate key in StateTree.build")
            paths = [r[1] for r in rows]
            vds = [r[2] for r in rows]
            del rows
            tree = cls()
            tree._node = _build(ints, paths, vds, 0, len(ints), 0)
            tree._count = len(ints)
        return tree

    @property
    def root(self) -> bytes:
        return EMPTY_HASH if self._node is None else self._node[0]

    def __len__(self) -> int:
        """Number of keys in the state."""
        return self._count

    def _changed(self, changes: Mapping[bytes, bytes | None]) -> tuple[_Tree, int]:
        if not changes:
            return self._node, self._count
        with _gc_paused():
            batch = _Batch(changes)
            node = batch.update(self._node, 0, len(batch.ints), 0)
        return node, self._count + batch.delta

    def apply(self, changes: Mapping[bytes, bytes | None]) -> bytes:
        """Set ``key -> value`` for each change (None deletes; deleting an absent key is
        a no-op) and return the new root. O(k · log N) hashes for k changes. On an
        exception (bad key or value type, key over 64 bytes) the tree is unchanged."""
        self._node, self._count = self._changed(changes)
        return self.root

    def root_after(self, changes: Mapping[bytes, bytes | None]) -> bytes:
        """The root ``apply(changes)`` would return, leaving this tree unchanged."""
        node, _ = self._changed(changes)
        return EMPTY_HASH if node is None else node[0]

    def snapshot(self) -> StateSnapshot:
        """O(1) handle on the current version; ``restore`` brings it back in O(1)."""
        return StateSnapshot(self._node, self._count)

    def restore(self, snapshot: StateSnapshot) -> None:
        if not isinstance(snapshot, StateSnapshot):
            raise TypeError("restore needs a StateSnapshot")
        self._node = snapshot._node
        self._count = snapshot._count

    def copy(self) -> StateTree:
        """An independent tree with the same state, in O(1) (nodes are shared, immutable)."""
        tree = StateTree()
        tree._node = self._node
        tree._count = self._count
        return tree

    def prove(self, key: bytes) -> StateProof:
        """Inclusion proof if ``key`` is present, else a non-inclusion proof; O(log N)."""
        if not isinstance(key, bytes):
            raise TypeError("state key must be bytes")
        pi = int.from_bytes(state_path(key), "big")
        siblings = []
        node = self._node
        depth = 0
        while node is not None and len(node) == 3:
            if (pi >> (TOP_BIT - depth)) & 1:
                sib, node = node[1], node[2]
            else:
                sib, node = node[2], node[1]
            siblings.append(EMPTY_HASH if sib is None else sib[0])
            depth += 1
        leaf = None if node is None else (node[1][:HASH_SIZE], node[1][HASH_SIZE:])
        return StateProof(tuple(siblings), leaf)

    def value_digest_of(self, key: bytes) -> bytes | None:
        """value_digest of the key's value, or None if absent (the tree keeps no values)."""
        proof = self.prove(key)
        if proof.leaf is None or proof.leaf[0] != state_path(key):
            return None
        return proof.leaf[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.value_digest_of(key) is not None
