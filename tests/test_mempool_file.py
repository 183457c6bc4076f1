"""node/mempool_file: the pool saved at a clean stop and taken back at the next start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chain.address import address_from_pubkey
from chain.keys import devnet_key
from chain.mempool import Mempool
from chain.network import load_network
from node import mempool_file
from node.mempool_file import MempoolFileError, decode, encode, max_file_bytes
from tests.chainutil import transfer
from tests.p2putil import free_port
from wallet.rpc import RpcClient

NET = load_network("devnet")
RICH = 10**15


def _pool(balances: dict[bytes, tuple[int, int]] | None = None) -> Mempool:
    state = balances or {}
    return Mempool(NET.chain_id, lambda a: state.get(a, (RICH, 0)))


def _txs() -> list:
    to = address_from_pubkey(devnet_key(0).public_key)
    return [transfer(NET, 1, n, to, 5 + n) for n in range(3)] + [transfer(NET, 2, 0, to, 7)]


def test_the_pool_round_trips_with_its_entry_times(tmp_path: Path) -> None:
    pool = _pool()
    now = int(time.time())
    for i, tx in enumerate(_txs()):
        assert pool.add(tx, now - 100 + i).ok
    data = encode(pool)
    got = decode(data, max_file_bytes(pool))
    assert got == [(now - 100 + i, tx) for i, tx in enumerate(_txs())]
    assert mempool_file.save(pool, tmp_path) == 4
    again = _pool()
    assert mempool_file.load(again, tmp_path) == (4, 0)
    by_txid = lambda e: e[1].txid  # noqa: E731 - (taken back lowest nonce first)
    assert sorted(again.entries(), key=by_txid) == sorted(pool.entries(), key=by_txid)


def test_a_late_fee_bump_of_a_low_nonce_leaves_no_gap_on_reload(tmp_path: Path) -> None:
    """Nonce 0 replaced (a higher fee) after its sender's later txs arrived: reloaded
    in arrival order, those would queue behind a gap (and past MAX_NONCE_GAP be
    refused); lowest nonce first, every one comes back, pending."""
    from chain.mempool import MAX_NONCE_GAP

    pool = Mempool(NET.chain_id, lambda a: (RICH, 0), max_bytes=2**26)
    to = address_from_pubkey(devnet_key(0).public_key)
    now = int(time.time())
    count = MAX_NONCE_GAP + 40
    for n in range(count):
        assert pool.add(transfer(NET, 1, n, to, 5), now).ok
    assert pool.add(transfer(NET, 1, 0, to, 5, fee=1_000), now).ok  # the bump, last
    mempool_file.save(pool, tmp_path)
    again = Mempool(NET.chain_id, lambda a: (RICH, 0), max_bytes=2**26)
    assert mempool_file.load(again, tmp_path) == (count, 0)
    assert again.pending_count == count
    assert not (tmp_path / "mempool.dat").exists()  # read once: a crash never brings it back


def test_txs_the_tip_no_longer_allows_and_expired_ones_are_dropped(tmp_path: Path) -> None:
    pool = _pool()
    now = int(time.time())
    txs = _txs()
    for tx in txs[:3]:
        assert pool.add(tx, now).ok
    assert pool.add(txs[3], now - pool.expiry_s - 10).ok  # (entered long ago)
    mempool_file.save(pool, tmp_path)
    sender1 = txs[0].sender
    later = _pool({sender1: (RICH, 2)})  # a block confirmed key 1's nonces 0 and 1
    assert mempool_file.load(later, tmp_path, now=now) == (1, 3)
    assert [tx.txid for _, tx in later.entries()] == [txs[2].txid]


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda d: b"notours!" + d[8:], "not a pouw mempool file"),
        (lambda d: d[:-3], "cannot fit|cut short"),
        (lambda d: d + b"\0", "bytes after the last entry"),
        (lambda d: d[:8] + (10**6).to_bytes(4, "little") + d[12:], "cannot fit"),
        (lambda d: d[:4], "cut short before its header"),
    ],
)
def test_a_damaged_file_is_refused_and_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, said: str
) -> None:
    pool = _pool()
    for tx in _txs():
        pool.add(tx, int(time.time()))
    data = damage(encode(pool))
    with pytest.raises(MempoolFileError, match=said):
        decode(data, max_file_bytes(pool))
    (tmp_path / "mempool.dat").write_bytes(data)
    fresh = _pool()
    assert mempool_file.load(fresh, tmp_path) == (0, 0) and len(fresh) == 0
    assert re.search(said, caplog.text) and "the pool starts empty" in caplog.text
    assert not (tmp_path / "mempool.dat").exists() and (tmp_path / "mempool.dat.bad").exists()


def test_a_file_larger_than_a_full_pool_is_not_read(tmp_path: Path) -> None:
    pool = Mempool(NET.chain_id, lambda a: (RICH, 0), max_bytes=4096)
    (tmp_path / "mempool.dat").write_bytes(b"\0" * (max_file_bytes(pool) + 1))
    assert mempool_file.load(pool, tmp_path) == (0, 0)
    assert (tmp_path / "mempool.dat.bad").exists()


def test_a_node_stopped_by_sighup_keeps_its_pool(tmp_path: Path) -> None:
    """A wallet's tx sent to a node that stops (here SIGHUP: a closed terminal) before
    any block takes it is in the pool again after the restart; the stop is clean. A
    node started with SIGHUP ignored (nohup) keeps running through one."""
    ports = ["--p2p-port", str(free_port()), "--rpc-port", str(free_port()),
             "--blob-port", str(free_port()), "--progress", "never"]  # fmt: skip
    cmd = [sys.executable, "-m", "node.cli", "node", "--network", "devnet", "--datadir",
           str(tmp_path), "--nop2p", *ports]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tx = transfer(NET, 1, 0, address_from_pubkey(devnet_key(3).public_key), 12_345)

    def up(nohup: bool = False) -> tuple[subprocess.Popen[str], RpcClient]:
        ignore = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, preexec_fn=ignore)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                rpc = RpcClient.from_options(f"http://127.0.0.1:{ports[3]}", "devnet", tmp_path)
                rpc.call("getblockcount")
                return proc, rpc
            except Exception:  # noqa: BLE001 - not up yet
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
                time.sleep(0.2)

    proc, rpc = up()
    try:
        assert rpc.call("sendrawtransaction", tx.to_bytes().hex()) == tx.txid.hex()
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "mempool: 1 txs saved" in out and "node stopped" in out, out
        assert not (tmp_path / "devnet" / ".cookie").exists()
        proc, rpc = up(nohup=True)  # (as `nohup pouw node`: SIGHUP ignored, and kept so)
        assert rpc.call("getrawmempool") == [tx.txid.hex()]
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None and rpc.call("getblockcount") == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    assert "mempool: 1 txs taken back from mempool.dat (0 no longer valid)" in out, out


def test_an_entry_time_from_the_future_counts_as_now(tmp_path: Path) -> None:
    """A saved entry time past now (a clock set back, a doctored file, up to 2^64 - 1)
    is taken as now: the transaction then expires with the pool's expiry like any other
    (before, it never expired)."""
    pool = _pool()
    now = int(time.time())
    tx = _txs()[3]
    assert pool.add(tx, 2**64 - 1).ok
    assert mempool_file.save(pool, tmp_path) == 1
    again = _pool()
    assert mempool_file.load(again, tmp_path, now=now) == (1, 0)
    assert [when for when, _ in again.entries()] == [now]
