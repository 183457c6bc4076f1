"""``pouw job ...``: submit a matrix product to the compute market and collect C.

    pouw job submit A.npy B.npy --bounty 1.5 [--expiry 200]
    pouw job status JOB_ID
    pouw job result JOB_ID -o C.npy --a A.npy --b B.npy

``submit`` checks that entries are integers in [-64, 63] (and says how to quantize
if not), uploads A and B to the node's blob endpoint (with its RPC cookie) and sends
JOB_SUBMIT. ``result`` downloads C, checks each row against the committed root and
C against A and B with Freivalds' test, and files the challenge itself when C is
wrong. Wiring: ``add_job_parser(subparsers)`` from node/cli.py's ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from wallet.amount import parse_amount
from wallet.jobs import DEFAULT_EXPIRY_BLOCKS, DEFAULT_JOB_FEE, JobClient, JobError

DEFAULT_BLOB_PORT_OFFSET = 3  # node/blobs.py: the blob endpoint is on rpc port + 3


def _client(args: argparse.Namespace) -> JobClient:
    from wallet import cli as wcli
    from wallet.rpc import RpcConnectionError, read_cookie

    network = wcli._network(args)  # noqa: SLF001 - shared option handling
    rpc = wcli._rpc(args, network)  # noqa: SLF001
    wallet = wcli._unlock(args, network) if args.command_needs_key else None  # noqa: SLF001
    blob = args.blob_url or f"http://127.0.0.1:{network.rpc_port + DEFAULT_BLOB_PORT_OFFSET}"
    try:
        auth: tuple[str, str] | None = read_cookie(wcli._datadir(args), network.name)  # noqa: SLF001
    except RpcConnectionError:  # read_cookie's error for a missing or malformed cookie
        auth = None
    key = wallet.signing_key if wallet is not None else None
    return JobClient(key, network, rpc, blob, auth)


def _load(path: Path, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read {name} from {path}: {exc}") from None


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    a, b = _load(args.a, "A"), _load(args.b, "B")
    job_id = client.submit(a, b, args.bounty, args.expiry, args.fee)
    print(json.dumps({"job_id": job_id}) if args.json else job_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = _client(args).status(args.job_id)
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    client = _client(args)
    a, b = _load(args.a_file, "A"), _load(args.b_file, "B")
    res = client.result(args.job_id, a.astype(np.int8), b.astype(np.int8),
                        challenge=not args.no_challenge)  # fmt: skip
    np.save(args.output, res.c)
    out: dict[str, Any] = {"verified": res.verified, "output": str(args.output)}
    if res.challenge_txid:
        out["challenge_txid"] = res.challenge_txid
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0 if res.verified else 1


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from wallet.keystore import WalletError
        from wallet.rpc import RpcError

        try:
            return int(handler(args))
        except (JobError, WalletError, RpcError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def add_job_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``job`` and its subcommands; each sets ``handler`` (returns an int)."""
    from wallet.cli import _add_common, _add_password

    job = subparsers.add_parser("job", help="compute market: submit products, fetch results")
    sub = job.add_subparsers(dest="job_command", required=True)

    def common(p: argparse.ArgumentParser, key: bool) -> None:
        _add_common(p, rpc=True)
        if key:
            _add_password(p)
        p.add_argument("--blob-url", help="the node's blob endpoint (default rpc port + 3)")
        p.set_defaults(command_needs_key=key)

    submit = sub.add_parser("submit", help="post A . B with a bounty")
    common(submit, True)
    submit.add_argument("a", type=Path, metavar="A.npy")
    submit.add_argument("b", type=Path, metavar="B.npy")
    submit.add_argument("--bounty", type=parse_amount, required=True,
                        help="escrowed reward: coins (1.5) or base units (150000000u)")  # fmt: skip
    submit.add_argument("--expiry", type=int, default=DEFAULT_EXPIRY_BLOCKS,
                        help="blocks the job stays open")  # fmt: skip
    submit.add_argument("--fee", type=parse_amount, default=DEFAULT_JOB_FEE,
                        help="transaction fee: coins or base units with a u suffix")  # fmt: skip
    submit.set_defaults(handler=_run(cmd_submit))

    status = sub.add_parser("status", help="a job's state on chain")
    common(status, False)
    status.add_argument("job_id")
    status.set_defaults(handler=_run(cmd_status))

    result = sub.add_parser("result", help="download and check C; challenge if wrong")
    common(result, True)
    result.add_argument("job_id")
    result.add_argument("-o", "--output", type=Path, required=True, metavar="C.npy")
    result.add_argument("--a", dest="a_file", type=Path, required=True, metavar="A.npy")
    result.add_argument("--b", dest="b_file", type=Path, required=True, metavar="B.npy")
    result.add_argument("--no-challenge", action="store_true", help="only report a wrong C")
    result.set_defaults(handler=_run(cmd_result))
    return job
