"""Binary Merkle trees with domain-separated leaves and nodes.

One construction serves every tree in the protocol (matrix rows and columns,
transactions, state), each with its own pair of tags. A level with an odd number of
nodes promotes its last node unchanged to the next level; Bitcoin's "duplicate the
last node" rule is avoided because it lets two different leaf lists share a root
(CVE-2012-2459). The root of an empty list is 32 zero bytes. A branch is the list of
sibling hashes from the leaf upwards, skipping levels where the node was promoted;
its verification needs the leaf count, which every user of a branch knows from
context (the matrix shape, the block's transaction count).
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.hashing import HASH_SIZE, tagged_hasher

EMPTY_ROOT = bytes(HASH_SIZE)
# A branch longer than this cannot belong to a tree of at most 2^32 leaves.
MAX_BRANCH_DEPTH = 32


def _parent(node_tag: str, left: bytes, right: bytes) -> bytes:
    h = tagged_hasher(node_tag)
    h.update(left)
    h.update(right)
    return h.digest()


def _next_level(level: Sequence[bytes], node_tag: str) -> list[bytes]:
    out = [_parent(node_tag, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        out.append(level[-1])
    return out


def merkle_root(leaves: Sequence[bytes], node_tag: str) -> bytes:
    """Root over already-hashed leaves (each must be a 32-byte hash)."""
    if any(len(leaf) != HASH_SIZE for leaf in leaves):
        raise ValueError("Merkle leaves must be 32-byte hashes")
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level, node_tag)
    return level[0]


def merkle_levels(leaves: Sequence[bytes], node_tag: str) -> list[list[bytes]]:
    """Every level of the tree, leaves first; lets a prover cut many branches cheaply."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        levels.append(_next_level(levels[-1], node_tag))
    return levels


def branch_from_levels(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The sibling path of leaf ``index`` (see module docstring for promoted nodes)."""
    branch: list[bytes] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            branch.append(level[sibling])
        index //= 2
    return branch


def merkle_branch(leaves: Sequence[bytes], index: int, node_tag: str) -> list[bytes]:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} out of range for {len(leaves)} leaves")
    return branch_from_levels(merkle_levels(leaves, node_tag), index)


def branch_length(index: int, count: int) -> int:
    """How many siblings the branch of leaf ``index`` in a tree of ``count`` leaves has."""
    depth = 0
    while count > 1:
        if index ^ 1 < count:
            depth += 1
        index //= 2
        count = (count + 1) // 2
    return depth


def root_from_branch(
    leaf: bytes, index: int, count: int, branch: Sequence[bytes], node_tag: str
) -> bytes | None:
    """The root a branch leads to, or None if the branch has the wrong shape.

    Never raises: branches come from peers, so anything malformed is simply None.
    """
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        return None
    if not 0 <= index < count or len(branch) != branch_length(index, count):
        return None
    node = leaf
    it = iter(branch)
    while count > 1:
        if index ^ 1 < count:
            sibling = next(it)
            if not isinstance(sibling, bytes) or len(sibling) != HASH_SIZE:
                return None
            node = (
                _parent(node_tag, node, sibling)
                if index % 2 == 0
                else _parent(node_tag, sibling, node)
            )
        index //= 2
        count = (count + 1) // 2
    return node


def verify_branch(
    leaf: bytes, index: int, count: int, branch: Sequence[bytes], node_tag: str, root: bytes
) -> bool:
    """True iff ``branch`` proves ``leaf`` is leaf ``index`` of a ``count``-leaf tree."""
    found = root_from_branch(leaf, index, count, branch, node_tag)
    return isinstance(root, bytes) and found == root
