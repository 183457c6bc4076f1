"""Helpers for the RPC tests (no tests here): an in-process easy-devnet node with its RPC."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from node.config import NodeConfig
from node.rpc.service import RpcService
from node.service import Node
from tests.chainutil import EASY_WORK
from wallet.rpc import read_cookie


def easy_genesis_file(directory: Path) -> Path:
    """The easy test devnet of tests/chainutil.py as a genesis file."""
    data = json.loads(resources.files("genesis").joinpath("devnet.json").read_text())
    data["difficulty"]["max_target"] = hex(2**256 // 2**12)
    data["difficulty"]["genesis_target"] = hex(2**256 // EASY_WORK)
    data["filler"] = {"m": 64, "k": 128, "n": 64}
    data["subsidy"]["coinbase_maturity"] = 3
    path = directory / "easy-devnet.json"
    path.write_text(json.dumps(data))
    return path


@dataclass
class Harness:
    node: Node
    rpc: RpcService
    session: aiohttp.ClientSession
    url: str
    auth: str

    def headers(self, auth: str | None = "default") -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if auth == "default":
            h["Authorization"] = self.auth
        elif auth is not None:
            h["Authorization"] = auth
        return h

    async def post(self, body: bytes | str | Any, auth: str | None = "default") -> tuple[int, Any]:
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        async with self.session.post(self.url, data=body, headers=self.headers(auth)) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def call(self, method: str, *params: Any, **named: Any) -> dict[str, Any]:
        p: Any = named if named else list(params)
        status, reply = await self.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": p})
        assert status == 200, (status, reply)
        return reply

    async def result(self, method: str, *params: Any, **named: Any) -> Any:
        reply = await self.call(method, *params, **named)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, method: str, *params: Any, **named: Any) -> dict[str, Any]:
        reply = await self.call(method, *params, **named)
        assert "result" not in reply, reply
        return reply["error"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@asynccontextmanager
async def rpc_node(tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    if "genesis_file" not in overrides:  # (a test's own genesis: the same file name)
        overrides["genesis_file"] = easy_genesis_file(tmp_path)
    settings: dict[str, Any] = {"p2p": False, "mine": False, "rpc_port": 0, **overrides}
    config = NodeConfig(network="devnet", datadir=tmp_path, **settings)
    node = Node(config)
    rpc = next(s for s in node.services if s.name == "rpc")
    assert isinstance(rpc, RpcService)
    await rpc.start()
    user, password = read_cookie(config.datadir, config.network)
    session = aiohttp.ClientSession()
    try:
        yield Harness(node, rpc, session, f"http://127.0.0.1:{rpc.port}/", basic(user, password))
    finally:
        await session.close()
        await rpc.stop()
        node.close()


def run_node(tmp_path: Path, body: Callable[[Harness], Awaitable[None]], **overrides: Any) -> None:
    async def main() -> None:
        async with rpc_node(tmp_path, **overrides) as h:
            await body(h)

    asyncio.run(main())
