"""Recovery in the chain code itself (real LevelDB, real mined blocks): damaged or missing
stored blocks, reindex that rebuilds around them, best-chain activation at start-up,
the tip record, and the integrity check on every block read."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.block import Block
from chain.chainstate import ChainState, ChainStateError
from chain.index_record import BlockStatus, IndexRecord
from chain.reindex import reindex
from chain.state_tree import StateTree
from chain.storage import CorruptBlockError
from chain.tiprecord import TIP_RECORD_NAME, parse_tip_record
from tests.chainutil import Clock, easy_devnet, mine_block, open_db

NET = easy_devnet()
T0 = NET.genesis_time + 1000


def new_chain(path: Path, clock: Clock | None = None, **kw: object) -> ChainState:
    return ChainState(open_db(path, NET), NET, clock or Clock(T0), **kw)  # type: ignore[arg-type]


def extend(chain: ChainState, count: int, salt: bytes = b"") -> list[Block]:
    blocks = []
    for _ in range(count):
        chain.clock.now += 60  # type: ignore[attr-defined]
        block = mine_block(chain, salt=salt)
        assert chain.process_block(block).accepted
        blocks.append(block)
    return blocks


def damage_block(chain: ChainState, block: Block) -> None:
    """Flip one byte in the middle of a stored block body (as a bad disk would)."""
    raw = bytearray(chain.db.get_block(block.hash) or b"")
    raw[len(raw) // 2] ^= 0x40
    chain.db.put_block(block.hash, bytes(raw), sync=True)


def delete_block(chain: ChainState, block: Block) -> None:
    with chain.db.atomic() as batch:
        batch.delete_block(block.hash)


def test_a_damaged_block_is_reported_with_its_height_and_fix(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 12)
    damage_block(chain, blocks[4])  # height 5, well below the tip
    with pytest.raises(CorruptBlockError, match=r"at height 5 is damaged.*--reindex`") as err:
        chain.get_block(blocks[4].hash)
    assert err.value.height == 5
    # The raw read (what peers are served) is checked too.
    with pytest.raises(CorruptBlockError):
        chain.db.get_block(blocks[4].hash)
    chain.db.close()
    # Damage near the tip is found at start-up (the newest blocks are read back).
    chain = new_chain(tmp_path / "a")
    damage_block(chain, blocks[-2])
    chain.db.close()
    with pytest.raises(CorruptBlockError, match="at height 11 is damaged"):
        new_chain(tmp_path / "a")


def test_reindex_rebuilds_around_missing_and_damaged_blocks(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 30)
    clock = chain.clock
    delete_block(chain, blocks[9])  # height 10: lost
    damage_block(chain, blocks[19])  # height 20: damaged
    rebuilt = reindex(chain.db, NET, clock)
    assert rebuilt.tip.hash == blocks[8].hash  # everything below the first gap
    assert rebuilt.tree.root == rebuilt.tip_header.state_root
    assert blocks[9].hash not in rebuilt.index and blocks[19].hash not in rebuilt.index
    assert not rebuilt.db.reindexing()
    # Peers supply the rest again (blocks above the gap had no chain to genesis).
    for block in blocks[9:]:
        assert rebuilt.process_block(block).accepted
    assert rebuilt.tip.hash == blocks[-1].hash
    assert StateTree.build(rebuilt.db.iter_state()).root == blocks[-1].header.state_root
    rebuilt.db.close()


def test_reindex_restores_lost_index_records_from_the_bodies(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 15)
    with chain.db.atomic() as batch:  # as if the table holding them had been lost
        for block in blocks[3:9]:
            batch.delete_index(block.hash)
    rebuilt = reindex(chain.db, NET, chain.clock)
    assert rebuilt.tip.hash == blocks[-1].hash
    rebuilt.db.close()


@pytest.mark.parametrize("gap", [False, True])
def test_start_up_activates_the_most_work_stored_chain(tmp_path: Path, gap: bool) -> None:
    """A heavier branch stored but never connected (a crash mid-reorg) becomes active.
    With one of its bodies missing, the node stays put, drops that block, and connects
    the stored ones above it as soon as a peer supplies it again (not as duplicates)."""
    chain = new_chain(tmp_path / "a")
    shared = extend(chain, 3)
    side_chain = new_chain(tmp_path / "b", Clock(T0))
    for block in shared:
        side_chain.process_block(block)
    side_chain.clock.now = chain.clock.now  # type: ignore[attr-defined]
    side = extend(side_chain, 8, salt=b"side")
    side_records = [side_chain.index[b.hash] for b in side]
    side_chain.db.close()
    extend(chain, 4)
    assert chain.tip.cumulative_work < side_records[-1].cumulative_work
    with chain.db.atomic() as batch:  # stored as _accept stores, never connected
        for block, rec in zip(side, side_records, strict=True):
            batch.put_block(block.hash, block.to_bytes())
            batch.put_index(
                IndexRecord(
                    rec.hash,
                    rec.parent,
                    rec.height,
                    rec.cumulative_work,
                    BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED,
                    rec.timestamp,
                )  # fmt: skip
            )
    if gap:
        delete_block(chain, side[2])
    own_tip = chain.tip.hash
    chain.db.close()
    again = new_chain(tmp_path / "a")
    if gap:
        assert again.tip.hash == own_tip and side[2].hash not in again.index
        result = again.process_block(side[2])
        assert [b.hash for b in result.connected] == [b.hash for b in side]
    assert again.tip.hash == side[-1].hash
    assert again.tree.root == side[-1].header.state_root
    again.db.close()


def test_a_database_behind_its_tip_record_is_reported(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "a")
    extend(chain, 6)
    record = parse_tip_record((tmp_path / "a" / TIP_RECORD_NAME).read_bytes())
    assert record is not None and record.height == 6 and record.hash == chain.tip.hash
    # Roll the database back by hand (LevelDB losing its newest writes looks the same).
    for _ in range(2):
        chain._disconnect_tip()  # noqa: SLF001
    with chain.db.atomic() as batch:
        for h in list(chain.index):
            if chain.index[h].height > 4:
                batch.delete_index(h)
                batch.delete_block(h)
    chain.db.close()
    with pytest.raises(
        ChainStateError, match=r"last reported tip height 6.*holds height 4.*--reindex`"
    ):
        new_chain(tmp_path / "a")
    with pytest.raises(ChainStateError):  # a failed start does not lower the record
        new_chain(tmp_path / "a")
    again = reindex(open_db(tmp_path / "a", NET), NET, Clock(T0))  # accepts the loss
    assert again.tip.height == 4
    again.db.close()
    new_chain(tmp_path / "a").db.close()  # and later starts are clean


def test_a_deleted_chain_folder_is_named_as_such(tmp_path: Path) -> None:
    """chain/ gone while chain.tip says the node was at height 3: the message says the
    database is empty and how to start again, not that LevelDB lost writes."""
    import shutil

    chain = new_chain(tmp_path / "a")
    extend(chain, 3)
    chain.db.close()
    shutil.rmtree(tmp_path / "a" / "chain")
    with pytest.raises(ChainStateError, match=r"the chain database is empty \(was .*chain "
                       r"deleted, or moved\?\).*--reindex`"):  # fmt: skip
        new_chain(tmp_path / "a")


def test_reindex_rebuilds_a_malformed_index_or_genesis_record(tmp_path: Path) -> None:
    """Records whose bytes do not decode (LevelDB's checksum intact: a bug or a bad
    tool wrote them): a start names the fix, and --reindex rebuilds them from the
    bodies. Before, it decoded the old index and read the genesis record first, and
    failed on them the same way, as did --repair (it copies them as they are)."""
    from chain.storage import CorruptionError
    from chain.storage_keys import META_GENESIS, PREFIX_INDEX

    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 6)
    chain.db._put_one(PREFIX_INDEX + blocks[2].hash, b"\x01" * 10, True)  # noqa: SLF001
    chain.db._put_one(META_GENESIS, b"\x02" * 3, True)  # noqa: SLF001
    chain.db.close()
    with pytest.raises(CorruptionError):
        new_chain(tmp_path / "a")
    rebuilt = reindex(open_db(tmp_path / "a", NET), NET, Clock(T0))
    assert rebuilt.tip.hash == blocks[-1].hash
    assert rebuilt.db.get_genesis() == rebuilt.genesis.hash
    rebuilt.db.close()
    assert new_chain(tmp_path / "a").tip.hash == blocks[-1].hash


def test_a_repair_cut_short_between_its_renames_is_finished_at_the_next_open(
    tmp_path: Path,
) -> None:
    """A salvage's swap cut short after the damaged folder moved aside and before the
    whole copy moved in: the next open puts the copy in place. Before, a fresh empty
    database was made where the chain had been, the copy ignored."""
    import shutil

    from chain.salvage import COMPLETE_SUFFIX, DAMAGED_SUFFIX, SALVAGE_SUFFIX
    from chain.storage import CHAIN_DB_DIRNAME, open_chain

    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 5)
    chain.db.close()
    db_path = tmp_path / "a" / CHAIN_DB_DIRNAME
    shutil.copytree(db_path, db_path.with_name(db_path.name + SALVAGE_SUFFIX))
    (db_path.with_name(db_path.name + COMPLETE_SUFFIX)).write_bytes(b"")
    db_path.rename(db_path.with_name(db_path.name + DAMAGED_SUFFIX))  # then the crash
    db = open_chain(tmp_path / "a", network=NET.name)
    again = ChainState(db, NET, Clock(T0))
    assert again.tip.hash == blocks[-1].hash
    assert not db_path.with_name(db_path.name + COMPLETE_SUFFIX).exists()
    assert not db_path.with_name(db_path.name + SALVAGE_SUFFIX).exists()
    db.close()


def test_a_salvage_copies_every_block_and_index_record_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The salvage step of --repair copies the readable bodies and index records into a
    fresh database in bounded batches (it held them all in memory before: twice the
    chain's size), each record once, and swaps the folders; a reindex then rebuilds the
    rest from them."""
    import chain.salvage as salvage
    from chain.storage import CHAIN_DB_DIRNAME
    from chain.storage_keys import PREFIX_BLOCK, PREFIX_INDEX

    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 8)
    kept = {p: sum(1 for _ in chain.db.iter_keys(p)) for p in (PREFIX_BLOCK, PREFIX_INDEX)}
    chain.db.close()
    monkeypatch.setattr(salvage, "COPY_BATCH", 1)  # a batch per record
    db_path = tmp_path / "a" / CHAIN_DB_DIRNAME
    salvage._salvage(db_path)  # noqa: SLF001 - the step --repair runs on damaged tables
    assert db_path.with_name(db_path.name + salvage.DAMAGED_SUFFIX).is_dir()
    db = open_db(tmp_path / "a", NET)
    assert {p: sum(1 for _ in db.iter_keys(p)) for p in kept} == kept
    rebuilt = reindex(db, NET, Clock(T0))
    assert rebuilt.tip.hash == blocks[-1].hash
    rebuilt.db.close()


def test_a_database_without_its_genesis_record_is_not_reset(tmp_path: Path) -> None:
    """Blocks and a tip but no genesis record: the start names --reindex instead of
    writing genesis (which reset the tip record to genesis), and the reindex keeps
    every block."""
    from chain.storage_keys import META_GENESIS

    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 4)
    with chain.db.atomic() as batch:
        batch._delete(META_GENESIS)  # noqa: SLF001 - as a lost record would be
    chain.db.close()
    with pytest.raises(ChainStateError, match="lost its genesis record.*--reindex"):
        new_chain(tmp_path / "a")
    rebuilt = reindex(open_db(tmp_path / "a", NET), NET, Clock(T0))
    assert rebuilt.tip.hash == blocks[-1].hash
    rebuilt.db.close()


def test_headers_are_stored_on_their_own_and_rebuilt_by_a_reindex(tmp_path: Path) -> None:
    """A stored block's header has its own key: peers are served headers without each
    block body read and checked whole. A store without those keys (blocks stored before
    them) still answers from the bodies, and --reindex writes them."""
    from chain.storage_keys import header_key

    chain = new_chain(tmp_path / "a")
    blocks = extend(chain, 5)
    for block in blocks:
        assert chain.db.get_header(block.hash) == block.header
        assert chain.get_header(block.hash) == block.header
    with chain.db.atomic() as batch:  # as a store from before the header keys
        for block in blocks:
            batch._delete(header_key(block.hash))  # noqa: SLF001
    assert chain.db.get_header(blocks[2].hash) is None
    assert chain.get_header(blocks[2].hash) == blocks[2].header  # from the body
    chain.db._put_one(header_key(blocks[3].hash), blocks[1].header.to_bytes(), True)  # noqa: SLF001
    assert chain.db.get_header(blocks[3].hash) is None  # not that block's: not trusted
    chain.db.close()
    rebuilt = reindex(open_db(tmp_path / "a", NET), NET, Clock(T0))
    assert all(rebuilt.db.get_header(b.hash) == b.header for b in blocks)
    rebuilt.db.close()
