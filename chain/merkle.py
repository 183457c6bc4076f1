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
from consensus.merkle import EMPTY_ROOT, merkle_branch, merkle_root, verify_branch

__all__ = ["EMPTY_ROOT", "merkle_branch", "merkle_root", "tx_leaf", "tx_root", "verify_branch"]


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
