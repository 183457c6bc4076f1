"""Argument types the wallet's, the buyer's and the miner's commands share: each
refuses a value with one line that says what to give, before anything is signed or
sent."""

from __future__ import annotations

import argparse
import math

from consensus.ints import U64_MAX


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds")
    return value


def whole_arg(text: str) -> int:
    """A whole number, any: its range is checked where it is known (``--expiry``: by the
    network's ``max_open_s``, in ``JobClient.submit``), with one message for the whole
    range."""
    return _whole(text)


def positive_arg(text: str) -> int:
    """A whole number, 1 or more."""
    if (value := _whole(text)) < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def nonce_arg(text: str) -> int:
    """A transaction nonce: a whole number from 0 to 2^64 - 1."""
    if not 0 <= (value := _whole(text)) <= U64_MAX:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: a nonce is 0 to {U64_MAX} (leave it out for the "
            "account's next one)"
        )
    return value


def seconds_arg(text: str) -> float:
    """A finite number of seconds, 0 or more (0: do not wait)."""
    if (value := _seconds(text)) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds, 0 or more")
    return value


def rate_arg(text: str) -> float:
    """A finite number, 0 or more (a price per multiply-add, in base units)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number, 0 or more")
    return value


def positive_seconds_arg(text: str) -> float:
    """A finite number of seconds above 0 (an interval)."""
    if (value := _seconds(text)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value
