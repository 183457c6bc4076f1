"""Compute-market consensus, in process: the job life cycle (claim, commit, window,
probe, reveal, challenge, expiry), payment independent of the lottery, failed-but-
included market actions, windows in seconds of median time past, reorgs, and the
supply invariant at every block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from chain.address import address_from_pubkey
from chain.chainstate import ChainState
from chain.encoding import DecodeError
from chain.job_payloads import (
    MAX_REVEAL_PAYLOAD,
    JobClaim,
    JobProbe,
    JobReveal,
    decode_job_payload,
)
from chain.job_record import HELD_STATUSES, Job, JobStatus, escrow_total, get_job, live_jobs
from chain.job_tally import (
    RECENT_COMMIT_BLOCKS,
    STATUS_OFFSET,
    JobTally,
    peek_committed_height,
    peek_status,
)
from chain.keys import devnet_key
from chain.state import Account, Contribution, account_key, contribution_key, supply
from chain.tx import MAX_TX_SIZE, Transaction, TxKind, check_transaction
from consensus.result import (
    RESULT_CHUNK,
    ChallengeReject,
    result_proof,
    result_root,
    verify_challenge,
    verify_chunk,
)
from tests.chainutil import mine_block, transfer
from tests.marketutil import (
    balance,
    job_ref,
    market_devnet,
    mine_job_block,
    new_chain,
    operands,
    seal_named,
)
from wallet.job_txs import (
    build_challenge,
    challenge_tx,
    claim_tx,
    commit_tx,
    probe_tx,
    reclaim_tx,
    reveal_tx,
    submit_tx,
)

NET = market_devnet()
BUYER_KEY, MINER_KEY, OTHER_KEY = devnet_key(0), devnet_key(1), devnet_key(2)
BUYER = address_from_pubkey(BUYER_KEY.public_key)
MINER = address_from_pubkey(MINER_KEY.public_key)
OTHER = address_from_pubkey(OTHER_KEY.public_key)
SHAPE = (64, 128, 64)
BOUNTY = 1_000_000
BOND = NET.market.bond_for(BOUNTY)
FEE = 1000


def _total(chain: ChainState) -> int:
    """Balances + immature rewards + held by jobs: must equal the supply."""
    total = 0
    for key, value in chain.db.iter_state():
        if key[:1] == b"A":
            total += int.from_bytes(value[:8], "big")
        elif key[:1] == b"R":
            total += int.from_bytes(value[20:28], "big")
        elif key[:1] == b"J":
            total += escrow_total([Job.from_bytes(value)])
    return total


def _mine(chain: ChainState, txs: list[Transaction] | None = None, step: int = 1) -> None:
    """One block, stamped ``step`` seconds after the tip; checks the supply invariant."""
    chain.clock.now = max(chain.clock.now, chain.tip_header.timestamp) + step  # type: ignore[attr-defined]
    r = chain.process_block(mine_block(chain, txs or [], miner=BUYER))
    assert r.accepted and r.connected, r.check
    assert _total(chain) == supply(chain.state_get)
    # the timer lists find exactly the unsettled jobs a scan of every record finds
    scanned = [(key[1:], Job.from_bytes(raw)) for key, raw in chain.db.iter_state(b"J")]
    unsettled = sorted((jid, job) for jid, job in scanned if job.status in HELD_STATUSES)
    assert sorted(live_jobs(chain.db.iter_state, chain.state_get)) == unsettled
    _check_tally(chain)


def _check_tally(chain: ChainState) -> None:
    """The tally followed block by block equals one built from every job record."""
    fresh = JobTally.build(chain.db.iter_state(b"J"), chain.tip.height)
    assert chain.job_tally.counts == fresh.counts
    floor = chain.tip.height - RECENT_COMMIT_BLOCKS
    assert sorted(chain.job_tally.committed_after(floor)) == sorted(fresh.committed_after(floor))


def _nonce(chain: ChainState, key: object) -> int:
    addr = address_from_pubkey(key.public_key)  # type: ignore[attr-defined]
    return Account.from_bytes(chain.state_get(account_key(addr))).nonce


def _job(chain: ChainState, job_id: bytes) -> Job:
    job = get_job(chain.state_get, job_id)
    assert job is not None
    return job


def _until(chain: ChainState, job_id: bytes, status: JobStatus, blocks: int = 40) -> int:
    for mined in range(blocks):
        if _job(chain, job_id).status is status:
            return mined
        _mine(chain)
    raise AssertionError(f"job still {_job(chain, job_id).status.name} after {blocks} blocks")


def _submitted(tmp_path: Path, seed: int = 1, open_s: int = 500):  # type: ignore[no-untyped-def]
    chain = new_chain(tmp_path, NET)
    a, b = operands(*SHAPE, seed=seed)
    expires = chain.mtp_after(chain.tip) + open_s
    tx = submit_tx(NET, BUYER_KEY, 0, a, b, BOUNTY, expires, url="http://x", fee=FEE)
    _mine(chain, [tx])
    assert chain.db.get_tx_failure(tx.txid) == ""
    return chain, a, b, tx.txid


def _claimed(tmp_path: Path, seed: int = 1):  # type: ignore[no-untyped-def]
    chain, a, b, job_id = _submitted(tmp_path, seed)
    claim = claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, BOND, fee=FEE)
    _mine(chain, [claim])
    job = _job(chain, job_id)
    assert job.status is JobStatus.CLAIMED and job.claimant == MINER and job.bond == BOND
    return chain, a, b, job_id


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _commit(chain: ChainState, job_id: bytes, c: np.ndarray) -> None:
    tx = commit_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, result_root(c), "http://m")
    _mine(chain, [tx])
    assert chain.db.get_tx_failure(tx.txid) == "", chain.db.get_tx_failure(tx.txid)


def test_payloads_round_trip_and_caps() -> None:
    a, b = operands(*SHAPE)
    tx = submit_tx(NET, BUYER_KEY, 0, a, b, BOUNTY, 9, url="http://h:1")
    assert check_transaction(tx, NET.chain_id).ok
    sub = decode_job_payload(tx.kind, tx.payload)
    assert (sub.m, sub.k, sub.n, sub.expires, sub.url) == (*SHAPE, 9, b"http://h:1")  # type: ignore[union-attr]
    job_id = tx.txid
    c = _exact(a, b)
    data, cb, rb = result_proof(c, 5, 3 * RESULT_CHUNK // 2)
    built = [
        (claim_tx(NET, MINER_KEY, 0, job_id, BOND), JobClaim(job_id)),
        (probe_tx(NET, BUYER_KEY, 1, job_id, 5, 0, 500), JobProbe(job_id, 5, 0)),
        (reveal_tx(NET, MINER_KEY, 1, job_id, data, tuple(cb), tuple(rb)),
         JobReveal(job_id, data, tuple(cb), tuple(rb))),
    ]  # fmt: skip
    for tx_, payload in built:
        assert check_transaction(tx_, NET.chain_id).ok
        assert Transaction.from_bytes(tx_.to_bytes()) == tx_
        assert decode_job_payload(tx_.kind, tx_.payload) == payload
    assert MAX_REVEAL_PAYLOAD == 2342
    # amounts: claim and probe must escrow something, commit must not move anything
    no_bond = dataclasses.replace(built[0][0], amount=0)
    assert check_transaction(no_bond, NET.chain_id).reject.value == "tx-job-amount"  # type: ignore[union-attr]
    pay_commit = dataclasses.replace(commit_tx(NET, MINER_KEY, 0, job_id, bytes(32)), amount=5)
    assert check_transaction(pay_commit, NET.chain_id).reject.value == "tx-job-amount"  # type: ignore[union-attr]
    ch = challenge_tx(NET, BUYER_KEY, 1, job_id, build_challenge(a, b, c, 3, 5))
    assert check_transaction(ch, NET.chain_id).ok
    assert len(ch.to_bytes()) < 4096 < MAX_TX_SIZE  # O(k): k=128 here


def test_verify_challenge_and_chunk_rules() -> None:
    a, b = operands(*SHAPE)
    c = _exact(a, b)
    wrong = c.copy()
    wrong[7, 9] += 1
    from consensus.commitments import commit_cols, commit_rows

    ha, hb, hc_ok, hc_bad = commit_rows(a), commit_cols(b), result_root(c), result_root(wrong)
    ok = build_challenge(a, b, wrong, 7, 9)
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, ok) is None
    assert verify_challenge(*SHAPE, ha, hb, hc_ok, build_challenge(a, b, c, 7, 9)) is (
        ChallengeReject.ENTRY_CORRECT
    )
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, build_challenge(a, b, wrong, 7, 8)) is (
        ChallengeReject.ENTRY_CORRECT
    )
    bad_row = dataclasses.replace(ok, row_branch=ok.row_branch[:-1] + (bytes(32),))
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, bad_row) is ChallengeReject.BAD_ROW_BRANCH
    bad_col = dataclasses.replace(ok, col=bytes(len(ok.col)))
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, bad_col) is ChallengeReject.BAD_COLUMN_BRANCH
    bad_c = dataclasses.replace(ok, result_branch=ok.result_branch[1:])
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, bad_c) is ChallengeReject.BAD_RESULT_BRANCH
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, dataclasses.replace(ok, i=64)) is (
        ChallengeReject.BAD_INDEX
    )
    assert verify_challenge(*SHAPE, ha, hb, hc_bad, dataclasses.replace(ok, chunk=b"")) is (
        ChallengeReject.MALFORMED
    )
    m, _, n = SHAPE
    data, cb, rb = result_proof(c, 4, 0)
    assert verify_chunk(m, n, hc_ok, 4, 0, data, cb, rb) is None
    assert verify_chunk(m, n, hc_bad, 4, 0, data, cb, rb) is ChallengeReject.BAD_RESULT_BRANCH
    assert verify_chunk(m, n, hc_ok, 5, 0, data, cb, rb) is ChallengeReject.BAD_RESULT_BRANCH
    assert verify_chunk(m, n, hc_ok, 4, 1, data, cb, rb) is ChallengeReject.BAD_INDEX
    assert verify_chunk(m, n, hc_ok, 4, 0, data[:-4], cb, rb) is ChallengeReject.MALFORMED


def test_claimant_paid_after_window_win_or_lose(tmp_path: Path) -> None:
    """The claimant's product carries the lottery (its block names the job), and the
    bounty is paid after the window whether or not a block carried the product."""
    chain, a, b, job_id = _claimed(tmp_path)
    # only the claimant may name the job in a header
    assert chain.process_block(seal_named(chain, OTHER, job_id, a, b)).check.reason.value == (  # type: ignore[union-attr]
        "bad-job-not-claimant"
    )
    block, c = mine_job_block(chain, MINER, job_ref(job_id, a, b), a, b)
    assert np.array_equal(c, _exact(a, b))
    assert chain.process_block(block).accepted
    reward_raw = chain.state_get(b"R" + block.header.height.to_bytes(8, "big"))
    assert reward_raw is not None  # the block reward matures as usual: nothing is held
    reward = int.from_bytes(reward_raw[20:28], "big")
    miner_before = balance(chain, MINER) + reward  # it matures within the window
    _commit(chain, job_id, c)
    job = _job(chain, job_id)
    assert job.status is JobStatus.COMMITTED and job.window_end == job.window_end
    blocks = _until(chain, job_id, JobStatus.PAID)
    assert blocks >= NET.market.min_window_blocks
    assert balance(chain, MINER) == miner_before - FEE + BOUNTY + BOND
    contrib = Contribution.from_bytes(chain.state_get(contribution_key(MINER)))
    assert contrib.delivered == 64 * 128 * 64 and contrib.bounties == BOUNTY
    assert contrib.blocks == 1 and contrib.challenges_lost == 0

    # a second job, never in any block: paid all the same
    a2, b2 = operands(*SHAPE, seed=2)
    expires = chain.mtp_after(chain.tip) + 500
    sub = submit_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), a2, b2, BOUNTY, expires)
    _mine(chain, [sub])
    _mine(chain, [claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), sub.txid, BOND, fee=FEE)])
    _commit(chain, sub.txid, _exact(a2, b2))
    _until(chain, sub.txid, JobStatus.PAID)
    contrib = Contribution.from_bytes(chain.state_get(contribution_key(MINER)))
    assert contrib.bounties == 2 * BOUNTY and contrib.blocks == 1


def test_two_claims_in_one_block_loser_included_as_failed(tmp_path: Path) -> None:
    chain, a, b, job_id = _submitted(tmp_path)
    other_before = balance(chain, OTHER)
    first = claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, BOND, fee=FEE)
    second = claim_tx(NET, OTHER_KEY, _nonce(chain, OTHER_KEY), job_id, BOND, fee=FEE)
    after = transfer(NET, 2, _nonce(chain, OTHER_KEY) + 1, BUYER, 5)  # OTHER's next tx
    assert first.txid < second.txid  # the lower txid wins the race
    _mine(chain, [first, second, after])
    assert _job(chain, job_id).claimant == MINER
    assert chain.db.get_tx_failure(first.txid) == ""
    assert chain.db.get_tx_failure(second.txid).startswith("job-claim-outbid")  # type: ignore[union-attr]
    assert chain.db.get_tx_failure(after.txid) == ""  # not blocked behind the failed claim
    assert balance(chain, OTHER) == other_before - FEE - (5 + 10)  # fee only, no bond
    assert _nonce(chain, OTHER_KEY) == 2


def test_vanished_claimant_loses_bond_and_job_reopens(tmp_path: Path) -> None:
    chain, a, b, job_id = _claimed(tmp_path)
    buyer_before = balance(chain, BUYER)
    _until(chain, job_id, JobStatus.OPEN)
    assert balance(chain, BUYER) >= buyer_before + BOND  # plus its own block rewards
    contrib = Contribution.from_bytes(chain.state_get(contribution_key(MINER)))
    assert contrib.challenges_lost == 1
    # a late commit of the vanished claimant fails; another worker claims and delivers
    late = commit_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, result_root(_exact(a, b)))
    _mine(chain, [late])
    assert chain.db.get_tx_failure(late.txid).startswith("job-bad-status")  # type: ignore[union-attr]
    _mine(chain, [claim_tx(NET, OTHER_KEY, _nonce(chain, OTHER_KEY), job_id, BOND, fee=FEE)])
    job = _job(chain, job_id)
    assert job.status is JobStatus.CLAIMED and job.claimant == OTHER and job.claims == 2


def test_wrong_result_loses_challenge(tmp_path: Path) -> None:
    chain, a, b, job_id = _claimed(tmp_path)
    buyer_before = balance(chain, BUYER)
    wrong = _exact(a, b)
    wrong[10, 20] -= 5
    _commit(chain, job_id, wrong)
    right_entry = challenge_tx(NET, OTHER_KEY, _nonce(chain, OTHER_KEY), job_id,
                               build_challenge(a, b, wrong, 0, 0))  # fmt: skip
    _mine(chain, [right_entry])
    assert chain.db.get_tx_failure(right_entry.txid) == "challenge-entry-correct"
    assert _job(chain, job_id).status is JobStatus.COMMITTED
    other_before = balance(chain, OTHER)
    proof = build_challenge(a, b, wrong, 10, 20)
    _mine(chain, [challenge_tx(NET, OTHER_KEY, _nonce(chain, OTHER_KEY), job_id, proof)])
    job = _job(chain, job_id)
    assert job.status is JobStatus.REFUNDED
    assert balance(chain, OTHER) == other_before - 1000 + BOND  # anyone may challenge
    assert balance(chain, BUYER) >= buyer_before + BOUNTY
    contrib = Contribution.from_bytes(chain.state_get(contribution_key(MINER)))
    assert contrib.challenges_lost == 1 and contrib.delivered == 0 and contrib.bounties == 0
    for _ in range(12):
        _mine(chain)
    assert _job(chain, job_id).status is JobStatus.REFUNDED


def test_unanswered_probe_refunds_the_buyer(tmp_path: Path) -> None:
    """A withheld C (or one served under another root): the claimant cannot publish
    the probed chunk, loses its bond, the buyer gets bounty, bond and deposit back."""
    chain, a, b, job_id = _claimed(tmp_path)
    _commit(chain, job_id, _exact(a, b))
    buyer_before = balance(chain, BUYER)
    probe = probe_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), job_id, 3, 0, 500, fee=FEE)
    _mine(chain, [probe])
    job = _job(chain, job_id)
    assert job.probe_open and (job.probe_row, job.probe_chunk, job.probe_deposit) == (3, 0, 500)
    again = probe_tx(NET, OTHER_KEY, _nonce(chain, OTHER_KEY), job_id, 4, 0, 500)
    _mine(chain, [again])
    assert chain.db.get_tx_failure(again.txid).startswith("job-probe-open")  # type: ignore[union-attr]
    _until(chain, job_id, JobStatus.REFUNDED)
    # bounty, bond and deposit (minus the probe's fee), plus the buyer's own block rewards
    assert balance(chain, BUYER) >= buyer_before - FEE + BOUNTY + BOND
    assert Contribution.from_bytes(chain.state_get(contribution_key(MINER))).challenges_lost == 1


def test_answered_probe_pays_the_deposit_and_the_job_settles(tmp_path: Path) -> None:
    chain, a, b, job_id = _claimed(tmp_path)
    c = _exact(a, b)
    _commit(chain, job_id, c)
    _mine(chain, [probe_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), job_id, 3, 0, 500)])
    miner_before = balance(chain, MINER)
    bad = reveal_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id,
                    *_chunk(c, 4, 0), fee=FEE)  # fmt: skip  # another row's chunk
    _mine(chain, [bad])
    assert chain.db.get_tx_failure(bad.txid) == "challenge-bad-result-branch"
    good = reveal_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, *_chunk(c, 3, 0), fee=FEE)
    _mine(chain, [good])
    assert chain.db.get_tx_failure(good.txid) == ""
    assert not _job(chain, job_id).probe_open
    assert balance(chain, MINER) == miner_before - 2 * FEE + 500
    _until(chain, job_id, JobStatus.PAID)


Proof = tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]


def _chunk(c: np.ndarray, row: int, chunk: int) -> Proof:
    data, cb, rb = result_proof(c, row, chunk * RESULT_CHUNK)
    return data, tuple(cb), tuple(rb)


def test_windows_are_seconds_not_blocks(tmp_path: Path) -> None:
    """Blocks that come faster than the clock (all stamped at one frozen second, as
    far as median time past allows) close the window only when MTP reaches its end."""
    chain, a, b, job_id = _claimed(tmp_path)
    _commit(chain, job_id, _exact(a, b))
    end = _job(chain, job_id).window_end
    frozen = chain.clock.now  # type: ignore[attr-defined]
    mined = 0
    while _job(chain, job_id).status is JobStatus.COMMITTED:
        mtp = chain.mtp_after(chain.tip)
        r = chain.process_block(mine_block(chain, [], miner=BUYER, now=frozen))
        assert r.accepted and r.connected
        mined += 1
        assert mined < 200
    assert _job(chain, job_id).status is JobStatus.PAID
    assert mtp >= end  # closed by time passing, not by the block count
    assert mined > 3 * NET.market.min_window_blocks


def test_expiry_reclaim_and_bad_submits(tmp_path: Path) -> None:
    chain, a, b, job_id = _submitted(tmp_path, open_s=4)
    before = balance(chain, BUYER)
    _until(chain, job_id, JobStatus.EXPIRED)
    assert balance(chain, BUYER) >= before + BOUNTY
    late_claim = claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, BOND)
    _mine(chain, [late_claim])
    assert chain.db.get_tx_failure(late_claim.txid).startswith("job-bad-status")  # type: ignore[union-attr]
    # reclaim: the buyer only, an open job only
    a2, b2 = operands(*SHAPE, seed=3)
    sub = submit_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), a2, b2, BOUNTY,
                    chain.mtp_after(chain.tip) + 500)  # fmt: skip
    _mine(chain, [sub])
    not_buyer = reclaim_tx(NET, OTHER_KEY, _nonce(chain, OTHER_KEY), sub.txid)
    _mine(chain, [not_buyer])
    assert chain.db.get_tx_failure(not_buyer.txid).startswith("job-not-buyer")  # type: ignore[union-attr]
    _mine(chain, [reclaim_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), sub.txid)])
    assert _job(chain, sub.txid).status is JobStatus.RECLAIMED
    # submits that fail their market rule are included as failed, bounty not taken
    past = submit_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY), a2, b2, BOUNTY, 1)
    odd = submit_tx(NET, BUYER_KEY, _nonce(chain, BUYER_KEY) + 1, *operands(60, 128, 64), BOUNTY,
                    chain.mtp_after(chain.tip) + 500)  # fmt: skip
    before = balance(chain, BUYER)
    _mine(chain, [past, odd])
    assert chain.db.get_tx_failure(past.txid).startswith("job-bad-expiry")  # type: ignore[union-attr]
    assert chain.db.get_tx_failure(odd.txid).startswith("job-bad-shape")  # type: ignore[union-attr]
    assert get_job(chain.state_get, past.txid) is None
    assert balance(chain, BUYER) >= before - 2 * FEE


def test_reorg_undoes_claim_and_timers(tmp_path: Path) -> None:
    chain, a, b, job_id = _submitted(tmp_path)
    state_before = dict(chain.db.iter_state())
    _mine(chain, [claim_tx(NET, MINER_KEY, _nonce(chain, MINER_KEY), job_id, BOND, fee=FEE)])
    assert _job(chain, job_id).status is JobStatus.CLAIMED
    chain._disconnect_tip()  # noqa: SLF001 - exercise the undo data directly
    assert _job(chain, job_id).status is JobStatus.OPEN
    assert dict(chain.db.iter_state()) == state_before
    _check_tally(chain)


def test_job_tally_follows_commits_payouts_and_reorgs(tmp_path: Path) -> None:
    chain, a, b, job_id = _claimed(tmp_path)
    assert chain.job_tally.counts[JobStatus.CLAIMED] == 1
    _commit(chain, job_id, _exact(a, b))
    committed_at = chain.tip.height
    assert chain.job_tally.committed_after(committed_at - 1) == [job_id]
    assert chain.job_tally.committed_after(committed_at) == []
    _until(chain, job_id, JobStatus.PAID)
    counts = chain.job_tally.counts
    assert (counts[JobStatus.PAID], counts[JobStatus.COMMITTED]) == (1, 0)
    assert chain.job_tally.committed_after(committed_at - 1) == [job_id]  # paid: still counted
    while chain.tip.height >= committed_at:  # back to before the commit
        chain._disconnect_tip()  # noqa: SLF001 - exercise the undo data directly
        _check_tally(chain)
    assert chain.job_tally.counts[JobStatus.CLAIMED] == 1
    assert chain.job_tally.committed_after(0) == []
    # a restart builds the same tally from the records
    fresh = JobTally.build(chain.db.iter_state(b"J"), chain.tip.height)
    assert fresh.counts == chain.job_tally.counts


def test_peek_reads_the_fields_of_an_encoded_job() -> None:
    job = Job(
        buyer=b"\x01" * 20, m=8, k=16, n=8, h_a=b"\x02" * 32, h_b=b"\x03" * 32, bounty=7,
        expires=9, submitted=3, status=JobStatus.COMMITTED, claimant=b"\x04" * 20, bond=5,
        claim_deadline=11, claim_min_height=12, result_root=b"\x05" * 32,
        committed_height=123456789, window_end=13, window_min_height=14,
        probe_by=b"\x06" * 20, probe_deposit=0, probe_row=0, probe_chunk=0, probe_deadline=0,
        probe_min_height=0, wake_height=15, claims=1, data_url=b"http://a", result_url=b"",
    )  # fmt: skip
    raw = job.to_bytes()
    assert peek_status(raw) is JobStatus.COMMITTED
    assert peek_committed_height(raw) == 123456789
    with pytest.raises(DecodeError):
        peek_status(raw[:100])
    bad = bytearray(raw)
    bad[STATUS_OFFSET] = 99
    with pytest.raises(DecodeError):
        peek_status(bytes(bad))


def test_block_rules_unknown_mismatch(tmp_path: Path) -> None:
    chain, a, b, job_id = _claimed(tmp_path)
    reason = lambda blk: chain.process_block(blk).check.reason.value  # noqa: E731
    assert reason(seal_named(chain, MINER, b"\x07" * 32, a, b)) == "bad-job-unknown"
    a2, b2 = operands(*SHAPE, seed=9)
    assert reason(seal_named(chain, MINER, job_id, a2, b2)) == "bad-job-mismatch"


def test_insufficient_fee_is_invalid_not_failed(tmp_path: Path) -> None:
    """A job tx whose sender cannot pay even the fee does not apply at all."""
    chain, a, b, job_id = _submitted(tmp_path)
    poor = devnet_key(3)
    poor_addr = address_from_pubkey(poor.public_key)
    rich = Account.from_bytes(chain.state_get(account_key(poor_addr))).balance
    tx = claim_tx(NET, poor, 0, job_id, BOND, fee=rich + 1)
    h = dataclasses.replace(chain.tip_header, height=chain.tip.height + 1, job_id=bytes(32))
    with pytest.raises(Exception, match="insufficient-balance"):
        chain.block_changes(h, [tx])
    # a bond it cannot pay: included as failed, fee taken
    tx = claim_tx(NET, poor, 0, job_id, rich, fee=FEE)
    _mine(chain, [tx])
    assert chain.db.get_tx_failure(tx.txid).startswith("insufficient-balance")  # type: ignore[union-attr]
    assert Account.from_bytes(chain.state_get(account_key(poor_addr))).balance == rich - FEE
    assert TxKind(tx.kind) is TxKind.JOB_CLAIM


def test_claim_and_commit_wait_in_the_template_for_their_pooled_submit(tmp_path: Path) -> None:
    """Miners claim and commit jobs whose submit is still pooled; the pool orders
    senders by fee, so the template moves a job tx (and its sender's later txs) after
    the submit that creates the job, and all three confirm in one block."""
    chain = new_chain(tmp_path, NET)
    a, b = operands(*SHAPE)
    expires = chain.mtp_after(chain.tip) + 500
    submit = submit_tx(NET, BUYER_KEY, 0, a, b, BOUNTY, expires, url="http://x", fee=FEE)
    job_id = submit.txid
    claim = claim_tx(NET, MINER_KEY, 0, job_id, BOND, fee=FEE * 5)  # pays more: first in pool
    commit = commit_tx(NET, MINER_KEY, 1, job_id, result_root(_exact(a, b)), "http://m",
                       fee=FEE * 5)  # fmt: skip
    other = transfer(NET, 2, 0, BUYER, 5)
    block = mine_block(chain, [claim, commit, other, submit], miner=BUYER)
    assert [tx.txid for tx in block.txs] == [other.txid, submit.txid, claim.txid, commit.txid]
    assert chain.process_block(block).accepted
    assert all(chain.db.get_tx_failure(tx.txid) == "" for tx in block.txs)
    job = _job(chain, job_id)
    assert job.status is JobStatus.COMMITTED and job.claimant == MINER
    # A sender's own claim ahead of its own submit keeps nonce order and fails.
    chain2 = new_chain(tmp_path / "2", NET)
    own_submit = submit_tx(NET, BUYER_KEY, 1, a, b, BOUNTY, expires)
    own_claim = claim_tx(NET, BUYER_KEY, 0, own_submit.txid, BOND)
    block = mine_block(chain2, [own_claim, own_submit], miner=BUYER)
    assert [tx.txid for tx in block.txs] == [own_claim.txid, own_submit.txid]
    assert chain2.process_block(block).accepted
    assert "job" in (chain2.db.get_tx_failure(own_claim.txid) or "")


def test_racing_claims_the_lowest_txid_wins_wherever_it_stands(tmp_path: Path) -> None:
    """Miners that race for a pooled job agree on who computes it: of the claims of
    one job in a block, only the lowest txid can succeed, before or after the others
    (the rest fail as job-claim-outbid). Claims crossed in opposite nonce orders (two
    miners, two jobs: a cycle, when the template had to order them) each go to their
    lowest txid; and the template keeps the pool's order."""
    chain = new_chain(tmp_path, NET)
    a, b = operands(*SHAPE)
    expires = chain.mtp_after(chain.tip) + 500
    s1 = submit_tx(NET, BUYER_KEY, 0, a, b, BOUNTY, expires, fee=FEE)
    s2 = submit_tx(NET, BUYER_KEY, 1, a, b, BOUNTY + 1, expires, fee=FEE)
    for fee in range(FEE, FEE + 200):  # fees that make each miner's first claim lose
        m1 = [claim_tx(NET, MINER_KEY, 0, s1.txid, BOND, fee=fee),
              claim_tx(NET, MINER_KEY, 1, s2.txid, BOND, fee=fee)]  # fmt: skip
        o1 = [claim_tx(NET, OTHER_KEY, 0, s2.txid, BOND, fee=fee),
              claim_tx(NET, OTHER_KEY, 1, s1.txid, BOND, fee=fee)]  # fmt: skip
        if m1[0].txid > o1[1].txid and o1[0].txid > m1[1].txid:
            break  # each miner's first claim loses to the other's second
    else:
        raise AssertionError("no fee gives crossed claims")
    block = mine_block(chain, [s1, s2, *m1, *o1], miner=BUYER)
    assert [tx.txid for tx in block.txs] == [s1.txid, s2.txid, *(t.txid for t in (*m1, *o1))]
    assert chain.process_block(block).accepted
    for job_id, winner in ((s1.txid, o1[1]), (s2.txid, m1[1])):
        assert _job(chain, job_id).claimant == winner.sender
        for tx in (*m1, *o1):
            if tx.payload == job_id and tx is not winner:
                assert chain.db.get_tx_failure(tx.txid).startswith("job-claim-outbid")  # type: ignore[union-attr]
        assert chain.db.get_tx_failure(winner.txid) == ""
    # One race, the higher txid first in the block: the lower still wins.
    chain2 = new_chain(tmp_path / "2", NET)
    job = s1.txid
    c1 = claim_tx(NET, MINER_KEY, 0, job, BOND, fee=FEE * 3)
    c2 = claim_tx(NET, OTHER_KEY, 0, job, BOND, fee=FEE * 2)
    low, high = sorted((c1, c2), key=lambda tx: tx.txid)
    block = mine_block(chain2, [high, low, s1], miner=BUYER)
    assert [tx.txid for tx in block.txs] == [s1.txid, high.txid, low.txid]
    assert chain2.process_block(block).accepted
    assert _job(chain2, job).claimant == low.sender


def test_a_claim_that_fails_on_its_own_never_blocks_its_rivals(tmp_path: Path) -> None:
    """Only standing claims compete (chain/jobs.lowest_claims): a claim with the lowest
    txid but a bond of 1 fails (outbid by the standing rival) and the rival's claim
    wins; so does the rival when the lower claim's sender cannot cover its txs of the
    block (the template leaves that claim out). Before, either made every claim of the
    job fail as outbid, for the price of one fee a block."""
    chain = new_chain(tmp_path, NET)
    a, b = operands(*SHAPE)
    expires = chain.mtp_after(chain.tip) + 500
    s1, s2 = (submit_tx(NET, BUYER_KEY, i, a, b, BOUNTY, expires, fee=FEE) for i in range(2))
    poor = devnet_key(3)
    rich = Account.from_bytes(chain.state_get(account_key(address_from_pubkey(poor.public_key))))
    rival = claim_tx(NET, MINER_KEY, 0, s1.txid, BOND, fee=FEE)
    for fee in range(FEE, FEE + 200):
        griefing = claim_tx(NET, OTHER_KEY, 0, s1.txid, 1, fee=fee)
        if griefing.txid < rival.txid:
            break
    else:
        raise AssertionError("no fee gives the griefing claim the lower txid")
    block = mine_block(chain, [s1, s2, griefing, rival], miner=BUYER)
    assert chain.process_block(block).accepted
    assert chain.db.get_tx_failure(griefing.txid).startswith("job-claim-outbid")  # type: ignore[union-attr]
    assert chain.db.get_tx_failure(rival.txid) == ""
    assert _job(chain, s1.txid).claimant == MINER
    # the lower claim's sender cannot pay: left out, and the rival still wins
    rival2 = claim_tx(NET, MINER_KEY, 1, s2.txid, BOND, fee=FEE)
    for fee in range(rich.balance + 1, rich.balance + 200):
        unpayable = claim_tx(NET, poor, 0, s2.txid, BOND, fee=fee)
        if unpayable.txid < rival2.txid:
            break
    else:
        raise AssertionError("no fee gives the unpayable claim the lower txid")
    block = mine_block(chain, [unpayable, rival2], miner=BUYER)
    assert [tx.txid for tx in block.txs] == [rival2.txid]
    assert chain.process_block(block).accepted
    assert _job(chain, s2.txid).claimant == MINER


def test_a_timer_meets_its_deadline_when_blocks_come_slower_than_the_target() -> None:
    """A timer looks again after a quarter of the time left (in target spacings): with
    blocks three times slower than the target, a 600 s expiry fires within a block of
    its time. With the whole of the time left, it fired about 1200 s late."""
    from chain.jobs import BlockClock

    spacing, slow = 10, 30  # the target, and the blocks as they come
    height, mtp, expires = 100, 1_000_000, 1_000_000 + 600
    clock = BlockClock(height, mtp, spacing)
    wake = clock.wake_height(expires, 0)
    while True:
        mtp += (wake - height) * slow
        height = wake
        clock = BlockClock(height, mtp, spacing)
        if clock.passed(expires, 0):
            break
        wake = clock.wake_height(expires, 0)
    assert mtp - expires <= slow, mtp - expires
