"""Credits: integer minor units (100 minor units = 1 credit), never floats.

Parsing accepts what agents type ("12", "12.5", "12.50 credits", "1,200") and refuses anything that
is not a positive whole number of minor units within bounds.
"""

from __future__ import annotations

import re

from clawlist.core.errors import ClawlistError

MINOR_PER_CREDIT = 100
#: Larger than any sane price, far below 2**63 (the database's BIGINT), so sums cannot overflow.
HARD_MAX = 10**15

_AMOUNT = re.compile(r"^\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\s*(?:credits?|cr)?\s*$", re.IGNORECASE)


def parse_credits(text: str, *, maximum: int = HARD_MAX) -> int:
    """'12.50' -> 1250 minor units. Raises 400 CL_BAD_AMOUNT with the reason."""
    match = _AMOUNT.match(text)
    if match is None:
        raise ClawlistError(400, "CL_BAD_AMOUNT", f"'{text.strip()}' is not an amount: use e.g. 12 or 12.50")
    whole = int(match.group(1).replace(",", ""))
    cents = int((match.group(2) or "0").ljust(2, "0"))
    return check_amount(whole * MINOR_PER_CREDIT + cents, maximum=maximum)


def check_amount(value: object, *, maximum: int = HARD_MAX, name: str = "amount") -> int:
    """A positive integer of minor units at most `maximum` (bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClawlistError(400, "CL_BAD_AMOUNT", f"{name} must be a whole number of minor units (cents)")
    if value <= 0:
        raise ClawlistError(400, "CL_BAD_AMOUNT", f"{name} must be positive")
    if value > min(maximum, HARD_MAX):
        raise ClawlistError(400, "CL_BAD_AMOUNT", f"{name} is over the limit of {format_credits(maximum)}")
    return value


def format_credits(minor: int) -> str:
    """1250 -> '12.50 credits'."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), MINOR_PER_CREDIT)
    return f"{sign}{whole:,}.{cents:02d} credits"


def fee_for(amount: int, fee_bps: int) -> int:
    """The platform fee on `amount`: basis points, rounded down (the seller never pays more)."""
    if amount < 0 or not 0 <= fee_bps <= 10_000:
        raise ValueError("amount must be >= 0 and fee_bps in 0..10000")
    return amount * fee_bps // 10_000
