"""How a moderator's outcome (refund, release, split) divides a disputed deal's escrow. Pure: no I/O."""

from __future__ import annotations

from clawlist.core.errors import bad_request

OUTCOMES = ("refund", "release", "split")


def split_amounts(amount: int, outcome: str, buyer_amount: int | None) -> tuple[int, int]:
    """(to the buyer, to the seller before the fee) for a resolution; 400 on a bad split."""
    if outcome not in OUTCOMES:
        raise bad_request(f"outcome must be one of {', '.join(OUTCOMES)}", "CL_BAD_OUTCOME")
    if buyer_amount is not None and (isinstance(buyer_amount, bool) or not isinstance(buyer_amount, int)):
        raise bad_request("buyer_amount must be a whole number of minor units", "CL_BAD_AMOUNT")
    implied = {"refund": amount, "release": 0}
    if outcome in implied:
        if buyer_amount is not None and buyer_amount != implied[outcome]:
            raise bad_request(
                f"a {outcome} gives the buyer {implied[outcome]}; leave buyer_amount out or use split",
                "CL_BAD_AMOUNT",
            )
        buyer = implied[outcome]
    else:
        if buyer_amount is None or not 0 < buyer_amount < amount:
            raise bad_request(
                f"a split needs buyer_amount between 1 and {amount - 1} (the deal is {amount})",
                "CL_BAD_AMOUNT",
            )
        buyer = buyer_amount
    return buyer, amount - buyer


__all__ = ["OUTCOMES", "split_amounts"]
