"""RPC methods of the P2P network: network info, peers, addnode, bans."""

from __future__ import annotations

import inspect
import ipaddress
import time
from typing import Any

from node.config import VERSION as NODE_VERSION
from node.rpc.base import MethodsBase
from node.rpc.errors import (
    CLIENT_INVALID_IP_OR_SUBNET,
    CLIENT_NODE_NOT_ADDED,
    CLIENT_NODE_NOT_CONNECTED,
    CLIENT_P2P_DISABLED,
    INVALID_PARAMETER,
    MISC_ERROR,
    RpcError,
)
from node.rpc.params import AddNodeParams, DisconnectParams, SetBanParams
from node.rpc.protocol import CallContext, NoParams
from p2p.addrbook import BanListFullError

VERSION = NODE_VERSION


class NetworkMethods(MethodsBase):
    def p2p(self) -> Any:
        for service in self.node.services:
            if getattr(service, "name", None) == "p2p":
                return service
        return None

    async def p2p_call(self, name: str, *args: Any) -> Any:
        p2p = self.p2p()
        if p2p is None:
            raise RpcError(
                CLIENT_P2P_DISABLED, "P2P is off on this node (--nop2p): restart it without --nop2p"
            )
        result = getattr(p2p, name)(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def getnetworkinfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """Version, network, whether P2P runs and the connection count."""
        p2p = self.p2p()
        conns = await self.p2p_call("connection_count") if p2p is not None else 0
        orphans = await self.p2p_call("orphan_count") if p2p is not None else 0
        return {
            "version": VERSION,
            "subversion": f"/pouw:{VERSION}/",
            "network": self.net.name,
            "chain_id": self.net.chain_id,
            "networkactive": p2p is not None,
            "connections": conns,
            "relayfee": self.node.mempool.min_fee,
            "orphan_txs": orphans,
            "warnings": "",
        }

    async def getpeerinfo(self, ctx: CallContext, p: NoParams) -> Any:
        """Connected peers (empty without P2P)."""
        return await self.p2p_call("peer_info") if self.p2p() is not None else []

    async def getconnectioncount(self, ctx: CallContext, p: NoParams) -> int:
        """Number of connected peers (0 without P2P)."""
        return await self.p2p_call("connection_count") if self.p2p() is not None else 0

    async def addnode(self, ctx: CallContext, p: AddNodeParams) -> None:
        """Add, remove or try once a peer HOST:PORT (admin)."""
        try:
            await self.p2p_call("add_node", p.node, p.command)
        except KeyError:
            raise RpcError(CLIENT_NODE_NOT_ADDED, "Node has not been added") from None
        except ValueError as exc:
            raise RpcError(INVALID_PARAMETER, f"invalid parameter 'node': {exc}") from None

    async def disconnectnode(self, ctx: CallContext, p: DisconnectParams) -> None:
        """Disconnect the peer at HOST:PORT (admin)."""
        if not await self.p2p_call("disconnect_node", p.address):
            raise RpcError(CLIENT_NODE_NOT_CONNECTED, "Node not found in connected nodes")

    async def setban(self, ctx: CallContext, p: SetBanParams) -> None:
        """Ban (add) or unban (remove) an IP address (not a subnet); bantime seconds, or a
        unix time if absolute, 0 = the node's default (admin)."""
        try:  # the P2P service bans single addresses, so a subnet is refused too
            ip = str(ipaddress.ip_address(p.subnet))
        except ValueError:
            raise RpcError(
                CLIENT_INVALID_IP_OR_SUBNET, f"Error: Invalid IP address: {p.subnet!r}"
            ) from None
        seconds = p.bantime - int(time.time()) if p.absolute else p.bantime
        if p.absolute and seconds <= 0:
            raise RpcError(INVALID_PARAMETER, "invalid parameter 'bantime': in the past")
        try:
            ok = await self.p2p_call("set_ban", ip, p.command, seconds or None)
        except ValueError as exc:
            raise RpcError(CLIENT_INVALID_IP_OR_SUBNET, f"invalid IP/subnet: {exc}") from None
        except BanListFullError as exc:
            raise RpcError(MISC_ERROR, str(exc)) from None
        if ok is False and p.command == "remove":
            raise RpcError(CLIENT_INVALID_IP_OR_SUBNET, "Unban failed: not banned")

    async def listbanned(self, ctx: CallContext, p: NoParams) -> Any:
        """Banned addresses and subnets (empty without P2P)."""
        return await self.p2p_call("list_banned") if self.p2p() is not None else []

    async def clearbanned(self, ctx: CallContext, p: NoParams) -> None:
        """Remove every ban (admin)."""
        await self.p2p_call("clear_banned")
