"""Helpers for P2P tests: an easy private devnet file, pre-mined datadirs, node
processes that log to files, and ``WirePeer``, a scriptable peer that speaks the wire
protocol (honestly or not)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chain.address import encode_address
from chain.block import Block
from chain.chainstate import ChainState
from chain.network import NETWORKS, Network, load_network
from chain.storage import open_chain
from p2p.protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Empty,
    Message,
    MsgType,
    Version,
    decode,
    encode,
)
from tests.chainutil import EASY_WORK, Clock, address_of, mine_block

TIP = re.compile(r"new tip height=(\d+) hash=([0-9a-f]{64})")
P2P_ENV = {
    "POUW_P2P_HANDSHAKE_TIMEOUT": "3",
    "POUW_P2P_BLOCK_STALL": "3",
    "POUW_P2P_CONNECT_INTERVAL": "0.5",
}


# Ports for the nodes a test starts come from below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range starts at 32768 by default): a port the kernel hands
# out at bind(0) can be taken by any outgoing connection (an RPC client, a peer dial)
# before the node process binds it, which failed a CI run with EADDRINUSE.
_PORT_RANGE = (20000, 32000)
# The networks' own ports (P2P, RPC, metrics at RPC + 2, blobs at RPC + 3), where a
# node started with its defaults (tests/test_node_process.py) listens, and the three
# below each: a test node given RPC port X and no --blob-port serves blobs on X + 3.
_DEFAULT_PORTS = frozenset(
    port
    for name in NETWORKS
    for base in (load_network(name).p2p_port, load_network(name).rpc_port)
    for port in range(base - 3, base + 4)
)
_handed_out: set[int] = set(_DEFAULT_PORTS)


def _worker_port_range() -> tuple[int, int]:
    """This pytest-xdist worker's share of _PORT_RANGE (all of it without xdist): two
    workers never hand out the same port, so one test's node cannot take a port that
    another worker's test found free a moment before and is about to give its node."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:
        return _PORT_RANGE
    index = int(worker[2:]) % count
    lo, hi = _PORT_RANGE
    share = (hi - lo) // count
    return lo + index * share, lo + (index + 1) * share


def free_port() -> int:
    """A port free now on 127.0.0.1, outside the ephemeral range and not handed out
    before by this process (nor by another xdist worker)."""
    rng = random.Random()
    port_range = _worker_port_range()
    for _ in range(1000):
        port = rng.randrange(*port_range)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {port_range}")


def write_genesis(path: Path, blocks_before_now: int) -> Network:
    """An easy devnet whose schedule puts block ``blocks_before_now`` at about now."""
    data = json.loads(resources.files("genesis").joinpath("devnet.json").read_text())
    data["difficulty"]["max_target"] = hex(2**256 // 2**12)
    data["difficulty"]["genesis_target"] = hex(2**256 // EASY_WORK)
    data["filler"] = {"m": 64, "k": 128, "n": 64}
    data["subsidy"]["coinbase_maturity"] = 3
    data["genesis"]["timestamp"] = int(time.time()) - blocks_before_now - 5
    path.write_text(json.dumps(data))
    return load_network("devnet", path)


def premine(datadir: Path, network: Network, count: int, miner_key: int = 4) -> bytes:
    """Mine ``count`` blocks into ``datadir`` (one second apart); returns the tip hash."""
    db = open_chain(datadir / "devnet", network="devnet", durable=False)  # rebuilt per test
    try:
        clock = Clock(network.genesis_time)
        chain = ChainState(db, network, clock)
        for _ in range(count):
            clock.now = chain.tip_header.timestamp + 1
            chain.process_block(mine_block(chain, miner=address_of(miner_key)))
        return chain.tip.hash
    finally:
        db.close()


def clone_datadir(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    for name in ("peers.json", "bans.json", "LOCK"):
        (dst / "devnet" / name).unlink(missing_ok=True)


def read_tip(datadir: Path, network: Network) -> tuple[int, bytes, bytes]:
    """(height, hash, state root) of a stopped node's datadir."""
    db = open_chain(datadir / "devnet", network="devnet")
    try:
        chain = ChainState(db, network)
        assert chain.tree.root == chain.tip_header.state_root
        return chain.tip.height, chain.tip.hash, chain.tip_header.state_root
    finally:
        db.close()


def miner_address(network: Network, key: int) -> str:
    return encode_address(network.hrp, address_of(key))


class NodeProc:
    """A `pouw node` process on 127.0.0.1, logging to ``<datadir>.log``."""

    def __init__(self, datadir: Path, genesis: Path, port: int | None = None) -> None:
        self.datadir = datadir
        self.genesis = genesis
        self.port = port or free_port()
        self.log_path = datadir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *extra: str, env: dict[str, str] | None = None) -> NodeProc:
        if "--rpc" in extra and not {"--noblobs", "--blob-port"} & set(extra):
            # the blob server's default port (RPC port + 3) may be another test's socket
            extra = (*extra, "--blob-port", str(free_port()))
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable, "-m", "node.cli", "node", "--network", "devnet",
            "--datadir", str(self.datadir), "--genesis-file", str(self.genesis),
            "--p2p-bind", "127.0.0.1", "--p2p-port", str(self.port), "--norpc", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **P2P_ENV, **(env or {})},
        )  # fmt: skip
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"node exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {rx.pattern!r}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def tip(self) -> tuple[int, str] | None:
        tips = TIP.findall(self.log())
        return (int(tips[-1][0]), tips[-1][1]) if tips else None

    def wait_height(self, height: int, timeout: float = 30.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while True:
            tip = self.tip()
            if tip is not None and tip[0] >= height:
                return tip
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"node exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"height {height} not reached ({tip}):\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class LogReader:
    """Reads a node's log incrementally: ``lines()`` gives the complete lines written
    since the last call (a partial last line waits for its newline)."""

    def __init__(self, node: NodeProc) -> None:
        self.node = node
        self.pos = 0
        self.partial = ""

    def lines(self) -> list[str]:
        try:
            with open(self.node.log_path, encoding="utf-8", errors="replace") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return []
        out = (self.partial + data).split("\n")
        self.partial = out.pop()
        return out


@pytest.fixture(name="procs")
def procs_fixture() -> Iterator[list[NodeProc]]:
    """``procs``: a list to append started NodeProcs to; each is killed at teardown. A test
    module that imports ``procs_fixture`` can ask for ``procs``."""
    started: list[NodeProc] = []
    yield started
    for p in started:
        p.kill()


class WirePeer:
    """A scriptable peer: connect from ``local_ip`` (any 127.x address), send anything."""

    def __init__(self, port: int, network: Network, genesis_hash: bytes, local_ip: str) -> None:
        self.port = port
        self.network = network
        self.genesis_hash = genesis_hash
        self.local_ip = local_ip
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self) -> None:
        conn = aiohttp.TCPConnector(local_addr=(self.local_ip, 0))
        self.session = aiohttp.ClientSession(connector=conn)
        self.ws = await self.session.ws_connect(
            f"http://127.0.0.1:{self.port}/p2p", max_msg_size=MAX_FRAME
        )

    def version(self, **over: Any) -> Version:
        fields: dict[str, Any] = dict(
            protocol=PROTOCOL_VERSION, chain_id=self.network.chain_id,
            genesis=self.genesis_hash, best_height=0, best_work=0,
            nonce=int.from_bytes(os.urandom(8), "big"), listen_port=0, user_agent="/wirepeer/",
        )  # fmt: skip
        fields.update(over)
        return Version(**fields)

    async def send(self, msg: Message) -> None:
        await self.send_raw(encode(msg))

    async def send_raw(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def recv(self, timeout: float = 5.0) -> Message | None:
        """The next message; None once the node closed the connection."""
        assert self.ws is not None
        try:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
        except TimeoutError:
            raise AssertionError("no message from the node") from None
        if msg.type is not aiohttp.WSMsgType.BINARY:
            return None
        return decode(msg.data)

    async def handshake(self, **over: Any) -> Version:
        await self.send(self.version(**over))
        theirs: Version | None = None
        verack = False
        while theirs is None or not verack:
            msg = await self.recv()
            assert msg is not None, "closed during the handshake"
            if isinstance(msg, Version):
                theirs = msg
                await self.send(Empty(MsgType.VERACK))
            elif isinstance(msg, Empty) and msg.type is MsgType.VERACK:
                verack = True
        return theirs

    async def collect(self, seconds: float) -> list[Message]:
        """Every message the node sends within ``seconds`` (stops early if it closes)."""
        out: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await self.recv(left)
            except AssertionError:
                break
            if msg is None:
                break
            out.append(msg)
        return out

    async def closed_by_node(self, timeout: float = 10.0) -> bool:
        """True if the node closes the connection within ``timeout`` (other msgs skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.recv(deadline - time.monotonic()) is None:
                    return True
            except AssertionError:
                return False
        return False

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


class RawWsPeer:
    """A peer that writes WebSocket frames by hand: several in one write, or a frame cut
    short, which aiohttp's client cannot send."""

    def __init__(self, port: int, local_ip: str) -> None:
        self.port = port
        self.local_ip = local_ip
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, also: bytes = b"") -> None:
        """Open the WebSocket; ``also``: bytes sent in the same write as the upgrade
        request, before the node's answer (the node may then cut it before answering)."""
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(self.local_ip, 0)
        )
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            (f"GET /p2p HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode() + also
        )  # fmt: skip
        try:
            answer = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, ConnectionError):
            assert also, "the node cut the upgrade"
            return
        assert answer.startswith(b"HTTP/1.1 101"), answer

    @staticmethod
    def frame(payload: bytes, declared: int | None = None) -> bytes:
        """A masked binary frame of ``payload`` (its header says ``declared`` bytes: more
        than are given makes a frame cut short)."""
        size = len(payload) if declared is None else declared
        if size < 126:
            head = bytes([0x82, 0x80 | size])
        elif size < 1 << 16:
            head = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            head = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    async def write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def read_message(self, timeout: float = 5.0) -> bytes | None:
        """The payload of the node's next binary frame (control frames skipped); None
        once the node closed the connection or cut it."""
        assert self.reader is not None
        try:
            while True:
                head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
                size = head[1] & 0x7F
                if size == 126:
                    size = int.from_bytes(await self.reader.readexactly(2), "big")
                elif size == 127:
                    size = int.from_bytes(await self.reader.readexactly(8), "big")
                payload = await self.reader.readexactly(size)
                if head[0] & 0x0F == 0x8:  # close
                    return None
                if head[0] & 0x0F == 0x2:
                    return payload
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def closed_by_node(self, timeout: float = 8.0) -> None:
        """Read (and drop) what the node sends until it closes or cuts the connection."""
        deadline = time.monotonic() + timeout
        while await self.read_message(timeout=max(0.0, deadline - time.monotonic())) is not None:
            continue

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def block_hashes(blocks: list[Block]) -> list[bytes]:
    return [b.hash for b in blocks]
