"""How much of the miners' work goes to paid products, with demand above capacity.

Real processes: a buyer's node, three miner nodes (one core each), a devnet whose
blocks are about 100x one job's work (``--block-ratio``). The buyer, through the
Python API (wallet/jobs.JobClient), keeps more jobs open than the miners can take for
``--seconds``, then stops and lets every job settle. Printed (name=value):

  useful_fraction       the share of the miners' multiply-adds (jobs and filler) that
                        went to paid products while demand was kept up: from the first
                        committed job to the end of demand, the share spent on job
                        products, times the share of all job products that were paid
  useful_fraction_all   paid multiply-adds over everything computed in the whole run,
                        start-up (no job yet) and drain (no demand) included
  jobs_submitted, jobs_settled (paid), jobs_refunded, jobs_stuck (neither settled nor
                        refunded nor expired when the run ends), recomputed_products
                        (products one miner computed twice), job_products (all the
                        miners' job products) and job_products_beyond_paid (those
                        beyond one per paid job: a job two miners computed, or one that
                        ended unpaid), jobs_computed_by_two_miners (jobs committed on
                        chain by two or more miners), claims_lost (claims another
                        claim or the buyer's reclaim beat into a block; _in_span: while
                        demand was kept up)
  block_over_job        block work (2^256 / target, median) over one job's work

With ``--standalone`` each miner is a standalone `pouw miner` (one NumPy worker pinned
to a core, the path of a GPU miner) beside a node of its own; its counts come from its
status lines (one a second), and claims_lost is not counted (n/a).

    .venv/bin/python bench/bench_usefulness.py [--seconds 180] [--shape 256 1024 256]
        [--standalone]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.marketnet import (  # noqa: E402
    StandaloneMiner,
    buyer_client,
    start_net,
    wait,
    write_genesis,
)
from chain.txkind import TxKind  # noqa: E402
from wallet.job_terms import JobError  # noqa: E402

SETTLED = ("paid", "refunded", "expired", "reclaimed")


def counters(miners: list) -> tuple[int, int, int, int, int]:  # type: ignore[type-arg]
    """(all multiply-adds, job multiply-adds, recomputed products, claims lost, job
    products) of all the miners together."""
    total = jobs = recomputed = lost = products = 0
    for node in miners:
        if isinstance(node, StandaloneMiner):
            status = node.status()
            total += status["multiply_adds"]
            jobs += status["job_multiply_adds"]
            recomputed += status["recomputed"]
            products += status["job_products"]
            continue
        info = node.call("getmininginfo")
        total += int(info["localmultiplyadds"])
        jobs += int(info["localjobmultiplyadds"])
        market = info["market"] or {}
        recomputed += int(market.get("recomputed_products", 0))
        lost += int(market.get("claims_lost", 0))
        products += int(market.get("products", 0))
    return total, jobs, recomputed, lost, products


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0, help="how long demand is kept up")
    p.add_argument("--miners", type=int, default=3)
    p.add_argument("--shape", type=int, nargs=3, default=[256, 1024, 256], metavar=("M", "K", "N"))
    p.add_argument("--block-ratio", type=int, default=250, help="block work over job work")
    p.add_argument("--spacing", type=int, default=10, help="target seconds between blocks")
    p.add_argument("--standalone", action="store_true",
                   help="standalone `pouw miner` processes, each beside a node of its own")
    p.add_argument("--workdir", type=Path,
                   help="keep the nodes' data and logs here (default: a temporary folder)")
    args = p.parse_args()
    m, k, n = args.shape
    job_work = m * k * n
    market = {"claim_slack_s": 120, "challenge_s": 10, "reveal_s": 10, "min_window_blocks": 2}
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            root = args.workdir
            if root.exists():  # a run's nodes would meet the last run's chains
                print(f"--workdir {root} exists: give a new folder (or remove it)",
                      file=sys.stderr)  # fmt: skip
                return 2
            root.mkdir(parents=True)
        genesis = write_genesis(
            root / "genesis.json", args.spacing, job_work * args.block_ratio, market
        )
        miners: list[Any]
        if args.standalone:
            buyer = start_net(root, genesis, 0)[0]
            miners = [
                # its own work in the jobs' shape, as a GPU miner asks for a shape that
                # fills its card (the network's small filler shape is all overhead)
                StandaloneMiner(root, genesis, buyer, i - 1, i, "--status-every", "1",
                                "--shape", f"{m},{k},{n}")  # fmt: skip
                for i in range(1, args.miners + 1)
            ]
        else:
            buyer, miners = start_net(root, genesis, args.miners)
        try:
            for node in miners:  # engines compiled, first products done
                wait("a product", lambda nd=node: counters([nd])[0] > 0, 180)
            client = buyer_client(buyer)
            rng = np.random.default_rng(3)
            a = rng.integers(-64, 64, (m, k), dtype=np.int8)
            b = rng.integers(-64, 64, (k, n), dtype=np.int8)
            bounty = job_work // 1000
            submitted: list[str] = []
            start_total = counters(miners)[0]
            first_claim: tuple[int, int, int] | None = None
            t_end = time.monotonic() + args.seconds
            # open jobs kept above what the miners hold: a few blocks' worth of jobs
            backlog = 4 * args.block_ratio
            while time.monotonic() < t_end:
                info = buyer.call("getmarketinfo")
                waiting = info["claimable"]  # on chain or pooled, and no claim goes for it
                if waiting < backlog // 2:
                    for _ in range(min(100, backlog - waiting)):
                        # every job a product of its own (a row of A differs): identical
                        # operands under one header would draw identical lottery tickets
                        a[0, :8] = np.frombuffer(len(submitted).to_bytes(8, "big"), np.int8) % 64
                        submitted.append(client.submit(a, b, bounty=bounty))
                if first_claim is None and info["jobs"]["committed"] + info["jobs"]["paid"]:
                    total, jobs_done, _, lost_before, _ = counters(miners)
                    first_claim = (total, jobs_done, lost_before)  # jobs flow: the span starts
                time.sleep(0.5)
            demand_end = counters(miners)
            # stop: every submitted job must end; measure the miners at the last delivery
            for job_id in submitted:
                if buyer.call("getjob", job_id)["status"] == "open":
                    with contextlib.suppress(JobError):  # claimed meanwhile: it delivers
                        client.reclaim(job_id)  # the rest of the backlog: cancelled

            def delivered() -> bool:
                states = [buyer.call("getjob", j)["status"] for j in submitted]
                return all(s not in ("open", "claimed", "pending") for s in states)

            try:
                wait("every claimed job delivered", delivered, 300)
            except RuntimeError:
                late = [buyer.call("getjob", j) for j in submitted]
                late = [j for j in late if j["status"] in ("open", "claimed", "pending")]
                print(f"# {len(late)} job(s) not delivered, e.g. {late[:2]}", flush=True)
                for name, node in (("buyer", buyer), *((f"miner{i}", m) for i, m in
                                                       enumerate(miners, 1))):  # fmt: skip
                    node = getattr(node, "node", node)  # a standalone miner's own node
                    tip = node.call("getblockchaininfo")
                    pool = node.call("getmempoolinfo")
                    mining = node.call("getmininginfo")
                    print(f"# {name}: height {tip['blocks']}, median time "
                          f"{time.time() - tip['mediantime']:.0f} s ago, pool {pool['size']} "
                          f"txs ({pool['pending']} pending), products "
                          f"{mining.get('localproducts')}, market {mining.get('market')}",
                          flush=True)  # fmt: skip
                print("# rerun with --workdir DIR to keep every node's log", flush=True)
                raise
            end_total, end_jobs, recomputed, lost, products = counters(miners)
            wait("every job settled", lambda: all(
                buyer.call("getjob", j)["status"] in SETTLED for j in submitted), 120)  # fmt: skip
            jobs = [buyer.call("getjob", j) for j in submitted]
            paid = [j for j in jobs if j["status"] == "paid"]
            paid_work = sum(j["multiply_adds"] for j in paid)
            # Of the work in the span, the share spent on job products, times the share
            # of all job products computed that were paid (lost or duplicated ones not).
            start = first_claim or (start_total, 0, 0)
            span_total = demand_end[0] - start[0]
            span_jobs = demand_end[1] - start[1]
            paid_share = paid_work / max(1, end_jobs)
            targets = [
                int(buyer.call("getblockheader", buyer.call("getblockhash", h))["target"], 16)
                for h in range(1, buyer.call("getblockcount") + 1)
            ]
            pooled = buyer.call("getrawmempool")
            print(f"jobs_submitted={len(submitted)}")
            print(f"jobs_settled={len(paid)}")
            print(f"jobs_refunded={sum(j['status'] == 'refunded' for j in jobs)}")
            print(f"jobs_reclaimed={sum(j['status'] == 'reclaimed' for j in jobs)}")
            print(f"jobs_stuck={sum(j['status'] not in SETTLED for j in jobs)}")
            print(f"txs_left_in_pool={len(pooled)}")
            print(f"recomputed_products={recomputed}")
            # every paid job needs one product: the rest went to jobs that ended unpaid
            # or were computed by two miners (recomputed_products counts one miner's own)
            print(f"job_products={products}")
            print(f"job_products_beyond_paid={products - len(paid)}")
            print(f"jobs_computed_by_two_miners={_jobs_committed_twice(buyer, len(targets))}")
            print(f"claims_lost={'n/a' if args.standalone else lost}")
            print(f"claims_lost_in_span={'n/a' if args.standalone else demand_end[3] - start[2]}")
            print(f"useful_fraction={span_jobs / max(1, span_total) * paid_share:.3f}")
            print(f"useful_fraction_all={paid_work / max(1, end_total - start_total):.3f}")
            print(f"paid_share_of_job_products={paid_share:.3f}")
            print(f"paid_multiply_adds={paid_work}")
            print(f"job_multiply_adds_computed={end_jobs}")
            print(f"span_multiply_adds={span_total}")
            block_work = statistics.median(2**256 // t for t in targets)
            print(f"block_over_job={block_work / job_work:.0f}")
            print(f"blocks={len(targets)}")
        finally:
            for node in [buyer, *miners]:
                node.stop()
    return 0


def _jobs_committed_twice(node: Any, height: int) -> int:
    """Jobs whose commits on chain (a losing one is included as failed) come from two or
    more miners: products computed by two miners, whoever was paid."""
    committers: dict[str, set[str]] = {}
    for h in range(1, height + 1):
        block = node.call("getblock", node.call("getblockhash", h), 2)
        for tx in block["tx"]:
            if tx["kind"] == TxKind.JOB_COMMIT:
                committers.setdefault(tx["payload"][:64], set()).add(tx["sender"])
    return sum(len(senders) > 1 for senders in committers.values())


if __name__ == "__main__":
    sys.exit(main())
