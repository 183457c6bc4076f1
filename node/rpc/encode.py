"""JSON forms of headers, blocks, transactions and templates (and back, for miners).

Amounts are integers in base units (1 coin = 10^8 units); 256-bit values (targets,
chain work) are 64-digit hex strings; hashes and binary fields are lowercase hex.
"""

from __future__ import annotations

from typing import Any

from chain.address import decode_address, encode_address
from chain.header import NO_JOB, Header
from chain.network import Network
from chain.tx import Transaction
from chain.txkind import TxKind
from node.template import BlockTemplate

COIN = 10**8


def hex256(value: int) -> str:
    return f"{value:064x}"


def difficulty(network: Network, target: int) -> float:
    """How many times harder than the easiest allowed target (bitcoind's meaning)."""
    return network.difficulty.max_target / target if target else 0.0


def kind_name(kind: int) -> str:
    """A transaction kind as RPC shows it beside the number: "transfer", "job_submit"..."""
    try:
        return TxKind(kind).name.lower()
    except ValueError:  # (decoding refuses unknown kinds: not reached for a stored tx)
        return f"kind_{kind}"


def tx_json(tx: Transaction, network: Network) -> dict[str, Any]:
    return {
        "txid": tx.txid.hex(),
        "chain_id": tx.chain_id,
        "kind": tx.kind,
        "type": kind_name(tx.kind),
        "sender": encode_address(network.hrp, tx.sender),
        "sender_pubkey": tx.sender_pubkey.hex(),
        "nonce": tx.nonce,
        "fee": tx.fee,
        "recipient": encode_address(network.hrp, tx.recipient),
        "amount": tx.amount,
        "payload": tx.payload.hex(),
        "signature": tx.signature.hex(),
        "size": len(tx.to_bytes()),
    }


def header_json(header: Header, network: Network) -> dict[str, Any]:
    return {
        "hash": header.hash.hex(),
        "height": header.height,
        "version": header.version,
        "previousblockhash": header.parent.hex(),
        "time": header.timestamp,
        "target": hex256(header.target),
        "difficulty": difficulty(network, header.target),
        "tx_root": header.tx_root.hex(),
        "state_root": header.state_root.hex(),
        "miner": encode_address(network.hrp, header.miner),
        "job_id": header.job_id.hex(),
        "m": header.m,
        "k": header.k,
        "n": header.n,
        "h_a": header.h_a.hex(),
        "h_b": header.h_b.hex(),
        "seal_size": len(header.seal),
    }


TEMPLATE_FIELDS = (
    "version", "height", "parent", "timestamp", "target", "tx_root", "state_root",
    "miner", "job_id", "m", "k", "n",
)  # fmt: skip


def template_json(template: BlockTemplate, network: Network) -> dict[str, Any]:
    """Every header field but the seal (and h_a, h_b unless it names a job: then they
    are the job's, which the operands must reproduce), plus the transactions."""
    h = template.header
    out = {
        "version": h.version,
        "height": h.height,
        "parent": h.parent.hex(),
        "previousblockhash": h.parent.hex(),
        "timestamp": h.timestamp,
        "target": hex256(h.target),
        "tx_root": h.tx_root.hex(),
        "state_root": h.state_root.hex(),
        "miner": encode_address(network.hrp, h.miner),
        "job_id": h.job_id.hex(),
        "m": h.m,
        "k": h.k,
        "n": h.n,
        "shape": [h.m, h.k, h.n],
        "transactions": [
            {"data": tx.to_bytes().hex(), "txid": tx.txid.hex(), "fee": tx.fee}
            for tx in template.txs
        ],
    }
    if h.job_id != NO_JOB:
        out.update(h_a=h.h_a.hex(), h_b=h.h_b.hex())
    return out


def template_from_json(data: dict[str, Any], hrp: str) -> BlockTemplate:
    """Rebuild the template a miner mines (``block_with_seal`` gives the block)."""
    header = Header(
        version=int(data["version"]),
        height=int(data["height"]),
        parent=bytes.fromhex(data["parent"]),
        timestamp=int(data["timestamp"]),
        target=int(data["target"], 16),
        tx_root=bytes.fromhex(data["tx_root"]),
        state_root=bytes.fromhex(data["state_root"]),
        miner=decode_address(data["miner"], hrp),
        job_id=bytes.fromhex(data["job_id"]),
        m=int(data["m"]),
        k=int(data["k"]),
        n=int(data["n"]),
        h_a=bytes.fromhex(data.get("h_a", "00" * 32)),
        h_b=bytes.fromhex(data.get("h_b", "00" * 32)),
    )
    txs = tuple(Transaction.from_bytes(bytes.fromhex(t["data"])) for t in data["transactions"])
    return BlockTemplate(header, txs)
