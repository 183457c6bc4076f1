"""What every group of RPC methods shares: the node, the service, and small helpers.

The method groups (node/rpc/chain_methods.py, account_methods.py, mining_methods.py,
market.py, network_methods.py, control_methods.py) are mixins over ``MethodsBase``;
node/rpc/methods.py puts them together and registers them. Each method takes
(CallContext, params model) and returns a JSON value. Everything runs on the event loop
thread, as the node requires for the chain.
"""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING

from chain.address import AddressError, decode_address, encode_address
from chain.index_record import IndexRecord
from consensus.difficulty import median_time_past
from node.rpc.errors import INVALID_ADDRESS_OR_KEY, RpcError

if TYPE_CHECKING:
    from chain.network import Network
    from node.rpc.service import RpcService
    from node.service import Node

# bech32m in pure Python costs tens of microseconds an address, more than the rest of
# a getaccount call; wallets ask about the same few addresses over and over.
ADDRESS_CACHE = 4096
cached_decode_address = functools.lru_cache(ADDRESS_CACHE)(decode_address)
cached_encode_address = functools.lru_cache(ADDRESS_CACHE)(encode_address)


class MethodsBase:
    node: Node
    service: RpcService
    net: Network

    def __init__(self, node: Node, service: RpcService) -> None:
        self.node = node
        self.service = service
        self.net = node.network

    def address(self, text: str, param: str = "address") -> bytes:
        try:
            return cached_decode_address(text, self.net.hrp)
        except AddressError as exc:
            raise RpcError(INVALID_ADDRESS_OR_KEY, f"invalid {param}: {exc}") from None

    def is_active(self, rec: IndexRecord) -> bool:
        return self.node.chain.active_hash(rec.height) == rec.hash

    def confirmations(self, rec: IndexRecord) -> int:
        return self.node.chain.tip.height - rec.height + 1 if self.is_active(rec) else -1

    def mediantime(self, rec: IndexRecord) -> int:
        times = [r.timestamp for r in itertools.islice(self.node.chain.ancestors(rec.hash), 11)]
        return median_time_past(list(reversed(times)))
