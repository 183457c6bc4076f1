"""Difficulty: block work, the ASERT retarget, and the block-time limits.

The target is *per multiply-add*: a ticket standing for h*w*k multiply-adds wins
when it is below ``target * h*w*k`` (docs/PROTOCOL.md, "Difficulty"). So the
expected multiply-adds behind one block is 2^256 / target, which is its work for
fork choice, and the retarget never needs to know the shape that was mined.

The retarget is "aserti3-2d" as specified for Bitcoin Cash (2020-11-15 upgrade),
with two changes: it works on the full 256-bit target (no compact "bits"
encoding, so nothing is rounded to a 24-bit mantissa) and its anchor is the
genesis block. Everything is integer arithmetic; Python ints are unbounded, so
the guards below are only there to keep a hostile timestamp from asking for a
shift by billions of bits, and they return exactly what the unbounded formula
would.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.params import DifficultyParams

TARGET_BOUND = 2**256  # targets live in (0, 2^256)

# aserti3-2d fixed point: 16 fractional bits, and the cubic that approximates
# 2^x on [0, 1) as 1 + (C1*x + C2*x^2 + C3*x^3 + 2^47) / 2^48 with x in 1/2^16.
RADIX_BITS = 16
RADIX = 1 << RADIX_BITS
POLY_C1 = 195766423245049
POLY_C2 = 971821376
POLY_C3 = 5127
POLY_ROUND = 1 << 47
POLY_SHIFT = 48

# anchor_target < 2^256 and factor < 2^17, so anchor_target * factor < 2^273.
# Past these whole-number exponents the result is certainly clamped.
_MAX_SHIFTS = 256  # num_shifts >= 256: result >= 2^256 > max_target
_MIN_SHIFTS = -257  # num_shifts <= -257: result = floor(x / 2^273) = 0 -> 1

MEDIAN_TIME_SPAN = 11  # a block's time must exceed the median of its last 11 ancestors
MAX_FUTURE_BLOCK_TIME_S = 2 * 60 * 60  # nor lie more than 2 h ahead of the node's clock


def block_work(target: int) -> int:
    """Expected multiply-adds behind a block mined at ``target``: 2^256 // target."""
    if not 0 < target < TARGET_BOUND:
        raise ValueError(f"target {target} is outside (0, 2^256)")
    return TARGET_BOUND // target


def genesis_anchor_parent_time(params: DifficultyParams, genesis_time: int) -> int:
    """The anchor's "parent time" when the anchor is genesis, which has no parent.

    Defined as genesis_time - target_spacing_s: genesis counts as on schedule, so
    block 1 gets exactly genesis_target.
    """
    return genesis_time - params.target_spacing_s


def _trunc_div(a: int, b: int) -> int:
    """Division rounding toward zero (C's ``/``), which the spec requires."""
    q = abs(a) // b
    return q if a >= 0 else -q


def asert_factor(frac: int) -> int:
    """2^16 * 2^(frac / 2^16), approximated by the spec's cubic, for 0 <= frac < 2^16.

    Exact at both ends (65536 at 0, and 131071 just below 2^16, so the step into
    the next whole shift stays monotonic).
    """
    if not 0 <= frac < RADIX:
        raise ValueError(f"fraction {frac} is outside [0, 2^16)")
    poly = POLY_C1 * frac + POLY_C2 * frac * frac + POLY_C3 * frac * frac * frac + POLY_ROUND
    return RADIX + (poly >> POLY_SHIFT)


def asert_exponent(
    params: DifficultyParams,
    anchor_parent_time: int,
    anchor_height: int,
    parent_time: int,
    parent_height: int,
) -> int:
    """How far the chain is behind schedule, in half-lives, as 16.16 fixed point."""
    time_delta = parent_time - anchor_parent_time
    height_delta = parent_height - anchor_height
    off_schedule = time_delta - params.target_spacing_s * (height_delta + 1)
    return _trunc_div(off_schedule * RADIX, params.half_life_s)


def next_target(
    params: DifficultyParams,
    anchor_target: int,
    anchor_parent_time: int,
    anchor_height: int,
    parent_time: int,
    parent_height: int,
) -> int:
    """Required target of the block at ``parent_height + 1``, in [1, max_target].

    ``parent_*`` is the block being built on (the spec's "evaluation block"); the
    anchor is genesis (height 0, ``anchor_parent_time`` from
    ``genesis_anchor_parent_time``). Any timestamps are accepted, however far off;
    bad heights or an anchor target outside (0, max_target] are caller bugs.
    """
    params.validate()
    if not 0 < anchor_target <= params.max_target:
        raise ValueError("anchor target must be in (0, max_target]")
    if parent_height < anchor_height:
        raise ValueError("parent height is below the anchor height")

    exponent = asert_exponent(params, anchor_parent_time, anchor_height, parent_time, parent_height)
    num_shifts = exponent >> RADIX_BITS  # arithmetic shift: floor(exponent / 2^16)
    if num_shifts >= _MAX_SHIFTS:
        return params.max_target
    if num_shifts <= _MIN_SHIFTS:
        return 1
    frac = exponent - (num_shifts << RADIX_BITS)

    scaled = anchor_target * asert_factor(frac)
    shift = num_shifts - RADIX_BITS
    target = scaled << shift if shift >= 0 else scaled >> -shift
    if target == 0:
        return 1
    return min(target, params.max_target)


def median_time_past(timestamps: Sequence[int]) -> int:
    """Median of the last up to 11 block times, oldest first (Bitcoin's GetMedianTimePast).

    With an even count (fewer than 11 blocks exist) the upper median is taken,
    as Bitcoin does. An empty sequence is a caller bug: genesis always exists.
    """
    if not timestamps:
        raise ValueError("median time past needs at least one timestamp")
    window = sorted(timestamps[-MEDIAN_TIME_SPAN:])
    return window[len(window) // 2]


def time_after_mtp(block_time: int, mtp: int) -> bool:
    """A block's time must be strictly later than the median time past of its parent."""
    return block_time > mtp


def time_too_far_ahead(block_time: int, local_time: int) -> bool:
    """True when a block is more than 2 h ahead of the node's (network-adjusted) clock.

    Such a block is held back and looked at again later, not treated as invalid.
    """
    return block_time > local_time + MAX_FUTURE_BLOCK_TIME_S
