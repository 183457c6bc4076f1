"""Amounts on the command line: decimal coins, or base units with a ``u`` suffix.

1 coin = 10^8 base units. ``"1.5"`` is 1.5 coins = 150000000 base units; at most 8
digits after the point (anything finer is an error, never rounded). ``"150000000u"``
is the same amount in base units (an integer). Output uses :func:`format_coins`.
"""

from __future__ import annotations

import re

from consensus.ints import U64_MAX

COIN = 10**8
DECIMALS = 8
_COINS = re.compile(r"^(\d+)(?:\.(\d*))?$|^\.(\d+)$")
_UNITS = re.compile(r"^(\d+)u$")


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
