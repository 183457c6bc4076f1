"""chain/tx.py (transactions) and chain/merkle.py (tx root, branches)."""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chain.address import address_from_pubkey, encode_address
from chain.encoding import DecodeError, Reader, Writer
from chain.keys import PrivateKey, devnet_key
from chain.merkle import (
    EMPTY_ROOT,
    merkle_branch,
    merkle_root,
    tx_leaf,
    tx_root,
    verify_branch,
)
from chain.tx import (
    ACTIVE_KINDS,
    MAX_CHALLENGE_PAYLOAD,
    MAX_PLAIN_TX_SIZE,
    MAX_TX_PAYLOAD,
    MAX_TX_SIZE,
    TX_FIXED_SIZE,
    TX_OK,
    Transaction,
    TxCheck,
    TxKind,
    TxReject,
    check_transaction,
    sign,
    transactions_root,
)
from chain.tx_json import TransactionJSON
from consensus.hashing import (
    TAG_MERKLE_LEAF,
    TAG_TX,
    TAG_TX_LEAF,
    TAG_TX_NODE,
    TAG_TX_SIG,
    tagged_hash,
)
from consensus.ints import U32_MAX, U64_MAX

VECTORS = Path(__file__).parent / "vectors" / "tx.json"
CHAIN = 7
ALICE = devnet_key(0)
BOB_KEY = devnet_key(1)
BOB = address_from_pubkey(BOB_KEY.public_key)


def make_tx(key: PrivateKey = ALICE, signed: bool = True, **overrides: Any) -> Transaction:
    fields: dict[str, Any] = dict(
        chain_id=CHAIN,
        kind=TxKind.TRANSFER.value,
        sender_pubkey=key.public_key,
        nonce=3,
        fee=100,
        recipient=BOB,
        amount=12345,
        payload=b"memo",
    )
    fields.update(overrides)
    tx = Transaction(**fields)
    return sign(tx, key) if signed else tx


# --- test vectors -------------------------------------------------------------------


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())["transactions"]
    return data


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: v["name"])
def test_vectors(vec: dict[str, Any]) -> None:
    key = PrivateKey.from_seed(bytes.fromhex(vec["seed"]))
    f = vec["fields"]
    unsigned = Transaction(
        chain_id=f["chain_id"],
        kind=f["kind"],
        sender_pubkey=bytes.fromhex(f["sender_pubkey"]),
        nonce=int(f["nonce"]),
        fee=int(f["fee"]),
        recipient=bytes.fromhex(f["recipient"]),
        amount=int(f["amount"]),
        payload=bytes.fromhex(f["payload"]),
    )
    assert key.public_key == unsigned.sender_pubkey
    # The encoding, built independently with struct from the documented layout.
    payload = unsigned.payload
    expected_unsigned = (
        struct.pack(">IB", unsigned.chain_id, unsigned.kind)
        + unsigned.sender_pubkey
        + struct.pack(">QQ", unsigned.nonce, unsigned.fee)
        + unsigned.recipient
        + struct.pack(">QI", unsigned.amount, len(payload))
        + payload
    )
    assert expected_unsigned.hex() == vec["unsigned_hex"] == unsigned.unsigned_bytes.hex()
    assert tagged_hash(TAG_TX_SIG, expected_unsigned).hex() == vec["sighash"]
    assert tagged_hash(TAG_TX, expected_unsigned).hex() == vec["txid"]

    tx = sign(unsigned, key)
    assert tx.signature.hex() == vec["signature"]  # Ed25519 is deterministic
    assert tx.to_bytes().hex() == vec["encoding_hex"] == expected_unsigned.hex() + vec["signature"]
    assert tx.txid.hex() == vec["txid"] == unsigned.txid.hex()
    assert tx.leaf.hex() == vec["leaf"]
    assert encode_address("dpw", tx.recipient) == vec["recipient_address"]
    assert encode_address("dpw", tx.sender) == vec["sender_address"]
    assert Transaction.from_bytes(bytes.fromhex(vec["encoding_hex"])) == tx
    assert check_transaction(tx, f["chain_id"]) == TX_OK


def test_vector_file_is_up_to_date() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_tx", VECTORS.with_name("gen_tx.py"))
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render() == VECTORS.read_text()
    doc = json.loads(VECTORS.read_text())
    txs = [Transaction.from_bytes(bytes.fromhex(v["encoding_hex"])) for v in doc["transactions"]]
    assert transactions_root(txs).hex() == doc["tx_root_of_all"]


# --- encoding round trips -----------------------------------------------------------

TXS = st.builds(
    Transaction,
    chain_id=st.integers(0, U32_MAX),
    kind=st.integers(0, 255),
    sender_pubkey=st.binary(min_size=32, max_size=32),
    nonce=st.integers(0, U64_MAX),
    fee=st.integers(0, U64_MAX),
    recipient=st.binary(min_size=20, max_size=20),
    amount=st.integers(0, U64_MAX),
    payload=st.binary(max_size=MAX_TX_PAYLOAD),
    signature=st.binary(min_size=64, max_size=64),
)


@given(TXS)
def test_round_trip(tx: Transaction) -> None:
    data = tx.to_bytes()
    assert len(data) == TX_FIXED_SIZE + len(tx.payload) <= MAX_TX_SIZE
    back = Transaction.from_bytes(data)
    assert back == tx and back.to_bytes() == data and back.txid == tx.txid
    assert Transaction.from_bytes(memoryview(data)) == tx


@given(st.lists(TXS, max_size=4))
def test_embedded_read_write(txs: list[Transaction]) -> None:
    w = Writer().u32(len(txs))
    for tx in txs:
        tx.write_to(w)
    r = Reader(w.getvalue())
    assert [Transaction.read_from(r) for _ in range(r.u32())] == txs
    r.finish()


@given(TXS)
def test_json_round_trip(tx: Transaction) -> None:
    j = TransactionJSON.from_transaction(tx, "tpw")
    text = j.model_dump_json()
    back = TransactionJSON.model_validate_json(text)
    assert back == j
    assert back.to_transaction("tpw") == tx


def test_sizes() -> None:
    assert TX_FIXED_SIZE == 149
    assert MAX_PLAIN_TX_SIZE == 149 + 1024
    assert MAX_TX_SIZE == 149 + MAX_CHALLENGE_PAYLOAD
    big = make_tx(payload=bytes(MAX_TX_PAYLOAD))
    assert len(big.to_bytes()) == MAX_PLAIN_TX_SIZE


# --- every DecodeError path ---------------------------------------------------------

FIELD_ENDS = [
    ("chain_id", 4),
    ("kind", 5),
    ("sender_pubkey", 37),
    ("nonce", 45),
    ("fee", 53),
    ("recipient", 73),
    ("amount", 81),
    ("payload length", 85),
    ("payload", 89),  # 4-byte payload "memo"
    ("signature", 153),
]


@pytest.mark.parametrize("field, end", FIELD_ENDS)
def test_truncated_in_each_field(field: str, end: int) -> None:
    data = make_tx().to_bytes()
    assert len(data) == 153
    with pytest.raises(DecodeError, match=f"truncated: {field} needs"):
        Transaction.from_bytes(data[: end - 1])


def test_every_truncation_fails() -> None:
    data = make_tx().to_bytes()
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            Transaction.from_bytes(data[:cut])


def test_trailing_bytes() -> None:
    with pytest.raises(DecodeError, match="trailing data: 1 bytes"):
        Transaction.from_bytes(make_tx().to_bytes() + b"\x00")


def test_payload_prefix_over_cap_fails_before_reading_it() -> None:
    head = make_tx(payload=b"").unsigned_bytes[:-4]
    # 1025 announced with no body: the cap is hit first, not a truncation.
    data = head + struct.pack(">I", MAX_TX_PAYLOAD + 1)
    with pytest.raises(DecodeError, match="payload length 1025 exceeds the cap of 1024"):
        Transaction.from_bytes(data)
    with pytest.raises(DecodeError, match="exceeds the cap"):
        Transaction.from_bytes(head + b"\xff\xff\xff\xff")


def test_oversize_input_rejected_before_parsing() -> None:
    # The cap depends on the kind byte (offset 4), read before anything else.
    with pytest.raises(DecodeError, match=f"the maximum is {MAX_PLAIN_TX_SIZE}"):
        Transaction.from_bytes(bytes(MAX_PLAIN_TX_SIZE + 1))
    challenge = bytearray(MAX_TX_SIZE + 1)
    challenge[4] = TxKind.JOB_CHALLENGE
    with pytest.raises(DecodeError, match=f"the maximum is {MAX_TX_SIZE}"):
        Transaction.from_bytes(bytes(challenge))
    with pytest.raises(DecodeError, match="maximum"):
        Transaction.from_bytes(bytes(10_000_000))


def test_empty_input() -> None:
    with pytest.raises(DecodeError, match="truncated: chain_id"):
        Transaction.from_bytes(b"")


# --- construction -------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, exc",
    [
        ("chain_id", -1, ValueError),
        ("chain_id", 2**32, ValueError),
        ("kind", 256, ValueError),
        ("nonce", 2**64, ValueError),
        ("fee", -5, ValueError),
        ("amount", 2**64, ValueError),
        ("amount", 1.0, ValueError),
        ("amount", True, ValueError),
        ("sender_pubkey", bytes(31), ValueError),
        ("recipient", bytes(21), ValueError),
        ("signature", bytes(63), ValueError),
        ("payload", bytearray(b"x"), TypeError),
        ("recipient", "dpw1...", TypeError),
    ],
)
def test_constructor_checks_widths(field: str, value: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=field):
        make_tx(signed=False, **{field: value})


def test_txid_and_sighash() -> None:
    unsigned = make_tx(signed=False)
    tx = sign(unsigned, ALICE)
    assert tx.txid == unsigned.txid == tagged_hash(TAG_TX, tx.unsigned_bytes)
    assert tx.sighash == tagged_hash(TAG_TX_SIG, tx.unsigned_bytes)
    assert tx.txid != tx.sighash  # separate domains
    assert tx.sender == address_from_pubkey(ALICE.public_key)
    assert tx.txid.hex() in repr(tx)
    # Every field but the signature moves the txid.
    changes = dict(chain_id=8, kind=2, nonce=4, fee=101, recipient=bytes(20), amount=1, payload=b"")
    for name, value in changes.items():
        assert dataclasses.replace(tx, **{name: value}).txid != tx.txid, name
    other_sender = make_tx(key=devnet_key(9))
    assert other_sender.txid != tx.txid
    assert dataclasses.replace(tx, signature=bytes(64)).txid == tx.txid


def test_sign_with_wrong_key_raises() -> None:
    with pytest.raises(ValueError, match="does not match"):
        sign(make_tx(signed=False), devnet_key(1))


# --- context-free checks: every TxReject, each from a tx built to trigger it ---------

BAD_TXS: list[tuple[TxReject, Transaction]] = [
    (TxReject.UNKNOWN_KIND, make_tx(kind=0)),
    (TxReject.UNKNOWN_KIND, make_tx(kind=9)),
    (TxReject.UNKNOWN_KIND, make_tx(kind=255)),
    # Every kind is active since the compute market; KIND_NOT_ACTIVE is tested below
    # with a narrowed ACTIVE_KINDS.
    (TxReject.JOB_RECIPIENT, make_tx(kind=TxKind.JOB_SUBMIT)),
    (TxReject.JOB_AMOUNT, make_tx(kind=TxKind.JOB_SUBMIT, recipient=bytes(20), amount=0)),
    (TxReject.JOB_AMOUNT, make_tx(kind=TxKind.JOB_COMMIT, recipient=bytes(20))),
    (TxReject.JOB_BAD_PAYLOAD, make_tx(kind=TxKind.JOB_RECLAIM, recipient=bytes(20), amount=0)),
    (
        TxReject.JOB_BAD_PAYLOAD,
        make_tx(kind=TxKind.JOB_CHALLENGE, recipient=bytes(20), amount=0, payload=bytes(40)),
    ),
    (TxReject.WRONG_CHAIN_ID, make_tx(chain_id=CHAIN + 1)),
    (TxReject.PAYLOAD_TOO_LARGE, make_tx(payload=bytes(MAX_TX_PAYLOAD + 1))),
    (TxReject.ZERO_AMOUNT, make_tx(amount=0)),
    (TxReject.AMOUNT_OVERFLOW, make_tx(amount=U64_MAX, fee=1)),
    (TxReject.AMOUNT_OVERFLOW, make_tx(amount=2**63, fee=2**63)),
    (TxReject.BAD_SIGNATURE, make_tx(signed=False)),
    (TxReject.BAD_SIGNATURE, dataclasses.replace(make_tx(), amount=99999)),
    (TxReject.BAD_SIGNATURE, dataclasses.replace(make_tx(), sender_pubkey=BOB_KEY.public_key)),
    (
        TxReject.BAD_SIGNATURE,
        dataclasses.replace(make_tx(), signature=devnet_key(0).sign(make_tx().txid)),
    ),
]


@pytest.mark.parametrize(
    "reason, tx", BAD_TXS, ids=[f"{r.name}-{i}" for i, (r, _) in enumerate(BAD_TXS)]
)
def test_rejections(reason: TxReject, tx: Transaction) -> None:
    result = check_transaction(tx, CHAIN)
    assert isinstance(result, TxCheck)
    assert not result.ok
    assert result.reject is reason
    assert result.detail


def test_every_reject_reason_is_tested() -> None:
    assert {r for r, _ in BAD_TXS} | {TxReject.KIND_NOT_ACTIVE} == set(TxReject)


def test_kind_not_active(monkeypatch: pytest.MonkeyPatch) -> None:
    import chain.tx

    monkeypatch.setattr(chain.tx, "ACTIVE_KINDS", frozenset({TxKind.TRANSFER}))
    tx = make_tx(kind=TxKind.JOB_SUBMIT)
    assert check_transaction(tx, CHAIN).reject is TxReject.KIND_NOT_ACTIVE


def test_reject_values_are_wire_strings() -> None:
    assert TxReject.BAD_SIGNATURE == "tx-bad-signature"
    assert len({r.value for r in TxReject}) == len(TxReject)


def test_valid_transfer() -> None:
    assert check_transaction(make_tx(), CHAIN) == TX_OK
    assert TX_OK.ok and TX_OK.reject is None
    assert ACTIVE_KINDS == set(TxKind)


def test_edges_that_are_valid() -> None:
    assert check_transaction(make_tx(amount=U64_MAX - 7, fee=7), CHAIN).ok
    assert check_transaction(make_tx(fee=0), CHAIN).ok  # fee floors are mempool policy
    assert check_transaction(make_tx(payload=bytes(MAX_TX_PAYLOAD)), CHAIN).ok
    assert check_transaction(make_tx(payload=b""), CHAIN).ok


def test_self_transfer_is_allowed() -> None:
    tx = make_tx(recipient=address_from_pubkey(ALICE.public_key))
    assert tx.recipient == tx.sender
    assert check_transaction(tx, CHAIN).ok


def test_cross_chain_replay_is_rejected() -> None:
    tx = make_tx(chain_id=1)
    assert check_transaction(tx, 1).ok
    assert check_transaction(tx, 2).reject is TxReject.WRONG_CHAIN_ID
    # Rewriting the chain id to replay it breaks the signature: the id is signed.
    replayed = dataclasses.replace(tx, chain_id=2)
    assert check_transaction(replayed, 2).reject is TxReject.BAD_SIGNATURE


def test_cheap_rules_run_before_the_signature() -> None:
    tx = make_tx(signed=False, chain_id=CHAIN + 1)
    assert check_transaction(tx, CHAIN).reject is TxReject.WRONG_CHAIN_ID


# --- JSON form ----------------------------------------------------------------------


def _json_dict(tx: Transaction | None = None) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(
        TransactionJSON.from_transaction(tx or make_tx(), "dpw").model_dump_json()
    )
    return d


def test_json_shape() -> None:
    tx = make_tx()
    d = _json_dict(tx)
    assert d == {
        "chain_id": CHAIN,
        "kind": 1,
        "sender_pubkey": tx.sender_pubkey.hex(),
        "nonce": "3",
        "fee": "100",
        "recipient": encode_address("dpw", BOB),
        "amount": "12345",
        "payload": b"memo".hex(),
        "signature": tx.signature.hex(),
    }
    parsed = TransactionJSON.model_validate_json(json.dumps(d))
    assert parsed.to_transaction("dpw") == tx


def test_json_accepts_integers_uppercase_and_default_payload() -> None:
    d = _json_dict(make_tx(payload=b""))
    d.update(nonce=3, fee=100, amount=12345)
    d["recipient"] = d["recipient"].upper()
    d["signature"] = d["signature"].upper()
    del d["payload"]
    tx = TransactionJSON.model_validate_json(json.dumps(d)).to_transaction("dpw")
    assert tx == make_tx(payload=b"")


def test_json_u64_beyond_2_53() -> None:
    for value in (U64_MAX, str(U64_MAX), 2**53 + 1):
        d = _json_dict()
        d["amount"] = value
        assert TransactionJSON.model_validate_json(json.dumps(d)).amount == int(value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("chain_id", -1, "must be in"),
        ("chain_id", 2**32, "must be in"),
        ("chain_id", "7.0", "decimal integer"),
        ("kind", 256, "must be in"),
        ("kind", True, "must be an integer"),
        ("nonce", 1.0, "must be an integer"),
        ("nonce", "-1", "decimal integer"),
        ("fee", "0100", "leading zeros"),
        ("fee", None, "must be an integer"),
        ("amount", 2**64, f"must be in \\[0, {U64_MAX}\\]"),
        ("amount", "1" * 21, "at most"),
        ("amount", 1.5e19, "must be an integer"),
        ("sender_pubkey", "00" * 31, "must be 32 bytes"),
        ("sender_pubkey", "0x" + "00" * 31, "0x prefix"),
        ("sender_pubkey", "zz" * 32, "not a hex string"),
        ("sender_pubkey", "0" * 63, "not a hex string"),
        ("sender_pubkey", 5, "must be a hex string"),
        ("signature", "00" * 65, "longer than 64 bytes"),
        ("signature", "ab cd" + "00" * 61 + "0", "not a hex string"),
        ("payload", "00" * (MAX_TX_SIZE - TX_FIXED_SIZE + 1), "longer than"),
        ("recipient", 5, "bech32m address string"),
        ("recipient", "dpw1qqqq", "too short|checksum"),
        ("recipient", "xyz1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqyqtuzr", "not a pouw network|checksum"),
    ],
)
def test_json_field_errors_name_the_field(field: str, value: object, message: str) -> None:
    d = _json_dict()
    d[field] = value
    with pytest.raises(ValidationError) as info:
        TransactionJSON.model_validate_json(json.dumps(d))
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,)]
    assert re.search(message, errors[0]["msg"]), errors[0]["msg"]


def test_json_typo_in_recipient() -> None:
    d = _json_dict()
    text = d["recipient"]
    d["recipient"] = text[:-3] + ("q" if text[-3] != "q" else "p") + text[-2:]
    with pytest.raises(ValidationError, match=r"recipient[\s\S]*typo"):
        TransactionJSON.model_validate_json(json.dumps(d))


def test_json_missing_and_extra_fields() -> None:
    d = _json_dict()
    del d["fee"]
    d["txid"] = "00"
    with pytest.raises(ValidationError) as info:
        TransactionJSON.model_validate_json(json.dumps(d))
    assert {e["loc"] for e in info.value.errors()} == {("fee",), ("txid",)}


def test_json_wrong_network_at_conversion() -> None:
    j = TransactionJSON.model_validate_json(json.dumps(_json_dict()))
    with pytest.raises(ValueError, match="wrong network: a devnet address"):
        j.to_transaction("pw")


def test_json_not_json() -> None:
    with pytest.raises(ValidationError):
        TransactionJSON.model_validate_json("{not json")


# --- merkle -------------------------------------------------------------------------

NODE = TAG_TX_NODE


def _leaf(i: int) -> bytes:
    return tagged_hash(TAG_MERKLE_LEAF, i.to_bytes(4, "big"))


def _node(a: bytes, b: bytes) -> bytes:
    return tagged_hash(NODE, a, b)


def test_merkle_small_trees_by_hand() -> None:
    a, b, c, d, e = (_leaf(i) for i in range(5))
    assert merkle_root([], NODE) == EMPTY_ROOT == bytes(32)
    assert merkle_root([a], NODE) == a
    assert merkle_root([a, b], NODE) == _node(a, b)
    assert merkle_root([a, b, c], NODE) == _node(_node(a, b), c)  # c promoted, not doubled
    assert merkle_root([a, b, c, d], NODE) == _node(_node(a, b), _node(c, d))
    assert merkle_root([a, b, c, d, e], NODE) == _node(_node(_node(a, b), _node(c, d)), e)


def test_no_duplicate_last_ambiguity() -> None:
    # CVE-2012-2459: with Bitcoin's rule [a, b, c] and [a, b, c, c] share a root.
    a, b, c = (_leaf(i) for i in range(3))
    assert merkle_root([a, b, c], NODE) != merkle_root([a, b, c, c], NODE)
    roots = {merkle_root([_leaf(i) for i in range(n)], NODE) for n in range(40)}
    assert len(roots) == 40


def test_node_tag_matters() -> None:
    leaves = [_leaf(i) for i in range(3)]
    assert merkle_root(leaves, TAG_TX_NODE) != merkle_root(leaves, "pouw/merkle/node")


@given(st.integers(1, 70), st.data())
def test_branches_verify(count: int, data: st.DataObject) -> None:
    leaves = [_leaf(i) for i in range(count)]
    root = merkle_root(leaves, NODE)
    index = data.draw(st.integers(0, count - 1))
    branch = merkle_branch(leaves, index, NODE)
    assert verify_branch(leaves[index], index, count, branch, NODE, root)
    # Wrong leaf, wrong index, tampered branch, wrong root, wrong tag: all fail.
    assert not verify_branch(_leaf(count + 1), index, count, branch, NODE, root)
    if count > 1:
        other = data.draw(st.integers(0, count - 1).filter(lambda i: i != index))
        assert not verify_branch(leaves[index], other, count, branch, NODE, root)
    if branch:
        k = data.draw(st.integers(0, len(branch) - 1))
        bad = list(branch)
        bad[k] = bytes(32)
        assert not verify_branch(leaves[index], index, count, bad, NODE, root)
        assert not verify_branch(leaves[index], index, count, branch[:-1], NODE, root)
        assert not verify_branch(leaves[index], index, count, branch, TAG_TX_LEAF, root)
    assert not verify_branch(leaves[index], index, count, [*branch, bytes(32)], NODE, root)
    assert not verify_branch(leaves[index], index, count, branch, NODE, bytes(32))


@pytest.mark.parametrize(
    "leaf, index, count, branch, root",
    [
        (bytes(32), 0, 0, [], bytes(32)),
        (bytes(32), -1, 2, [bytes(32)], bytes(32)),
        (bytes(32), 2, 2, [bytes(32)], bytes(32)),
        (bytes(31), 0, 1, [], bytes(31)),
        (bytes(32), 0, 2, [b"short"], bytes(32)),
        (bytes(32), 0, 2, ["not bytes" * 4], bytes(32)),
        ("x" * 32, 0, 1, [], "x" * 32),
        (bytes(32), 0, 2**64, [], bytes(32)),
    ],
)
def test_verify_branch_never_raises(
    leaf: Any, index: int, count: int, branch: Any, root: Any
) -> None:
    assert verify_branch(leaf, index, count, branch, NODE, root) is False


def test_single_leaf_branch_is_empty() -> None:
    leaf = _leaf(0)
    assert merkle_branch([leaf], 0, NODE) == []
    assert verify_branch(leaf, 0, 1, [], NODE, leaf)


def test_merkle_input_errors() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        merkle_root([bytes(31)], NODE)
    with pytest.raises(IndexError):
        merkle_branch([_leaf(0)], 1, NODE)


def test_tx_root_commits_to_signatures() -> None:
    txs = [make_tx(nonce=i) for i in range(3)]
    root = transactions_root(txs)
    assert root == tx_root([tx_leaf(t.txid, t.signature) for t in txs])
    assert root == merkle_root([tagged_hash(TAG_TX_LEAF, t.txid, t.signature) for t in txs], NODE)
    assert transactions_root([]) == EMPTY_ROOT
    # Same txids, a different (invalid) signature: the root changes, so a mutated
    # block body can never pass for the header of the honest one.
    mutated = [txs[0], dataclasses.replace(txs[1], signature=bytes(64)), txs[2]]
    assert [t.txid for t in mutated] == [t.txid for t in txs]
    assert transactions_root(mutated) != root
    assert transactions_root(txs[::-1]) != root  # order matters
    with pytest.raises(ValueError):
        tx_leaf(bytes(32), bytes(63))
