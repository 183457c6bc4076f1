"""The chain core with real LevelDB and real mined blocks: restarts, reorgs, rejections."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from chain.block import Block
from chain.chainstate import ChainState
from chain.index_record import BlockStatus
from chain.job_record import PREFIX_JOB, Job, escrow_total
from chain.reindex import reindex
from chain.state import KEY_SUPPLY, PREFIX_ACCOUNT, PREFIX_REWARD, Account
from chain.state_tree import StateTree
from chain.tx import Transaction, transactions_root
from chain.validation import BlockReject, Verdict, invalid
from consensus.subsidy import block_subsidy
from node.template import BlockTemplate, build_template
from tests.chainutil import (
    MINER,
    Clock,
    address_of,
    easy_devnet,
    mine_block,
    open_db,
    seal_template,
    transfer,
)

NET = easy_devnet()
T0 = NET.genesis_time + 1000


def new_chain(path: Path, clock: Clock | None = None) -> ChainState:
    return ChainState(open_db(path, NET), NET, clock or Clock(T0))


def extend(
    chain: ChainState, count: int, salt: bytes = b"", txs_at: dict | None = None
) -> list[Block]:
    blocks = []
    for _ in range(count):
        chain.clock.now += 1  # type: ignore[attr-defined]
        txs = (txs_at or {}).get(chain.tip.height + 1, [])
        block = mine_block(chain, txs, salt=salt)
        result = chain.process_block(block)
        assert result.accepted, result.check
        blocks.append(block)
    return blocks


def state_dict(chain: ChainState) -> dict[bytes, bytes]:
    return dict(chain.db.iter_state())


def check_supply(chain: ChainState) -> None:
    """Balances + immature rewards + coins held by jobs = genesis funds + subsidies."""
    state = state_dict(chain)
    held = escrow_total([Job.from_bytes(v) for k, v in state.items() if k[:1] == PREFIX_JOB])
    balances = sum(
        Account.from_bytes(v).balance for k, v in state.items() if k[:1] == PREFIX_ACCOUNT
    )
    immature = sum(
        int.from_bytes(v[20:28], "big") for k, v in state.items() if k[:1] == PREFIX_REWARD
    )
    assert balances + immature + held == int.from_bytes(state[KEY_SUPPLY], "big")
    minted = sum(block_subsidy(NET.subsidy, h) for h in range(1, chain.tip.height + 1))
    assert int.from_bytes(state[KEY_SUPPLY], "big") == NET.genesis_funds + minted


def _supply_run(tmp_path: Path, blocks: int, seed: int) -> None:
    """Random transfers between the funded keys; the supply holds at every block."""
    rng = random.Random(seed)
    chain = new_chain(tmp_path / "supply")
    nonces = [0] * 5
    for _ in range(blocks):
        txs = []
        for _ in range(rng.randrange(4)):
            sender = rng.randrange(5)
            amount = rng.randrange(1, 10**9)
            txs.append(transfer(NET, sender, nonces[sender], address_of(rng.randrange(8)), amount))
            nonces[sender] += 1
        extend(chain, 1, txs_at={chain.tip.height + 1: txs})
        check_supply(chain)
    chain.db.close()


def test_supply_invariant_at_every_block(tmp_path: Path) -> None:
    _supply_run(tmp_path, blocks=40, seed=1)


@pytest.mark.slow
def test_supply_invariant_long_devnet_run(tmp_path: Path) -> None:
    """The long run: pytest -m slow tests/test_chainstate.py"""
    _supply_run(tmp_path, blocks=1000, seed=2)


def test_mine_twenty_blocks_and_restart(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    pay = {5: [transfer(NET, 0, 0, address_of(1), 12345)]}
    extend(chain, 20, txs_at=pay)
    check_supply(chain)
    tip, root = chain.tip.hash, chain.tip_header.state_root
    assert chain.tip.height == 20
    chain.db.close()
    again = new_chain(tmp_path / "a")
    assert again.tip.hash == tip and again.tree.root == root
    assert again.tip_header.state_root == root
    state = state_dict(again)
    assert Account.from_bytes(state[PREFIX_ACCOUNT + address_of(1)]).balance == 10**14 + 12345
    assert PREFIX_ACCOUNT + MINER in state  # matured rewards were credited
    again.db.close()


def test_reindex_rebuilds_the_same_state(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    extend(chain, 8, txs_at={2: [transfer(NET, 0, 0, address_of(2), 7)]})
    tip, before = chain.tip.hash, state_dict(chain)
    db = chain.db
    rebuilt = reindex(db, NET)
    assert rebuilt.tip.hash == tip
    assert state_dict(rebuilt) == before
    db.close()


@pytest.mark.parametrize("depth", [1, 30])
def test_reorg_there_and_back_matches_fresh_replay(tmp_path: Path, depth: int) -> None:
    main = new_chain(tmp_path / "main")
    extend(main, 3)
    fork_tip = main.tip.hash
    side = new_chain(tmp_path / "side")
    for h in range(1, 4):
        assert side.process_block(main.get_block(main.active_hash(h))).accepted
    # Branch A: depth blocks with a payment 0 -> 1; branch B: depth+1 blocks paying 0 -> 2.
    a_blocks = extend(main, depth, salt=b"A", txs_at={4: [transfer(NET, 0, 0, address_of(1), 111)]})
    b_blocks = extend(
        side, depth + 1, salt=b"B", txs_at={4: [transfer(NET, 0, 0, address_of(2), 222)]}
    )
    state_a = state_dict(main)
    for block in b_blocks:
        result = main.process_block(block)
        assert result.check.ok
    assert main.tip.hash == side.tip.hash
    assert state_dict(main) == state_dict(side)
    check_supply(main)
    # And back: branch A grows past B.
    main_fork = new_chain(tmp_path / "again")
    for h in range(1, 4):
        main_fork.process_block(main.get_block(main.active_hash(h)))
    for block in a_blocks:
        assert main_fork.process_block(block).accepted
    extra = extend(main_fork, 2, salt=b"A2")
    for block in extra:
        main.process_block(block)
    assert main.tip.hash == main_fork.tip.hash
    assert state_dict(main) == state_dict(main_fork)
    assert state_dict(main) != state_a
    # The state root equals a from-scratch build of the stored state.
    assert StateTree.build(state_dict(main).items()).root == main.tree.root
    for c in (main, side, main_fork):
        c.db.close()
    assert fork_tip


def _resealed(chain: ChainState, block: Block, **fields: object) -> Block:
    """A block with changed header fields, mined again so that only those fields are wrong."""
    header = dataclasses.replace(block.header, **fields)
    return Block(header, block.txs)


def test_block_rejections(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    extend(chain, 2)
    chain.clock.now += 1  # type: ignore[attr-defined]
    good = mine_block(chain, [transfer(NET, 0, 0, address_of(1), 5)])

    def reason(block: Block) -> str | None:
        r = chain.process_block(block).check
        return r.reason.value if r.reason else None

    # A changed prefix field breaks the seal (the seeds bind the whole prefix).
    assert reason(_resealed(chain, good, timestamp=good.header.timestamp + 1)) == "bad-seal"
    assert reason(_resealed(chain, good, version=2)) == "bad-version"
    # Naming a job changes the prefix, so an old seal fails (job rules: test_market_*.py).
    assert reason(_resealed(chain, good, job_id=b"\x01" * 32)) == "bad-seal"
    assert reason(_resealed(chain, good, seal=b"\x00" * 7)) == "bad-seal-encoding"
    assert reason(Block(good.header, ())) == "bad-tx-root"
    dup = good.txs + good.txs
    assert reason(_sealed_variant(chain, list(dup))) == "duplicate-tx"
    orphan = _resealed(chain, good, parent=b"\x07" * 32)
    assert chain.process_block(orphan).check.reason is BlockReject.BAD_SEAL
    assert chain.process_block(good).accepted
    assert chain.process_block(good).duplicate


def _sealed_variant(chain: ChainState, txs: list[Transaction], **fields: object) -> Block:
    """A properly sealed block on the tip whose header differs from a valid one in ``fields``."""
    shape = (NET.filler.m, NET.filler.k, NET.filler.n)
    valid = build_template(chain, MINER, [], shape, int(chain.clock()))
    header = dataclasses.replace(valid.header, tx_root=transactions_root(txs), **fields)
    return seal_template(chain, BlockTemplate(header, tuple(txs)))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda h: dataclasses.replace(h, height=h.height + 1), BlockReject.BAD_HEIGHT),
        (lambda h: dataclasses.replace(h, timestamp=h.timestamp - 1000), BlockReject.TIME_TOO_OLD),
        (lambda h: dataclasses.replace(h, target=h.target - 1), BlockReject.BAD_TARGET),
        (lambda h: dataclasses.replace(h, state_root=b"\x01" * 32), BlockReject.BAD_STATE_ROOT),
    ],
    ids=["height", "time-old", "target", "state-root"],
)
def test_contextual_rejections(tmp_path: Path, mutate, expected: BlockReject) -> None:  # type: ignore[no-untyped-def]
    chain = new_chain(tmp_path / "a")
    extend(chain, 12)
    chain.clock.now += 1  # type: ignore[attr-defined]
    shape = (NET.filler.m, NET.filler.k, NET.filler.n)
    valid = build_template(chain, MINER, [], shape, int(chain.clock()))
    bad = seal_template(chain, BlockTemplate(mutate(valid.header), ()))
    result = chain.process_block(bad)
    assert result.check.reason is expected, result.check
    assert chain.tip.height == 12


def test_future_block_is_held_not_rejected(tmp_path: Path) -> None:
    clock = Clock(T0)
    chain = new_chain(tmp_path / "a", clock)
    extend(chain, 1)
    block = mine_block(chain, now=clock.now + 3 * 3600)
    result = chain.process_block(block)
    assert result.check.verdict is Verdict.DEFER and result.check.reason is BlockReject.TIME_TOO_NEW
    clock.now += 3 * 3600
    [held] = chain.pop_held()
    assert chain.process_block(held).accepted and chain.tip.hash == block.hash
    assert chain.pop_held() == []


@pytest.mark.parametrize(
    ("make_tx", "detail"),
    [
        (lambda: transfer(NET, 0, 5, address_of(1), 1), "nonce-gap"),
        (lambda: transfer(NET, 0, 0, address_of(1), 10**15), "insufficient-balance"),
    ],
)
def test_state_rejections(tmp_path: Path, make_tx, detail: str) -> None:  # type: ignore[no-untyped-def]
    chain = new_chain(tmp_path / "a")
    extend(chain, 1)
    chain.clock.now += 1  # type: ignore[attr-defined]
    result = chain.process_block(_sealed_variant(chain, [make_tx()]))
    assert result.check.reason is BlockReject.BAD_STATE
    assert detail in result.check.detail
    assert chain.tip.height == 1


def test_double_spend_and_cross_chain_replay_rejected(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    extend(chain, 1)
    spend = transfer(NET, 0, 0, address_of(1), 100)
    extend(chain, 1, txs_at={2: [spend]})
    chain.clock.now += 1  # type: ignore[attr-defined]
    again = chain.process_block(_sealed_variant(chain, [spend]))
    assert again.check.reason is BlockReject.BAD_STATE and "nonce-too-low" in again.check.detail
    other_net = easy_devnet(chain_id=NET.chain_id + 1)
    replayed = transfer(other_net, 0, 1, address_of(1), 100)
    result = chain.process_block(_sealed_variant(chain, [replayed]))
    assert result.check.reason is BlockReject.BAD_TX and "wrong-chain-id" in result.check.detail
    assert chain.tip.height == 2


def test_transaction_index_follows_reorgs(tmp_path: Path) -> None:
    main = new_chain(tmp_path / "main")
    side = new_chain(tmp_path / "side")
    extend(main, 1)
    assert side.process_block(main.get_block(main.active_hash(1))).accepted
    pay = transfer(NET, 0, 0, address_of(3), 33)
    extend(main, 1, salt=b"A", txs_at={2: [pay]})
    where = main.db.get_tx_location(pay.txid)
    assert where is not None and where[1:] == (2, 0)
    assert [t for _, _, t in main.db.iter_address_txs(address_of(3))] == [pay.txid]
    for block in extend(side, 2, salt=b"B"):
        main.process_block(block)
    assert main.tip.hash == side.tip.hash
    assert main.db.get_tx_location(pay.txid) is None
    assert list(main.db.iter_address_txs(address_of(3))) == []
    main.db.close()
    side.db.close()


def test_waiting_blocks_are_checked_first(tmp_path: Path) -> None:
    """An orphan cannot prove work at a target above the network's limit, and nothing
    unchecked is kept waiting."""
    chain = new_chain(tmp_path / "a")
    extend(chain, 1)
    shape = (NET.filler.m, NET.filler.k, NET.filler.n)
    valid = build_template(chain, MINER, [], shape, int(chain.clock()))
    easy = dataclasses.replace(valid.header, target=2**256 - 1, parent=b"\x05" * 32)
    orphan = seal_template(chain, BlockTemplate(easy, ()))
    result = chain.process_block(orphan)
    assert result.check.reason is BlockReject.BAD_TARGET
    assert chain.waiting.orphans == {}  # the pool itself is what is checked


def test_transaction_bytes_cap_is_checked_before_decoding() -> None:
    from chain.block import MAX_BLOCK_TX_BYTES
    from chain.encoding import DecodeError
    from chain.genesis import genesis_block

    header = genesis_block(NET).header.to_bytes()
    too_much = header + (1).to_bytes(4, "big") + bytes(MAX_BLOCK_TX_BYTES + 1)
    with pytest.raises(DecodeError, match="transaction bytes"):
        Block.from_bytes(too_much)


def test_marking_a_block_invalid_marks_its_descendants(tmp_path: Path) -> None:
    main = new_chain(tmp_path / "main")
    side = new_chain(tmp_path / "side")
    extend(main, 1)
    assert side.process_block(main.get_block(main.active_hash(1))).accepted
    extend(main, 4, salt=b"M")
    s1, s2, s3 = extend(side, 3, salt=b"S")
    for block in (s1, s2):  # a lighter branch: stored, not connected
        assert main.process_block(block).check.ok
    main._mark_invalid(s1.hash, invalid(BlockReject.BAD_STATE_ROOT))  # noqa: SLF001
    assert main.index[s2.hash].status & BlockStatus.INVALID
    assert main.process_block(s3).check.reason is BlockReject.PARENT_INVALID
    assert main.tip.height == 5
    main.db.close()
    side.db.close()
