"""Tests for the state root (chain.state_tree, state_hash, state_proof): the root,
incremental updates, proofs."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain import state_hash
from chain.state_hash import EMPTY_HASH, leaf_hash, state_path, value_digest
from chain.state_proof import MAX_PROOF_BYTES, StateProof, StateProofError, verify_state_proof
from chain.state_tree import StateTree

VECTORS = Path(__file__).parent / "vectors" / "state.json"

# --- an independent implementation, written from docs/PROTOCOL.md "State root" --------


def _tagged(tag: str, data: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + data).digest()


def _ref_root(m: dict[bytes, bytes]) -> bytes:
    leaves = []
    for k, v in m.items():
        path = _tagged("pouw/state/leaf", b"\x00" + bytes([len(k)]) + k)
        vd = _tagged("pouw/state/leaf", b"\x01" + len(v).to_bytes(4, "big") + v)
        leaves.append((int.from_bytes(path, "big"), path + vd))

    def sub(items: list[tuple[int, bytes]], depth: int) -> bytes:
        if not items:
            return bytes(32)
        if len(items) == 1:
            return _tagged("pouw/state/leaf", b"\x02" + items[0][1])
        left = [it for it in items if not (it[0] >> (255 - depth)) & 1]
        right = [it for it in items if (it[0] >> (255 - depth)) & 1]
        return _tagged("pouw/state/node", sub(left, depth + 1) + sub(right, depth + 1))

    return sub(leaves, 0)


# --- strategies ------------------------------------------------------------------------

# Few distinct keys, so updates and deletes hit existing keys often.
keys_st = st.binary(max_size=2).map(lambda b: b"k" + b[:1]) | st.sampled_from(
    [b"", b"a", b"b", b"acct/1", b"acct/2", b"\xff" * 64]
)
values_st = st.binary(max_size=40)
change_st = st.dictionaries(keys_st, st.none() | values_st, max_size=12)


def _applied(m: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    out = dict(m)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# --- roots -----------------------------------------------------------------------------


def test_empty_state_root_is_zero() -> None:
    assert StateTree().root == EMPTY_HASH == bytes(32)
    assert StateTree.build([]).root == EMPTY_HASH
    assert len(StateTree()) == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(change_st, max_size=12))
def test_incremental_equals_fresh_build(batches: list[dict[bytes, bytes | None]]) -> None:
    tree = StateTree()
    m: dict[bytes, bytes] = {}
    for changes in batches:
        expected_after = _applied(m, changes)
        assert tree.root_after(changes) == StateTree.build(expected_after.items()).root
        root = tree.apply(changes)
        m = expected_after
        assert root == tree.root == StateTree.build(m.items()).root
        assert len(tree) == len(m)
    assert tree.root == _ref_root(m)
    for k in list(m)[:5]:
        assert k in tree and tree.value_digest_of(k) == value_digest(m[k])


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(keys_st, values_st, max_size=20), st.randoms(use_true_random=False))
def test_order_independence(m: dict[bytes, bytes], rng: random.Random) -> None:
    items = list(m.items())
    one_batch = StateTree()
    one_batch.apply(dict(items))
    rng.shuffle(items)
    one_by_one = StateTree()
    for k, v in items:
        one_by_one.apply({k: v})
    assert one_batch.root == one_by_one.root == StateTree.build(items).root == _ref_root(m)
    # Inserting junk and deleting it again, in any order, returns the same root.
    junk = {b"junk%d" % i: b"x" for i in range(rng.randrange(1, 6))}
    one_by_one.apply(junk)
    one_by_one.apply(dict.fromkeys(junk))
    assert one_by_one.root == one_batch.root


def test_root_after_snapshot_restore_copy() -> None:
    tree = StateTree.build((b"k%d" % i, b"v%d" % i) for i in range(50))
    root0 = tree.root
    changes: dict[bytes, bytes | None] = {b"k1": None, b"k2": b"new", b"z": b"added"}
    after = tree.root_after(changes)
    assert tree.root == root0 and len(tree) == 50
    snap = tree.snapshot()
    clone = tree.copy()
    assert tree.apply(changes) == after and len(tree) == 50
    assert clone.root == root0 and snap.root == root0
    tree.restore(snap)
    assert tree.root == root0 and len(tree) == 50
    assert tree.apply({}) == root0
    assert tree.apply({b"k1": b"v1"}) == root0  # same value: same root
    assert tree.apply({b"absent": None}) == root0  # deleting an absent key: no-op


def test_bad_input_leaves_tree_unchanged() -> None:
    tree = StateTree.build([(b"a", b"1")])
    root = tree.root
    with pytest.raises(ValueError):
        tree.apply({b"b": b"2", b"x" * 65: b"too long"})
    with pytest.raises(TypeError):
        tree.apply({b"b": "str"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        tree.apply({"str": b"1"})  # type: ignore[dict-item]
    assert tree.root == root and len(tree) == 1
    with pytest.raises(ValueError):
        StateTree.build([(b"a", b"1"), (b"a", b"2")])
    tree.apply({b"x" * 64: b"64 bytes is fine"})


def _shared_prefix_keys(bits: int) -> tuple[bytes, bytes]:
    """Two keys whose paths share their first ``bits`` bits (found by a birthday search)."""
    seen: dict[int, bytes] = {}
    i = 0
    while True:
        key = b"grind%d" % i
        top = int.from_bytes(state_path(key), "big") >> (256 - bits)
        if top in seen:
            return seen[top], key
        seen[top] = key
        i += 1


def test_deep_shared_prefix_and_collapse() -> None:
    a, b = _shared_prefix_keys(16)
    others = {b"o%d" % i: b"v" for i in range(30)}
    tree = StateTree.build(others.items())
    tree.apply({a: b"A", b: b"B"})
    m = {**others, a: b"A", b: b"B"}
    assert tree.root == StateTree.build(m.items()).root == _ref_root(m)
    assert tree.prove(a).depth >= 17
    for k, v in ((a, b"A"), (b, b"B")):
        assert verify_state_proof(tree.root, k, v, tree.prove(k))
    tree.apply({a: None})  # b's leaf moves up past the 16 one-sided nodes
    del m[a]
    assert tree.root == StateTree.build(m.items()).root == _ref_root(m)
    assert tree.prove(b).depth < 16
    assert verify_state_proof(tree.root, a, None, tree.prove(a))


# --- proofs ----------------------------------------------------------------------------


def _flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(keys_st, values_st, max_size=25), keys_st)
def test_proofs(m: dict[bytes, bytes], probe: bytes) -> None:
    tree = StateTree.build(m.items())
    root = tree.root
    other_root = StateTree.build({**m, b"other": b"x"}.items()).root
    for key in [*m, probe, b"surely-absent"]:
        value = m.get(key)
        proof = tree.prove(key)
        assert (proof.leaf is not None and proof.leaf[0] == state_path(key)) == (key in m)
        assert verify_state_proof(root, key, value, proof)
        encoded = proof.to_bytes()
        assert len(encoded) <= MAX_PROOF_BYTES
        assert StateProof.from_bytes(encoded) == proof
        assert verify_state_proof(root, key, value, StateProof.from_bytes(encoded))
        # another root
        assert not verify_state_proof(other_root, key, value, proof)
        # changed value / claimed absent / claimed present
        if value is not None:
            assert not verify_state_proof(root, key, value + b"\x00", proof)
            assert not verify_state_proof(root, key, None, proof)
        else:
            assert not verify_state_proof(root, key, b"", proof)
        # wrong key: fails, unless the proof is also *the* proof of that key (an
        # absence proof ending where both paths end)
        wrong = (key + b"?")[-64:]
        if value is not None:
            assert not verify_state_proof(root, wrong, value, proof)
        assert verify_state_proof(root, wrong, m.get(wrong), proof) == (proof == tree.prove(wrong))
        # doctored sibling
        for i, s in enumerate(proof.siblings):
            doctored = (*proof.siblings[:i], _flip(s), *proof.siblings[i + 1 :])
            assert not verify_state_proof(root, key, value, StateProof(doctored, proof.leaf))
        # doctored leaf
        if proof.leaf is not None:
            lp, lvd = proof.leaf
            for leaf in ((_flip(lp, 31), lvd), (lp, _flip(lvd))):
                assert not verify_state_proof(root, key, value, StateProof(proof.siblings, leaf))
        # truncated: as bytes, and as a shorter sibling list
        for cut in range(len(encoded)):
            with pytest.raises(StateProofError):
                StateProof.from_bytes(encoded[:cut])
        with pytest.raises(StateProofError):
            StateProof.from_bytes(encoded + b"\x00")
        if proof.siblings:
            try:
                short = StateProof(proof.siblings[1:], proof.leaf)
            except StateProofError:
                pass
            else:
                assert not verify_state_proof(root, key, value, short)


def test_proof_of_empty_state_and_single_key() -> None:
    assert verify_state_proof(EMPTY_HASH, b"k", None, StateTree().prove(b"k"))
    assert StateTree().prove(b"k").to_bytes() == b"\x00\x00\x00"
    tree = StateTree.build([(b"only", b"1")])
    assert tree.root == leaf_hash(state_path(b"only"), value_digest(b"1"))
    assert verify_state_proof(tree.root, b"only", b"1", tree.prove(b"only"))
    assert verify_state_proof(tree.root, b"nope", None, tree.prove(b"nope"))
    # The path of every key ends at the lone leaf: the same proof shows "nope" absent.
    assert tree.prove(b"nope") == tree.prove(b"only")
    assert not verify_state_proof(tree.root, b"nope", b"1", tree.prove(b"only"))


def test_verify_never_raises() -> None:
    proof = StateTree.build([(b"a", b"1")]).prove(b"a")
    root = StateTree.build([(b"a", b"1")]).root
    bad_args = [
        (b"short", b"a", b"1", proof),
        (root, "a", b"1", proof),
        (root, b"a", "1", proof),
        (root, b"a" * 65, b"1", proof),
        (root, b"a", b"1", b"not a proof"),
        (None, None, None, None),
    ]
    for args in bad_args:
        assert verify_state_proof(*args) is False  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_from_bytes_garbage_raises_only_typed_error(data: bytes) -> None:
    try:
        proof = StateProof.from_bytes(data)
    except StateProofError:
        return
    assert proof.to_bytes() == data  # whatever decodes is canonical


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.binary(max_size=64), st.integers(0, 3), st.binary(max_size=200))
def test_from_bytes_structured_garbage(depth: int, bitmap: bytes, kind: int, rest: bytes) -> None:
    data = depth.to_bytes(2, "big") + bitmap + bytes([kind]) + rest
    try:
        proof = StateProof.from_bytes(data)
    except StateProofError:
        return
    assert proof.to_bytes() == data


def test_from_bytes_caps_and_types() -> None:
    with pytest.raises(StateProofError):
        StateProof.from_bytes(b"\x00" * (MAX_PROOF_BYTES + 1))
    with pytest.raises(StateProofError):
        StateProof.from_bytes((257).to_bytes(2, "big") + b"\x00" * 40)
    with pytest.raises(StateProofError):  # an empty sibling sent explicitly
        StateProof.from_bytes(b"\x00\x01\x80" + bytes(32) + b"\x00")
    with pytest.raises(StateProofError):  # padding bit set
        StateProof.from_bytes(b"\x00\x01\x40\x00")
    with pytest.raises(StateProofError):  # empty end next to an empty sibling
        StateProof.from_bytes(b"\x00\x01\x00\x00")
    with pytest.raises(TypeError):
        StateProof.from_bytes("text")  # type: ignore[arg-type]
    max_proof = StateProof(tuple(b"\x01" * 32 for _ in range(256)), (b"\x02" * 32, b"\x03" * 32))
    assert len(max_proof.to_bytes()) == MAX_PROOF_BYTES
    assert StateProof.from_bytes(max_proof.to_bytes()) == max_proof


# --- cost ------------------------------------------------------------------------------


def test_apply_cost_is_changes_times_log_n() -> None:
    n, k = 100_000, 1_000
    rng = random.Random(7)
    m = {b"acct/%d" % i: rng.randbytes(16) for i in range(n)}
    tree = StateTree.build(m.items())
    keys = list(m)
    changes: dict[bytes, bytes | None] = {}
    for i in range(k):
        r = i % 3
        if r == 0:
            changes[rng.choice(keys)] = rng.randbytes(16)  # update
        elif r == 1:
            changes[rng.choice(keys)] = None  # delete
        else:
            changes[b"new/%d" % i] = rng.randbytes(16)  # insert
    before = state_hash.hash_calls()
    after_root = tree.root_after(changes)
    root_after_hashes = state_hash.hash_calls() - before
    before = state_hash.hash_calls()
    tree.apply(changes)
    apply_hashes = state_hash.hash_calls() - before
    # 2 hashes per change for its path and value digest, then one leaf and at most
    # about log2(N) + a few inner nodes per change: far below the ~4.4 N of a rebuild.
    bound = len(changes) * (3 + math.log2(n) + 4)
    assert apply_hashes <= bound, (apply_hashes, bound)
    assert root_after_hashes == apply_hashes
    assert apply_hashes < n  # never O(N)
    assert tree.root == after_root == StateTree.build(_applied(m, changes).items()).root


# --- committed vectors -----------------------------------------------------------------


def test_committed_vectors() -> None:
    data = json.loads(VECTORS.read_text())
    p = data["primitives"]
    key, value = bytes.fromhex(p["key"]), bytes.fromhex(p["value"])
    assert state_path(key).hex() == p["path"]
    assert value_digest(value).hex() == p["value_digest"]
    assert leaf_hash(state_path(key), value_digest(value)).hex() == p["leaf"]
    assert len(data["maps"]) >= 5
    for case in data["maps"]:
        m = {bytes.fromhex(k): bytes.fromhex(v) for k, v in case["items"]}
        assert StateTree.build(m.items()).root.hex() == case["root"], case["note"]
        assert _ref_root(m).hex() == case["root"], case["note"]
    kinds = set()
    for case in data["proofs"]:
        root, key = bytes.fromhex(case["root"]), bytes.fromhex(case["key"])
        value = None if case["value"] is None else bytes.fromhex(case["value"])
        proof = StateProof.from_bytes(bytes.fromhex(case["proof"]))
        assert verify_state_proof(root, key, value, proof)
        assert proof.to_bytes().hex() == case["proof"]
        kinds.add(value is None)
    assert kinds == {True, False}
