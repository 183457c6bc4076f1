"""Helpers for compute-market tests: a market devnet, job operands, mining a job block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from chain.block import Block
from chain.chainstate import ChainState
from chain.keys import devnet_key
from chain.network import Network
from chain.state import Account, account_key
from compute.numpy_engine import NumpyEngine
from consensus.commitments import commit_cols, commit_rows
from node.template import JobRef, build_template
from tests.chainutil import Clock, easy_devnet, open_db

# Windows of a few seconds: blocks in these tests are stamped one second apart.
MARKET = {
    "claim_slack_s": 6, "claim_rate": 10**12, "bond_bps": 1000, "min_bond": 1000,
    "challenge_s": 6, "reveal_s": 4, "probe_deposit": 500, "min_window_blocks": 2,
    "max_open_s": 1000,
}  # fmt: skip
_ENGINE = NumpyEngine()


def exact_product(a: npt.NDArray[np.integer], b: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """A @ B exactly, for int8 entries: float64 BLAS (every partial sum is an integer of
    magnitude below 2^53 for any k under 2^38), not NumPy's int64 loops, which take
    seconds for a 768x2048x512 product."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def market_devnet() -> Network:
    return easy_devnet(market=MARKET)


def new_chain(path: Path, network: Network) -> ChainState:
    db = open_db(path, network)
    return ChainState(db, network, Clock(network.genesis_time + 1))


def operands(m: int, k: int, n: int, seed: int = 1) -> tuple[npt.NDArray[np.int8], ...]:
    rng = np.random.default_rng(seed)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    return a, b


def job_ref(job_id: bytes, a: npt.NDArray[np.int8], b: npt.NDArray[np.int8]) -> JobRef:
    return JobRef(job_id, commit_rows(a), commit_cols(b))


def mine_job_block(
    chain: ChainState,
    miner: bytes,
    job: JobRef,
    a: npt.NDArray[np.int8],
    b: npt.NDArray[np.int8],
    txs: list | None = None,  # type: ignore[type-arg]
    shape: tuple[int, int, int] | None = None,
) -> tuple[Block, npt.NDArray[np.int32]]:
    """A valid block mining ``a . b`` under ``job`` (new timestamps until a tile wins)."""
    shape = shape or (a.shape[0], a.shape[1], b.shape[1])
    clock = chain.clock
    for _ in range(50):
        clock.now = max(clock.now, chain.tip_header.timestamp) + 1  # type: ignore[attr-defined]
        template = build_template(chain, miner, list(txs or []), shape, int(clock()), job=job)
        out = _ENGINE.mine(chain.network.pouw, a, b, template)
        if out.seals:
            assert out.product is not None
            return template.block_with_seal(out.work, out.seals[0]), out.product
    raise AssertionError("no winning tile in 50 products")


def balance(chain: ChainState, address: bytes) -> int:
    return Account.from_bytes(chain.state_get(account_key(address))).balance


def key(i: int):  # type: ignore[no-untyped-def]
    return devnet_key(i)


def seal_named(
    chain: ChainState, miner: bytes, job_id: bytes, a: npt.NDArray[np.int8],
    b: npt.NDArray[np.int8],
) -> Block:  # fmt: skip
    """A well-sealed block that names ``job_id`` with the commitments of ``a``, ``b``,
    whatever the job says (its state root is the filler one: rules fire before it)."""
    from dataclasses import replace

    from node.template import BlockTemplate

    shape = (a.shape[0], a.shape[1], b.shape[1])
    clock = chain.clock
    for _ in range(50):
        clock.now = max(clock.now, chain.tip_header.timestamp) + 1  # type: ignore[attr-defined]
        t = build_template(chain, miner, [], shape, int(clock()))
        header = replace(t.header, job_id=job_id, h_a=commit_rows(a), h_b=commit_cols(b))
        t = BlockTemplate(header, t.txs)
        out = _ENGINE.mine(chain.network.pouw, a, b, t)
        if out.seals:
            return t.block_with_seal(out.work, out.seals[0])
    raise AssertionError("no winning tile in 50 products")
