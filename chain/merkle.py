"""Binary Merkle trees over 32-byte leaf hashes, with branch proofs.

Leaves arrive already hashed by the caller under a *leaf* tag; inner nodes are
``tagged_hash(node_tag, left || right)``. Distinct leaf and node tags mean a leaf can
never be passed off as an inner node (or the reverse), which is the second-preimage
attack on untagged Merkle trees.

Odd levels: the lone last node is *promoted unchanged* to the next level. Bitcoin
instead pairs it with a copy of itself, which makes ``[a, b, c]`` and ``[a, b, c, c]``
share a root (CVE-2012-2459: a block with a duplicated tx has the valid block's hash,
and a node that caches "this hash is invalid" can be made to reject the real block).
With promotion and tagged leaves, two different leaf lists never share a root short of
a SHA-256 collision.

The root does not commit to the leaf count. ``verify_branch`` takes the count from the
caller: it proves *membership* on its own, but the *position* it proves is only as
trustworthy as the count (e.g. the block's tx count) the verifier uses.

The empty tree's root is 32 zero bytes (no leaf or node hash equals it short of a
SHA-256 preimage).
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.hashing import HASH_SIZE, TAG_TX_LEAF, TAG_TX_NODE, tagged_hash

EMPTY_ROOT = bytes(HASH_SIZE)


def _check_leaves(leaves: Sequence[bytes]) -> None:
    for leaf in leaves:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"merkle leaves are {HASH_SIZE}-byte hashes, got {len(leaf)} bytes")


def _next_level(level: Sequence[bytes], node_tag: str) -> list[bytes]:
    out = [tagged_hash(node_tag, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        out.append(level[-1])  # promote the lone node unchanged (no duplication)
    return out


def merkle_root(leaves: Sequence[bytes], node_tag: str) -> bytes:
    """Root of the tree over ``leaves`` (already-hashed 32-byte values)."""
    _check_leaves(leaves)
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level, node_tag)
    return level[0]


def merkle_branch(leaves: Sequence[bytes], index: int, node_tag: str) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root, bottom first.

    A level where the path node is promoted contributes no sibling, so branches of
    the last leaf in an odd-sized tree are shorter.
    """
    _check_leaves(leaves)
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    branch: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            branch.append(level[sibling])
        level = _next_level(level, node_tag)
        index //= 2
    return branch


def verify_branch(
    leaf: bytes,
    index: int,
    count: int,
    branch: Sequence[bytes],
    node_tag: str,
    root: bytes,
) -> bool:
    """True iff ``branch`` proves ``leaf`` is leaf ``index`` of a ``count``-leaf tree.

    Never raises: any malformed proof (bad index, wrong length, non-32-byte hashes) is
    simply False, because proofs come from untrusted peers.
    """
    if not (isinstance(leaf, bytes) and isinstance(root, bytes)):
        return False
    if not (0 <= index < count) or len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        return False
    h = leaf
    used = 0
    n = count
    while n > 1:
        if not (index == n - 1 and n % 2):
            if used >= len(branch):
                return False
            sibling = branch[used]
            if not isinstance(sibling, bytes) or len(sibling) != HASH_SIZE:
                return False
            used += 1
            if index % 2 == 0:
                h = tagged_hash(node_tag, h, sibling)
            else:
                h = tagged_hash(node_tag, sibling, h)
        index //= 2
        n = (n + 1) // 2
    return used == len(branch) and h == root


def tx_leaf(txid: bytes, signature: bytes) -> bytes:
    """Leaf of a transaction in a block's tx tree: tagged_hash(TAG_TX_LEAF, txid || sig).

    The txid leaves out the signature (so it is fixed before signing), but the block
    must commit to the signature too. Otherwise anyone could relay a block with the
    same header and a garbage signature, and a node that marks the header invalid
    would reject the honest block as well (the segwit "witness commitment" problem).
    """
    if len(txid) != HASH_SIZE or len(signature) != 64:
        raise ValueError("tx_leaf needs a 32-byte txid and a 64-byte signature")
    return tagged_hash(TAG_TX_LEAF, txid, signature)


def tx_root(leaves: Sequence[bytes]) -> bytes:
    """Transactions root of a block, over ``tx_leaf`` values in block order."""
    return merkle_root(leaves, TAG_TX_NODE)
