"""Header requests sized and timed by bytes (p2p/headerpace.py): slow start from the
slowest link we time for, growth with the measured rate up to the cap, timeouts for
the bytes asked, and short end-of-chain replies that cannot drag the estimate down."""

from __future__ import annotations

import pytest

from p2p.headerpace import MIN_LINK_RATE, MIN_REQUEST_BYTES, HeaderPace
from p2p.protocol import HEADERS_SOFT_BYTES

KIB = 1024


def test_first_request_assumes_the_slowest_link() -> None:
    pace = HeaderPace(reply_s=10.0)
    assert pace.request(sized=True) == 10 * MIN_LINK_RATE == 160 * KIB
    assert pace.timeout(20.0) == pytest.approx(20.0 + 10.0)


def test_requests_grow_with_a_fast_link_up_to_the_cap() -> None:
    pace = HeaderPace(reply_s=10.0)
    pace.request(sized=True)
    pace.replied(160 * KIB, 0.01)  # loopback: 16 MiB/s
    assert pace.request(sized=True) == HEADERS_SOFT_BYTES
    assert pace.rate == pytest.approx(16_384_000)
    assert pace.timeout(20.0) == pytest.approx(20.0 + HEADERS_SOFT_BYTES / 8_192_000)
    capped = HeaderPace(reply_s=10.0, max_bytes=30_000)
    capped.replied(160 * KIB, 0.01)
    assert capped.request(sized=True) == 30_000


def test_a_slow_lossy_link_gets_small_requests_and_long_timeouts() -> None:
    pace = HeaderPace(reply_s=10.0)
    pace.request(sized=True)
    pace.replied(160 * KIB, 8.0)  # 20 KiB/s
    asked = pace.request(sized=True)
    assert asked == 200 * KIB
    assert pace.timeout(20.0) == pytest.approx(20.0 + asked / MIN_LINK_RATE)  # half: 10 KiB/s
    pace.replied(200 * KIB, 40.0)  # got slower: 5 KiB/s
    assert pace.request(sized=True) == max(MIN_REQUEST_BYTES, int(12.5 * KIB * 10))


def test_a_short_reply_does_not_lower_the_estimate() -> None:
    pace = HeaderPace(reply_s=10.0)
    pace.replied(HEADERS_SOFT_BYTES, 1.0)
    rate = pace.rate
    pace.request(sized=True)
    pace.replied(5_000, 0.5)  # the last few headers: mostly latency
    assert pace.rate == rate


def test_a_peer_that_cannot_be_told_is_timed_for_the_largest_reply() -> None:
    pace = HeaderPace(reply_s=10.0)
    assert pace.request(sized=False) == 0
    assert pace.timeout(20.0) == pytest.approx(20.0 + HEADERS_SOFT_BYTES / MIN_LINK_RATE)
