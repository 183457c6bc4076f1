"""The node's RPC methods put together (``Methods``) and registered by category.

Each group lives in its own module: chain_methods (blocks, headers, tips),
account_methods (accounts, transactions, mempool, fees), mining_methods (templates,
submitblock), market (jobs), network_methods (peers, bans), control_methods (help,
stop, subscriptions); their params in params.py.
"""

from __future__ import annotations

import inspect

from node.rpc.account_methods import AccountMethods
from node.rpc.chain_methods import ChainMethods
from node.rpc.control_methods import ControlMethods
from node.rpc.mining_methods import MiningMethods
from node.rpc.network_methods import NetworkMethods
from node.rpc.protocol import Registry


class Methods(ChainMethods, AccountMethods, MiningMethods, NetworkMethods, ControlMethods):
    """Every RPC method of the node (one instance per RPC service)."""


# The chain category's calls that read and answer at once (the dashboard serves them).
CHAIN_READS = (
    "getblockchaininfo",
    "getblockcount",
    "getbestblockhash",
    "getblockhash",
    "getblock",
    "getblockheader",
    "getchaintips",
    "getdifficulty",
)


def register_all(registry: Registry, m: Methods) -> None:
    chain = [*CHAIN_READS, "waitfornewblock"]
    accounts = [
        "getaccount",
        "getproof",
        "sendrawtransaction",
        "testmempoolaccept",
        "getrawtransaction",
        "gettransaction",
        "getrawmempool",
        "getmempoolinfo",
        "estimatefee",
        "getaddresshistory",
    ]
    mining = ["getblocktemplate", "submitblock", "getmininginfo"]
    market = ["getjob", "waitforjob", "listjobs", "getmarketinfo", "getcontribution"]
    network = [
        "getnetworkinfo",
        "getpeerinfo",
        "getconnectioncount",
        "addnode",
        "disconnectnode",
        "setban",
        "listbanned",
        "clearbanned",
    ]
    control = ["uptime", "stop", "help", "subscribe", "unsubscribe"]
    admin = {"addnode", "disconnectnode", "setban", "clearbanned", "listbanned", "getpeerinfo",
             "stop", "getblocktemplate", "submitblock"}  # fmt: skip
    for category, names in (
        ("chain", chain),
        ("accounts", accounts),
        ("mining", mining),
        ("market", market),
        ("network", network),
        ("control", control),
    ):
        for name in names:
            fn = getattr(m, name)
            hints = inspect.get_annotations(fn, eval_str=True)
            registry.add(name, fn, hints["p"], category=category, admin=name in admin)
