"""The committed compute-market vectors (tests/vectors/market.json) still hold."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from chain.job_payloads import decode_job_payload
from chain.job_record import Job
from chain.network import load_network
from chain.tx import Transaction, check_transaction

VECTORS = Path(__file__).parent / "vectors" / "market.json"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_market", VECTORS.with_name("gen_market.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vectors_match_the_code() -> None:
    assert _generator().render() == VECTORS.read_text()


def test_payloads_and_record_decode_to_themselves() -> None:
    data = json.loads(VECTORS.read_text())
    net = load_network("devnet")
    for case in data["payloads"]:
        tx = Transaction.from_bytes(bytes.fromhex(case["tx"]))
        assert check_transaction(tx, net.chain_id).ok, case["name"]
        assert tx.txid.hex() == case["txid"] and tx.payload.hex() == case["payload"]
        payload = decode_job_payload(case["kind"], bytes.fromhex(case["payload"]))
        assert payload.to_payload().hex() == case["payload"]
    raw = bytes.fromhex(data["record"]["encoding"])
    assert Job.from_bytes(raw).to_bytes() == raw
    assert data["final_jobs"] and set(data["final_jobs"].values()) == {"paid", "open"}
