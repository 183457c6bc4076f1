"""The Node: opens the datadir and the chain, runs its services, shuts down cleanly.

Every block and transaction, whatever its source (own miner, peers, RPC), enters
through ``submit_block`` / ``submit_transaction`` on the event loop thread; what
changed is announced through ``events``. Services (P2P, RPC, ...) are started in
order and stopped in reverse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from contextlib import suppress
from typing import Protocol

from chain.address import address_from_pubkey, decode_address, encode_address
from chain.block import Block
from chain.chainstate import ChainState, ChainStateError, ProcessResult
from chain.job_record import JobStatus, escrow_total, live_jobs
from chain.keys import PrivateKey, devnet_key
from chain.mempool import Mempool
from chain.mempool_result import MempoolReject, MempoolResult
from chain.network import Network, load_network
from chain.state import Account, account_key
from chain.storage import ChainDB, CorruptionError, StorageError, open_chain, reindex_command
from chain.tx import Transaction
from chain.validation import BlockReject, defer
from compute.engine import MiningEngine
from compute.select import gpu_usable, select_engine
from node import mempool_file
from node.blobs import BlobService
from node.config import NodeConfig
from node.events import NodeEvents, TipChange
from node.market_miner import MarketMiner, market_miner_for
from node.metrics import MetricsService, NodeMetrics
from node.miner import Miner
from node.progress import progress_service
from node.rpc.ops import NodeRpcService
from p2p.service import P2PService
from wallet.wallet import Wallet, WalletError, default_keystore_path

log = logging.getLogger("pouw.node")


# A block up to 2 h ahead is held, not rejected; checking every few seconds lets it in
# soon after its time comes without measurable cost.
HELD_BLOCK_RETRY_S = 5.0


class NodeError(Exception):
    """A setting or the datadir prevents the node from starting; the message says why."""


def open_chainstate(network: Network, config: NodeConfig) -> tuple[ChainDB, ChainState]:
    """Lock the datadir, open the chain (after ``--repair``, ``--reindex`` or finishing
    an interrupted reindex) and return both; a storage fault raises StorageError."""
    from chain import reindex as rebuild

    if config.repair:
        log.info("repairing the chain database in %s (LevelDB repair)", config.network_dir)
    db = open_chain(config.network_dir, network=network.name, repair=config.repair)
    try:
        if config.reindex or config.repair:
            chain = rebuild.reindex(db, network)
        elif db.reindexing():
            log.warning("finishing a --reindex that was interrupted")
            chain = rebuild.resume(db, network)
        else:
            try:
                chain = ChainState(db, network)
            except CorruptionError as exc:
                if "--reindex" in str(exc):
                    raise
                fix = reindex_command(db.path, network.name)
                raise CorruptionError(
                    f"{exc}: run `{fix}` (it rebuilds the index and the state from the "
                    "stored blocks)"
                ) from exc
        return db, chain
    except BaseException:
        db.close()
        raise


def miner_address(network: Network, text: str | None) -> bytes:
    if text is not None:
        return decode_address(text, network.hrp)
    if network.name != "devnet":
        raise NodeError("--mine needs --miner-address ADDRESS outside the devnet")
    address = address_from_pubkey(devnet_key(0).public_key)
    log.warning(
        "no --miner-address: mining to devnet test key 0 (%s)", encode_address(network.hrp, address)
    )
    return address


def mining_engine(preferred: str | None) -> MiningEngine:
    """The engine for --mine; says plainly when no GPU can be used and the CPU mines."""
    if preferred is None:
        ok, why = gpu_usable()
        if not ok:
            log.warning(
                "GPU mining unavailable (%s): mining on the CPU with numpy, much slower. "
                "`pouw miner --list-devices` shows what was found; `pip install 'pouw[gpu]'` "
                "installs CuPy for CUDA 12 (or 'pouw[gpu-cuda13]').", why,
            )  # fmt: skip
    return select_engine(preferred)


class Service(Protocol):
    """A part of the node with a lifetime: the P2P server, the RPC server, ..."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.network = load_network(config.network, config.genesis_file)
        if self.network.name != config.network:
            raise NodeError(
                f"--genesis-file describes network {self.network.name!r}, "
                f"but --network is {config.network!r}"
            )
        self.db, self.chain = open_chainstate(self.network, config)
        self.fault: StorageError | ChainStateError | None = None
        self.db.on_fault = self.storage_fault
        self.mempool = Mempool(self.network.chain_id, self._account)
        taken, dropped = mempool_file.load(self.mempool, config.network_dir)
        if taken or dropped:
            log.info("mempool: %d txs taken back from %s (%d no longer valid)",
                     taken, mempool_file.FILENAME, dropped)  # fmt: skip
        self.events = NodeEvents()
        self.metrics = NodeMetrics(self)
        self.metrics.market_source = self._market_totals
        self.services: list[Service] = []
        self.miner: Miner | None = None
        self._mining_key: PrivateKey | None = None  # (run: --miner-wallet, unlocked first)
        self._mining_address = b""  # (run, with --mine: checked before any service starts)
        self.came_up = False  # every service started ("node up" said)
        self.started = time.time()
        self._stopping = asyncio.Event()
        self._add_services()

    def _add_services(self) -> None:
        if self.config.p2p:
            self.services.append(P2PService(self))
        if self.config.rpc:
            self.services.append(NodeRpcService(self))
            if self.config.blobs:  # after RPC: blob uploads take the RPC's credentials
                self.services.append(BlobService(self))
        if self.config.metrics:
            self.services.append(MetricsService(self))
        progress = progress_service(self)
        if progress is not None:
            self.services.append(progress)

    def _market_totals(self) -> tuple[int, int]:
        """(open jobs, base units escrowed by unsettled jobs), for the metrics."""
        jobs = [job for _, job in live_jobs(self.chain.db.iter_state, self.chain.state_get)]
        return sum(j.status == JobStatus.OPEN for j in jobs), escrow_total(jobs)

    def _account(self, address: bytes) -> tuple[int, int]:
        acct = self.account(address)
        return acct.balance, acct.nonce

    def account(self, address: bytes) -> Account:
        return Account.from_bytes(self.chain.state_get(account_key(address)))

    def submit_transaction(self, tx: Transaction, local: bool = False) -> MempoolResult:
        """Every transaction enters here (RPC, peers); one a local client (RPC) sends
        again while the pool holds it is announced again (``tx_resent``)."""
        result = self.mempool.add(tx, int(time.time()))
        if result.ok:
            self.events.tx_accepted.emit(tx)
        elif local and result.reject is MempoolReject.ALREADY_KNOWN:
            self.events.tx_resent.emit(tx)
        return result

    def storage_fault(self, exc: StorageError | ChainStateError) -> None:
        """The database failed (full disk, damage): stop the node; ``run`` re-raises the
        first fault so that the command line reports it in one line and exits."""
        if self.fault is None:
            self.fault = exc
            log.debug("storage fault: %s", exc)
        self.request_stop()

    def submit_block(self, block: Block) -> ProcessResult:
        """Every block enters here (own miner, peers, RPC submitblock)."""
        if self.fault is not None:
            return ProcessResult(defer(BlockReject.STORAGE, "the node is stopping"))
        try:
            result = self.chain.process_block(block)
        except (StorageError, ChainStateError) as exc:
            # Nothing half-done is kept: every write is one batch. Stop, and tell callers
            # (peers, RPC, the miner) to come back later rather than blame the block.
            self.storage_fault(exc)
            return ProcessResult(defer(BlockReject.STORAGE, "the node is stopping"))
        self.metrics.block_processed(result)
        if result.check.ok and not result.duplicate:
            self.events.block_stored.emit(block)
        if result.disconnected:
            log.info("reorg: %d blocks disconnected", result.reorg_depth)
            now = int(time.time())
            for old in reversed(result.disconnected):
                self.mempool.readd(old.txs, now)
            self.mempool.revalidate()
        if result.connected:
            for new in result.connected:
                self.mempool.remove_confirmed(new.txs)
            if self.miner is not None:
                self.miner.interrupt()
        if result.connected or result.disconnected:
            self.events.tip_changed.emit(
                TipChange(tuple(result.disconnected), tuple(result.connected))
            )
        return result

    def request_stop(self) -> None:
        self._stopping.set()
        if self.miner is not None:
            self.miner.interrupt()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal or SSH session stops the node cleanly (cookie
        # removed, address book and pool saved), as Ctrl-C does; unless it is ignored
        # (`nohup pouw node`: meant to outlive the terminal)
        stops = [signal.SIGINT, signal.SIGTERM]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            stops.append(signal.SIGHUP)
        for sig in stops:
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        started: list[Service] = []
        # the mining key before any service starts: a wallet that does not unlock is
        # said before peers connect and sync begins, not after
        if self.config.mine:
            self._mining_key = self._miner_key()
            self._mining_address = self._mine_to(self._mining_key)
        try:
            for service in self.services:
                await service.start()
                started.append(service)
            tip = self.chain.tip  # said once every service listens: a bind failure comes first
            self.came_up = True
            log.info(
                "node up: network=%s height=%d tip=%s datadir=%s",
                self.network.name, tip.height, tip.hash.hex(), self.config.network_dir,
            )  # fmt: skip
            await self._run_until_stopped()
        finally:
            for service in reversed(started):
                try:
                    await service.stop()
                except OSError as exc:  # a full disk, say: one line, keep stopping
                    log.error("stopping %s failed: %s", service.name, exc)
                except Exception:  # noqa: BLE001 - keep stopping the others
                    log.exception("stopping %s failed", service.name)
        if self.fault is not None:
            raise self.fault

    def _miner_key(self) -> PrivateKey | None:
        """The key that signs job results: --miner-wallet, or devnet key 0 on the devnet."""
        if self.config.miner_wallet is not None:
            path = default_keystore_path(
                self.config.datadir, self.network.name, self.config.miner_wallet
            )
            password = os.environ.get("POUW_WALLET_PASSWORD")
            if password is None:
                raise NodeError("--miner-wallet needs its password in $POUW_WALLET_PASSWORD")
            try:
                key = Wallet.load(path, password, self.network).signing_key
            except WalletError as exc:
                raise NodeError(f"--miner-wallet {self.config.miner_wallet}: {exc}") from exc
            given = self.config.miner_address
            if given is not None and miner_address(self.network, given) != address_from_pubkey(
                key.public_key
            ):
                raise NodeError(
                    f"--miner-wallet {self.config.miner_wallet} holds "
                    f"{encode_address(self.network.hrp, address_from_pubkey(key.public_key))}, "
                    f"not --miner-address {given}: leave --miner-address out (the wallet's "
                    "address mines) or name the wallet that holds it"
                )
            return key
        if self.network.name == "devnet" and self.config.miner_address is None:
            return devnet_key(0)
        return None

    def _mine_to(self, key: PrivateKey | None) -> bytes:
        """The address blocks pay: --miner-address, else the key's (--miner-wallet, or
        devnet key 0 on the devnet, said so). A NodeError outside the devnet without
        either, before any service starts."""
        if key is None or self.config.miner_address is not None:
            return miner_address(self.network, self.config.miner_address)
        address = address_from_pubkey(key.public_key)
        if self.config.miner_wallet is None:
            log.warning(
                "no --miner-address: mining to devnet test key 0 (%s)",
                encode_address(self.network.hrp, address),
            )
        return address

    def _market_miner(self, key: PrivateKey | None, address: bytes) -> MarketMiner | None:
        """Paid jobs for the miner, when the market is on and a key can sign results."""
        blobs = next((s for s in self.services if isinstance(s, BlobService)), None)
        if not self.config.market or blobs is None:
            return None
        if key is None or address_from_pubkey(key.public_key) != address:
            log.warning(
                "mining filler only: paid jobs need --miner-wallet NAME holding the key of "
                "the miner address (it signs the result commits)"
            )
            return None
        return market_miner_for(
            self, key, min_bounty_per_mac=self.config.min_bounty_per_mac
        )

    async def _retry_held_blocks(self) -> None:
        """Blocks stamped ahead of our clock wait in the chain; offer them again."""
        while True:
            await asyncio.sleep(HELD_BLOCK_RETRY_S)
            for block in self.chain.pop_held():
                self.submit_block(block)

    async def _run_until_stopped(self) -> None:
        tasks = [
            asyncio.create_task(self._stopping.wait()),
            asyncio.create_task(self._retry_held_blocks()),
        ]
        if self.config.mine:
            key, address = self._mining_key, self._mining_address
            self.miner = Miner(
                self.chain,
                mining_engine(self.config.engine),
                address,
                submit=self.submit_block,
                select_txs=self.mempool.select,
                market=self._market_miner(key, address),
            )
            tasks.append(asyncio.create_task(self.miner.run(self.config.max_blocks)))
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        self.request_stop()
        for task in pending:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        for task in done:
            task.result()

    def close(self) -> None:
        if self.miner is not None:
            self.miner.close()
        saved = mempool_file.save(self.mempool, self.config.network_dir)
        if saved:
            log.info("mempool: %d txs saved to %s", saved, mempool_file.FILENAME)
        self.db.close()
        if self.came_up:  # (a start refused or failed says its own error instead)
            log.info("node stopped at height %d", self.chain.tip.height)
