"""Argument types the wallet's and the buyer's commands share: each refuses a value
with one line that says what to give, before anything is signed or sent."""

from __future__ import annotations

import argparse
import math

from consensus.ints import U64_MAX


def positive_arg(text: str) -> int:
    """A whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def nonce_arg(text: str) -> int:
    """A transaction nonce: a whole number from 0 to 2^64 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= U64_MAX:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: a nonce is 0 to {U64_MAX} (leave it out for the "
            "account's next one)"
        )
    return value


def seconds_arg(text: str) -> float:
    """A finite number of seconds, 0 or more (0: do not wait)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds, 0 or more")
    return value

