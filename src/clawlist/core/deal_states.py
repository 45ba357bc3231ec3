"""The deal state machine. Pure: which transition is legal, from which state, by whom.

    agreed    --fund (buyer)-->                 funded
    agreed    --cancel (either)-->              cancelled
    agreed    --expire (system: not funded)-->  cancelled
    funded    --deliver (seller)-->             delivered
    funded    --cancel (both agree)-->          cancelled
    funded    --dispute (either)-->             disputed
    delivered --confirm (buyer)-->              completed
    delivered --auto_confirm (system)-->        completed
    delivered --dispute (either)-->             disputed
    disputed  --resolve (moderator)-->          resolved   (refund | release | split)

Money moves with the transitions: fund holds the price in the deal's escrow account; confirm and
resolve(release) pay the seller minus the fee; cancel after funding and resolve(refund) return
it to the buyer; resolve(split) does both in the given proportion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from clawlist.core.errors import ClawlistError


class DealState(StrEnum):
    AGREED = "agreed"
    FUNDED = "funded"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    DISPUTED = "disputed"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


class Role(StrEnum):
    BUYER = "buyer"
    SELLER = "seller"
    MODERATOR = "moderator"
    SYSTEM = "system"  # the scheduler: funding timeouts and auto-confirmation


class Action(StrEnum):
    FUND = "fund"
    DELIVER = "deliver"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    DISPUTE = "dispute"
    RESOLVE = "resolve"
    EXPIRE = "expire"  # system: an agreed deal nobody funded in time
    AUTO_CONFIRM = "auto_confirm"  # system: a delivered deal the buyer left alone


FINAL = frozenset({DealState.COMPLETED, DealState.RESOLVED, DealState.CANCELLED})


@dataclass(frozen=True)
class Transition:
    action: Action
    source: DealState
    target: DealState
    roles: frozenset[Role]


_T = Transition
_BOTH = frozenset({Role.BUYER, Role.SELLER})
TRANSITIONS: tuple[Transition, ...] = (
    _T(Action.FUND, DealState.AGREED, DealState.FUNDED, frozenset({Role.BUYER})),
    _T(Action.CANCEL, DealState.AGREED, DealState.CANCELLED, _BOTH),
    _T(Action.EXPIRE, DealState.AGREED, DealState.CANCELLED, frozenset({Role.SYSTEM})),
    _T(Action.DELIVER, DealState.FUNDED, DealState.DELIVERED, frozenset({Role.SELLER})),
    # after funding, a cancel needs both parties: the first asks, the second's cancel completes it
    _T(Action.CANCEL, DealState.FUNDED, DealState.CANCELLED, _BOTH),
    _T(Action.DISPUTE, DealState.FUNDED, DealState.DISPUTED, _BOTH),
    _T(Action.CONFIRM, DealState.DELIVERED, DealState.COMPLETED, frozenset({Role.BUYER})),
    _T(Action.AUTO_CONFIRM, DealState.DELIVERED, DealState.COMPLETED, frozenset({Role.SYSTEM})),
    _T(Action.DISPUTE, DealState.DELIVERED, DealState.DISPUTED, _BOTH),
    _T(Action.RESOLVE, DealState.DISPUTED, DealState.RESOLVED, frozenset({Role.MODERATOR})),
)
_BY_KEY = {(t.action, t.source): t for t in TRANSITIONS}


def transition(state: DealState | str, action: Action | str, role: Role | str) -> DealState:
    """The state after `action` by `role` from `state`; 409 CL_ILLEGAL_TRANSITION or 403 otherwise."""
    state, action, role = DealState(state), Action(action), Role(role)
    found = _BY_KEY.get((action, state))
    if found is None:
        allowed = sorted(
            t.action.value for t in TRANSITIONS if t.source == state and Role.SYSTEM not in t.roles
        )
        hint = (
            f"; from {state.value} you can: {', '.join(allowed)}" if allowed else f"; {state.value} is final"
        )
        raise ClawlistError(
            409, "CL_ILLEGAL_TRANSITION", f"cannot {action.value} a deal that is {state.value}{hint}"
        )
    if role not in found.roles:
        who = " or ".join(sorted(r.value for r in found.roles))
        raise ClawlistError(
            403, "CL_NOT_YOUR_MOVE", f"only the {who} can {action.value} a deal that is {state.value}"
        )
    return found.target


def is_final(state: DealState | str) -> bool:
    return DealState(state) in FINAL
