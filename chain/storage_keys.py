"""The chain database's key layout (chain/storage.py): one LevelDB, the first byte of
every key a prefix; hashes 32 bytes, heights big-endian so that LevelDB's byte order is
height order. The table of prefixes is in chain/storage.py's docstring."""

from __future__ import annotations

import struct

from chain.index_record import check_hash, check_height

# Bump on any change to the key layout or IndexRecord encoding (2: tx receipts, market v2).
SCHEMA_VERSION = 2
CHAIN_DB_DIRNAME = "chain"  # the LevelDB lives at <datadir>/chain

PREFIX_BLOCK = b"b"  # b"b" + hash(32)       -> block body bytes
PREFIX_INDEX = b"i"  # b"i" + hash(32)       -> IndexRecord.to_bytes()
PREFIX_HEIGHT = b"h"  # b"h" + height(u64 BE) -> hash(32) of the active chain at height
PREFIX_STATE = b"s"  # b"s" + key            -> state value bytes
PREFIX_UNDO = b"u"  # b"u" + hash(32)        -> undo data for that block
PREFIX_META = b"m"  # b"m" + name            -> metadata (names below)
# b"t" + txid(32) -> block hash(32) | u64 height | u32 position [| failure reason utf-8]
# for each active-chain tx; the reason is there for a job tx included as failed.
PREFIX_TX = b"t"
MAX_RECEIPT = 200  # bytes of a failure reason kept in the tx index
# b"x" + address(20) + u64 height + u32 position -> txid(32): every active-chain tx that
# sends from or pays to the address, in chain order (wallet history).
PREFIX_ADDRESS_TX = b"x"
# b"d" + hash(32) -> that block's header bytes (a prefix of its body), written with the
# body: peers are served headers without each stored block read and checked whole. A
# block stored before these keys existed has none (its body is read instead), and
# --reindex writes them for every block it keeps.
PREFIX_HEADER = b"d"

RECORD_KINDS = {
    PREFIX_BLOCK: "block", PREFIX_INDEX: "block index", PREFIX_HEIGHT: "active chain",
    PREFIX_STATE: "state", PREFIX_UNDO: "undo", PREFIX_META: "metadata",
    PREFIX_TX: "transaction index", PREFIX_ADDRESS_TX: "address history",
    PREFIX_HEADER: "header",
}  # fmt: skip


def record_kind(key: bytes) -> str:
    """What a key's record is, for error messages ("block", "state", ...)."""
    return RECORD_KINDS.get(key[:1], f"{key[:1]!r}")


META_TIP = PREFIX_META + b"tip"  # hash(32) of the active tip
META_GENESIS = PREFIX_META + b"genesis"  # hash(32) of the genesis block
META_SCHEMA = PREFIX_META + b"schema"  # u32 BE schema version
META_NETWORK = PREFIX_META + b"network"  # utf-8 network name (devnet, testnet, ...)
# hash(32) of the chain a reorg is moving to: written before its first disconnect and
# removed after its last connect, so a start-up after a crash finishes the reorg.
META_REORG = PREFIX_META + b"reorg"
# present while a --reindex is under way: the next start finishes it.
META_REINDEX = PREFIX_META + b"reindex"
# Keys holding data derived from the blocks, rebuilt by --reindex.
DERIVED_PREFIXES = (PREFIX_STATE, PREFIX_UNDO, PREFIX_HEIGHT, PREFIX_TX, PREFIX_ADDRESS_TX)

_U64 = struct.Struct(">Q")


def check_bytes(value: bytes, what: str) -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def header_key(block_hash: bytes) -> bytes:
    return PREFIX_HEADER + check_hash(block_hash)


def height_key(height: int) -> bytes:
    return PREFIX_HEIGHT + _U64.pack(check_height(height))


def block_key(block_hash: bytes) -> bytes:
    return PREFIX_BLOCK + check_hash(block_hash)


def index_key(block_hash: bytes) -> bytes:
    return PREFIX_INDEX + check_hash(block_hash)


def undo_key(block_hash: bytes) -> bytes:
    return PREFIX_UNDO + check_hash(block_hash)


def state_key(key: bytes) -> bytes:
    return PREFIX_STATE + check_bytes(key, "state key")


def address_tx_key(address: bytes, height: int, position: int) -> bytes:
    if len(address) != 20:
        raise ValueError("addresses are 20 bytes")
    return PREFIX_ADDRESS_TX + address + height.to_bytes(8, "big") + position.to_bytes(4, "big")
