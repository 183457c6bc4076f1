"""The params models of the RPC methods (node/rpc/*_methods.py), validated by pydantic.

Field order is the positional order; every integer a client sends is capped before use.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from chain.block import MAX_BLOCK_SIZE
from chain.tx import MAX_TX_SIZE
from node.rpc.jsoncodec import MAX_ECHO
from node.rpc.protocol import MAX_WAIT_MS, Params

HashHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
HEX = r"^([0-9a-fA-F]{2})*$"
# Hex of at most the largest transaction or block: a longer string is refused by its
# length before it is scanned or decoded (40 MB of hex took 0.56 s to decode, only to
# be refused by size).
TxHex = Annotated[str, StringConstraints(max_length=2 * MAX_TX_SIZE, pattern=HEX)]
BlockHex = Annotated[str, StringConstraints(max_length=2 * MAX_BLOCK_SIZE, pattern=HEX)]
# Other strings a client names (a peer, a subnet, a command, a subscription id): far
# above any real one, so that an error message never echoes megabytes.
Name = Annotated[str, StringConstraints(max_length=MAX_ECHO)]
# Every integer a client sends is capped before use: 2^53 - 1 is the largest integer
# every JSON client reads exactly, and keeps arithmetic on it (skip + count, ms / 1000,
# now + bantime) within C and float ranges.
MAX_SAFE_INT = 2**53 - 1
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Height = Count
Shape = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]], Field(min_length=3, max_length=3)
]
MAX_TESTMEMPOOLACCEPT = 25
MAX_HISTORY_PAGE = 1000


class HeightParams(Params):
    height: Height


class BlockParams(Params):
    blockhash: HashHex
    verbosity: Annotated[int, Field(ge=0, le=2)] = 1


class HeaderParams(Params):
    blockhash: HashHex
    verbose: bool = True


class WaitParams(Params):
    # milliseconds, 0 = the longest wait (MAX_WAIT_MS); more is refused, as waitforjob's
    timeout: Annotated[int, Field(ge=0, le=MAX_WAIT_MS)] = 0


class AddressParams(Params):
    address: str


class ProofParams(Params):
    address: str
    kind: Literal["account", "contribution"] = "account"


class RawTxParams(Params):
    hexstring: TxHex


class TestAcceptParams(Params):
    rawtxs: Annotated[list[TxHex], Field(min_length=1, max_length=MAX_TESTMEMPOOLACCEPT)]


class TxidParams(Params):
    txid: HashHex
    verbose: bool = False


class TxParams(Params):
    txid: HashHex


class MempoolParams(Params):
    verbose: bool = False


class FeeParams(Params):
    blocks: Annotated[int, Field(ge=1, le=1008)] = 6


class HistoryParams(Params):
    address: str
    skip: Count = 0
    count: Annotated[int, Field(ge=1, le=MAX_HISTORY_PAGE)] = 100


class TemplateParams(Params):
    miner: str
    shape: Shape | None = None
    longpollid: Name | None = None
    job: HashHex | None = None  # a job ``miner`` holds the claim of: the header names it


class SubmitParams(Params):
    hexdata: BlockHex


class AddNodeParams(Params):
    node: Name
    command: Literal["add", "remove", "onetry"]


class DisconnectParams(Params):
    address: Name


class SetBanParams(Params):
    subnet: Name
    command: Literal["add", "remove"]
    bantime: Count = 0
    absolute: bool = False


class HelpParams(Params):
    command: Name | None = None


class SubscribeParams(Params):
    topic: Literal["newHeads", "newTransactions", "jobs"]


class UnsubscribeParams(Params):
    subscription: Name
