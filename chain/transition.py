"""Applying transactions and blocks to the state: the chain's state transition.

Sits above the state's records (chain/state.py) and the market's rules
(chain/jobs.py), so that neither of those imports the other, and transaction decoding
(chain/tx.py) needs neither.

A transaction is *invalid* (the block that carries it is invalid) when its nonce is
not the sender's next one or the sender cannot pay its fee. A job transaction whose
market rule fails (the job was claimed first, a window closed, a bond is too low, ...)
is still valid: it is included as *failed*, its fee and nonce are consumed and nothing
else happens, and its reason is reported through ``failed`` (the node keeps it as the
transaction's receipt). So a market action that loses a race never blocks the later
transactions of its sender.
"""

from __future__ import annotations

from collections.abc import Iterable

from chain import jobs
from chain.header import NO_JOB, Header
from chain.job_payloads import decode_job_payload
from chain.network import Network
from chain.state import (
    KEY_SUPPLY,
    Account,
    Changes,
    JobNameError,
    Overlay,
    StateError,
    StateGet,
    StateReject,
    add_contribution,
    reward_key,
    supply,
)
from chain.tx import Transaction
from chain.txkind import TxKind
from consensus.difficulty import block_work
from consensus.ints import U64_MAX
from consensus.subsidy import block_subsidy

# txid -> reason, for job transactions included as failed
Failures = dict[bytes, str]


def apply_transaction(
    state: Overlay,
    tx: Transaction,
    clock: jobs.BlockClock,
    network: Network,
    failed: Failures | None = None,
) -> int:
    """Apply one context-free-valid transaction; returns its fee. Raises StateError
    when the transaction is invalid (nonce, fee), never for a failing market rule."""
    sender = state.account(tx.sender)
    if tx.nonce < sender.nonce:
        raise StateError(StateReject.NONCE_TOO_LOW, f"nonce {tx.nonce} < {sender.nonce}")
    if tx.nonce > sender.nonce:
        raise StateError(StateReject.NONCE_GAP, f"nonce {tx.nonce} > {sender.nonce}")
    if tx.kind == TxKind.TRANSFER:
        cost = tx.amount + tx.fee
        if cost > sender.balance:
            raise StateError(
                StateReject.INSUFFICIENT_BALANCE, f"needs {cost}, has {sender.balance}"
            )
        state.set_account(tx.sender, Account(sender.balance - cost, sender.nonce + 1))
        recipient = state.account(tx.recipient)
        if recipient.balance + tx.amount > U64_MAX:
            raise StateError(StateReject.BALANCE_OVERFLOW)
        state.set_account(tx.recipient, Account(recipient.balance + tx.amount, recipient.nonce))
        return tx.fee
    if tx.fee > sender.balance:
        raise StateError(StateReject.INSUFFICIENT_BALANCE, f"fee {tx.fee}, has {sender.balance}")
    state.set_account(tx.sender, Account(sender.balance - tx.fee, sender.nonce + 1))
    mark = state.mark()
    try:
        if tx.amount > sender.balance - tx.fee:
            raise StateError(StateReject.INSUFFICIENT_BALANCE, f"escrow {tx.amount} + fee {tx.fee}")
        acct = state.account(tx.sender)
        state.set_account(tx.sender, Account(acct.balance - tx.amount, acct.nonce))
        payload = decode_job_payload(tx.kind, tx.payload)  # checked context-free already
        jobs.apply_job_action(
            state, tx.sender, tx.txid, tx.amount, payload, clock, network.pouw, network.market
        )
    except StateError as exc:
        state.rollback(mark)
        if failed is not None:
            failed[tx.txid] = str(exc)
    return tx.fee


def apply_block(
    base: StateGet,
    header: Header,
    txs: Iterable[Transaction],
    network: Network,
    mtp: int,
    failed: Failures | None = None,
) -> Changes:
    """The state changes of connecting a block on top of ``base``. Raises StateError.

    ``mtp`` is the block's median time past (its parent chain's last 11 timestamps).
    Order: the job the header names is checked (its miner must hold the claim), the
    transactions (of a job's standing claims, only the lowest txid can succeed:
    ``jobs.lowest_claims``), the subsidy and the reward (immature under "R"), the reward maturing
    now, the contribution ledger, and last the market's timers of this height.
    """
    state = Overlay(base)
    txs = list(txs)
    lowest = jobs.lowest_claims(base, txs, mtp, network.market)
    clock = jobs.BlockClock(header.height, mtp, network.difficulty.target_spacing_s, lowest)
    if header.job_id != NO_JOB:
        try:
            jobs.check_named_job(state.get, header)
        except StateError as exc:
            raise JobNameError(exc.reason, exc.detail) from None
    fees = 0
    for tx in txs:
        fees += apply_transaction(state, tx, clock, network, failed)
    subsidy = network.subsidy
    minted = block_subsidy(subsidy, header.height)
    new_supply = supply(state.get) + minted
    if new_supply > subsidy.supply_cap:
        raise StateError(StateReject.SUPPLY_CAP)
    state.put(KEY_SUPPLY, new_supply.to_bytes(8, "big"))
    state.put(reward_key(header.height), header.miner + (minted + fees).to_bytes(8, "big"))
    _release_matured_reward(state, header.height - subsidy.coinbase_maturity)
    add_contribution(
        state,
        header.miner,
        blocks=1,
        work=block_work(header.target),
        multiply_adds=header.m * header.n * header.k,
    )
    jobs.run_timers(state, clock)
    return state.changes


def _release_matured_reward(state: Overlay, height: int) -> None:
    if height < 1:
        return
    raw = state.get(reward_key(height))
    if raw is None:
        return
    miner, amount = raw[:20], int.from_bytes(raw[20:28], "big")
    acct = state.account(miner)
    state.set_account(miner, Account(acct.balance + amount, acct.nonce))
    state.put(reward_key(height), None)
