"""Node CPU-seconds per attacker MB for orphan, transaction and addr floods.

One `pouw node` process (the easy test devnet of tests/p2putil.py, 20 pre-mined blocks)
is flooded over loopback by scripted peers (tests/p2putil.WirePeer), each connecting
from its own 127.0.x.y address; a peer the node disconnects is replaced by one from the
next address, as an attacker with many addresses would do. The node's CPU time is read
from /proc/PID/stat before and after each flood; the bytes are the frames the attacker
sent. Floods:
  orphan  blocks of ~27,000 validly signed transactions (~4 MB) whose parent the node
          lacks, each announced by inv, sent when asked, then pushed again 5 times
  tx      validly signed transactions from an unfunded sender (policy rejects), each
          announced by inv and sent when asked, then announced again; a dropped
          attacker goes on from a fresh address
  addr    addr messages of 1,000 fresh addresses, 5 per connection
Prints name=value lines: <flood>_attacker_mb, <flood>_node_cpu_s, <flood>_cpu_s_per_mb,
plus rpc_p99_ms (getblockcount while flooding).
Usage: .venv/bin/python bench/bench_p2p_flood.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.block import Block  # noqa: E402
from chain.genesis import genesis_block  # noqa: E402
from chain.network import Network  # noqa: E402
from chain.tx import Transaction  # noqa: E402
from p2p.protocol import Addr, BlockMsg, GetData, Inv, InvType, TxMsg, encode  # noqa: E402
from tests.chainutil import address_of, transfer  # noqa: E402
from tests.p2putil import NodeProc, WirePeer, free_port, premine, write_genesis  # noqa: E402
from tests.test_p2p_attacks import _PROBE, _two_blocks_ahead  # noqa: E402
from wallet.rpc import RpcClient  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


class Attacker:
    """Scripted peers from successive loopback addresses; counts the bytes sent."""

    def __init__(self, port: int, network: Network, subnet: int) -> None:
        self.port, self.network, self.subnet = port, network, subnet
        self.ghash = genesis_block(network).hash
        self.n = 0
        self.sent = 0
        self.peer: WirePeer | None = None

    async def fresh(self) -> WirePeer:
        if self.peer is not None:
            await self.peer.close()
        self.n += 1
        ip = f"127.{self.subnet}.{self.n // 250}.{self.n % 250 + 1}"
        self.peer = WirePeer(self.port, self.network, self.ghash, ip)
        await self.peer.connect()
        await self.peer.handshake()
        return self.peer

    async def send(self, data: bytes) -> bool:
        """False once the node has closed this peer."""
        assert self.peer is not None and self.peer.ws is not None
        if self.peer.ws.closed:
            return False
        try:
            await self.peer.send_raw(data)
        except (ConnectionError, RuntimeError):
            return False
        self.sent += len(data)
        return True

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
            self.peer = None

    async def asked(self, want: int, timeout: float = 5.0) -> set[bytes]:
        """Hashes asked for by getdata, until ``want`` of them or ``timeout``."""
        assert self.peer is not None
        out: set[bytes] = set()
        deadline = time.monotonic() + timeout
        while len(out) < want and (left := deadline - time.monotonic()) > 0:
            try:
                msg = await self.peer.recv(left)
            except AssertionError:
                break
            if msg is None:
                break
            if isinstance(msg, GetData):
                out |= {h for _, h in msg.items}
        return out

    async def drain(self, seconds: float) -> list[object]:
        assert self.peer is not None
        return list(await self.peer.collect(seconds))


def big_orphans(base: Block, network: Network, count: int, txs_per_block: int) -> list[Block]:
    txs: list[Transaction] = [
        transfer(network, 90 + i % 10, i // 10, address_of(3), 1000) for i in range(txs_per_block)
    ]
    return [
        Block(dataclasses.replace(base.header, parent=os.urandom(32)), tuple(txs))
        for _ in range(count)
    ]


async def orphan_flood(a: Attacker, orphans: list[Block]) -> None:
    await a.fresh()
    for block in orphans:
        frame = encode(BlockMsg(block))
        await a.send(encode(Inv(((InvType.BLOCK, block.hash),))))
        await a.drain(0.5)
        if not await a.send(frame):
            await a.fresh()
            continue
        for _ in range(5):
            if not await a.send(frame):
                await a.fresh()
                break
        await a.drain(0.2)
    await a.close()


async def tx_flood(a: Attacker, network: Network, count: int) -> None:
    txs = [transfer(network, 80 + i % 10, i // 10, address_of(3), 1000) for i in range(count)]
    await a.fresh()
    i, retried = 0, False
    while i < count:
        chunk = txs[i : i + 100]
        for _ in range(2):  # announced again: must not be fetched again
            await a.send(encode(Inv(tuple((InvType.TX, t.txid) for t in chunk))))
        asked = await a.asked(len(chunk))
        if not asked and not retried:  # dropped: go on from a fresh address
            await a.fresh()
            retried = True
            continue
        for t in chunk:
            if t.txid in asked and not await a.send(encode(TxMsg(t))):
                break
        i, retried = i + 100, False
    await a.close()


async def addr_flood(a: Attacker, messages: int) -> None:
    await a.fresh()
    for m in range(messages):
        if m % 5 == 0 and m:
            await a.fresh()
        addrs = tuple(
            (f"10.{m % 250}.{i // 250}.{i % 250 + 1}", 8333, int(time.time())) for i in range(1000)
        )
        await a.send(encode(Addr(addrs)))
    await a.drain(0.5)
    await a.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and smaller floods")
    args = ap.parse_args()
    orphans, orphan_txs, tx_count, addr_msgs = (
        (3, 8000, 600, 40) if args.quick else (6, 27000, 3000, 200)
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-p2p-flood-"))
    node: NodeProc | None = None
    try:
        genesis = tmp / "genesis.json"
        network = write_genesis(genesis, 20)
        premine(tmp / "node", network, 20)
        good, _ = _two_blocks_ahead(tmp / "node", tmp / "scratch", network)
        blocks = big_orphans(good, network, orphans, orphan_txs)
        rpc_port = free_port()
        node = NodeProc(tmp / "node", genesis)
        node.start("--rpc", "--rpc-port", str(rpc_port), "--noblobs")
        node.wait_log("p2p listening")
        deadline = time.monotonic() + 60
        while True:
            try:  # the cookie file appears once RPC is up
                rpc = RpcClient.from_datadir(node.datadir, "devnet", rpc_port)
                rpc.call("getblockcount")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or node.proc is None or node.proc.poll() is not None:
                    print(node.log()[-3000:], file=sys.stderr)
                    raise
                time.sleep(0.2)
        assert node.proc is not None
        pid = node.proc.pid
        probe = subprocess.Popen(  # RPC latency from its own process
            [sys.executable, "-c", _PROBE, str(node.datadir), str(rpc_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        for name, subnet, run in (
            ("orphan", 1, lambda a: orphan_flood(a, blocks)),
            ("tx", 2, lambda a: tx_flood(a, network, tx_count)),
            ("addr", 3, lambda a: addr_flood(a, addr_msgs)),
        ):
            a = Attacker(node.port, network, subnet)
            c0 = cpu_s(pid)
            asyncio.run(run(a))
            time.sleep(1.0)  # let the node finish what it received
            used = cpu_s(pid) - c0
            mb = a.sent / 1e6
            print(f"{name}_attacker_mb={mb:.1f}")
            print(f"{name}_attacker_connections={a.n}")
            print(f"{name}_node_cpu_s={used:.2f}")
            print(f"{name}_cpu_s_per_mb={used / mb:.3f}")
        out, _ = probe.communicate(timeout=30)
        lat = json.loads(out)
        print(f"rpc_p99_ms={statistics.quantiles(lat, n=100)[98] * 1000:.1f}")
    finally:
        if node is not None:
            node.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
