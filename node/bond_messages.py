"""How a miner says it lost a bond: the same words from the in-node miner
(node/market_commits.py) and the standalone `pouw miner` (node/remote_results.py), so
that an operator's log search finds both."""

from __future__ import annotations

LAPSED_BEFORE_COMMIT = (
    "our claim lapsed before our commit was sent, which would now fail: the bond goes to "
    "the buyer (is the node reachable, and the product as fast as the claim's deadline needs?)"
)
LAPSED_UNCOMMITTED = "our claim lapsed with no commit of ours on chain: the bond went to the buyer"
REFUNDED = (
    "refunded to its buyer after a challenge of our C or a probe not answered in time: "
    "the bond went to whoever challenged or probed"
)
