"""Amounts on the command line: decimal coins, or base units with a ``u`` suffix.

1 coin = 10^8 base units. ``"1.5"`` is 1.5 coins = 150000000 base units; at most 8
digits after the point (anything finer is an error, never rounded). ``"150000000u"``
is the same amount in base units (an integer). Output uses :func:`format_coins`.
"""

from __future__ import annotations

import argparse
import re

from consensus.ints import U64_MAX

COIN = 10**8
DECIMALS = 8
_COINS = re.compile(r"^(\d+)(?:\.(\d*))?$|^\.(\d+)$")
_UNITS = re.compile(r"^(\d+)u$")


# A fee above this per transaction is almost surely a slip (a bare number is coins:
# `--fee 1` is 10^8 base units, 10^5 times the default fee): refused unless --max-fee
# allows it, as bitcoind's -maxtxfee refuses absurd fees.
DEFAULT_MAX_FEE = COIN // 100


class AmountError(ValueError):
    """Text that is not an amount; the message says what is accepted."""


def parse_amount(text: str) -> int:
    """Base units of ``text``: "1.5" (coins) or "150000000u" (base units)."""
    s = text.strip().replace("_", "")
    m = _UNITS.match(s)
    if m:
        value = int(m.group(1))
    else:
        m = _COINS.match(s)
        if not m:
            raise AmountError(
                f"{text!r} is not an amount: write coins as 1.5 or base units as 150000000u"
            )
        whole = m.group(1) or "0"
        frac = m.group(2) if m.group(1) is not None else m.group(3)
        frac = frac or ""
        if len(frac) > DECIMALS:
            raise AmountError(f"{text!r} has more than {DECIMALS} decimals (1 coin = 10^8 units)")
        value = int(whole) * COIN + int(frac.ljust(DECIMALS, "0") or 0)
    if value > U64_MAX:
        raise AmountError(f"{text!r} is more than a u64 can hold")
    return value


def format_coins(units: int) -> str:
    """ "1.5" for 150000000 base units (trailing zeros dropped, at least one decimal)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), COIN)
    text = f"{frac:08d}".rstrip("0") or "0"
    return f"{sign}{whole}.{text}"


def amount_arg(text: str) -> int:
    """``parse_amount`` as an argparse ``type``: its message becomes the usage error."""
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_fee(fee: int, max_fee: int = DEFAULT_MAX_FEE) -> None:
    """Refuse a fee over ``max_fee`` base units (see DEFAULT_MAX_FEE)."""
    if fee > max_fee:
        raise AmountError(
            f"a fee of {format_coins(fee)} coins per transaction is above --max-fee "
            f"{format_coins(max_fee)}: a bare number is coins (write base units as 1000u), "
            "or raise --max-fee if you mean it"
        )
