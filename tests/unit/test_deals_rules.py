"""Pure rules of deals: the state machine's whole table, fee rounding, resolution splits, ids."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clawlist.actions.market.deals import split_amounts
from clawlist.actions.market.ledger import _net, transfer_id_for
from clawlist.actions.market.offers import deal_id_for
from clawlist.core.deal_states import Action, DealState, Role, is_final, transition
from clawlist.core.errors import ClawlistError
from clawlist.core.money import fee_for

A, S, R = Action, DealState, Role
BOTH = {R.BUYER, R.SELLER}
#: The table the issue describes: (action, from) -> (to, who may).
LEGAL = {
    (A.FUND, S.AGREED): (S.FUNDED, {R.BUYER}),
    (A.CANCEL, S.AGREED): (S.CANCELLED, BOTH),
    (A.EXPIRE, S.AGREED): (S.CANCELLED, {R.SYSTEM}),
    (A.DELIVER, S.FUNDED): (S.DELIVERED, {R.SELLER}),
    (A.CANCEL, S.FUNDED): (S.CANCELLED, BOTH),
    (A.DISPUTE, S.FUNDED): (S.DISPUTED, BOTH),
    (A.CONFIRM, S.DELIVERED): (S.COMPLETED, {R.BUYER}),
    (A.AUTO_CONFIRM, S.DELIVERED): (S.COMPLETED, {R.SYSTEM}),
    (A.DISPUTE, S.DELIVERED): (S.DISPUTED, BOTH),
    (A.RESOLVE, S.DISPUTED): (S.RESOLVED, {R.MODERATOR}),
}


@pytest.mark.parametrize(("action", "state", "role"), list(itertools.product(Action, DealState, Role)))
def test_every_cell_of_the_state_machine(action: Action, state: DealState, role: Role) -> None:
    legal = LEGAL.get((action, state))
    if legal is None:
        with pytest.raises(ClawlistError) as err:
            transition(state, action, role)
        assert (err.value.status, err.value.errcode) == (409, "CL_ILLEGAL_TRANSITION")
    elif role not in legal[1]:
        with pytest.raises(ClawlistError) as err:
            transition(state, action, role)
        assert (err.value.status, err.value.errcode) == (403, "CL_NOT_YOUR_MOVE")
    else:
        assert transition(state.value, action.value, role.value) == legal[0]


def test_final_states_allow_nothing() -> None:
    for state in DealState:
        moves = [a for a in Action if (a, state) in LEGAL]
        assert is_final(state) == (not moves), state


@pytest.mark.parametrize(
    ("amount", "bps", "fee"),
    [(1000, 250, 25), (999, 250, 24), (39, 250, 0), (40, 250, 1), (1, 10_000, 1), (12345, 0, 0), (0, 250, 0)],
)
def test_fee_rounds_down(amount: int, bps: int, fee: int) -> None:
    assert fee_for(amount, bps) == fee


@given(st.integers(0, 10**15), st.integers(0, 10_000))
def test_fee_never_exceeds_its_share(amount: int, bps: int) -> None:
    fee = fee_for(amount, bps)
    assert 0 <= fee <= amount
    assert fee * 10_000 <= amount * bps < (fee + 1) * 10_000


def test_fee_refuses_nonsense() -> None:
    for amount, bps in ((-1, 250), (10, -1), (10, 10_001)):
        with pytest.raises(ValueError):
            fee_for(amount, bps)


@given(st.integers(2, 10**12), st.data())
def test_splits_add_up(amount: int, data: st.DataObject) -> None:
    assert split_amounts(amount, "refund", None) == (amount, 0)
    assert split_amounts(amount, "release", None) == (0, amount)
    buyer = data.draw(st.integers(1, amount - 1))
    to_buyer, to_seller = split_amounts(amount, "split", buyer)
    assert to_buyer == buyer and to_buyer + to_seller == amount


@pytest.mark.parametrize(
    ("outcome", "buyer_amount"),
    [
        ("split", None),
        ("split", 0),
        ("split", 100),
        ("split", -1),
        ("split", True),
        ("refund", 1),
        ("release", 5),
        ("keep", None),
    ],
)
def test_bad_splits_are_refused(outcome: str, buyer_amount: object) -> None:
    with pytest.raises(ClawlistError) as err:
        split_amounts(100, outcome, buyer_amount)  # type: ignore[arg-type]
    assert err.value.status == 400


def test_entries_are_checked_and_netted() -> None:
    assert _net([("mint", -5), ("wallet:@a:x", 5), ("wallet:@a:x", 0)]) == {"mint": -5, "wallet:@a:x": 5}
    assert _net([("escrow:d", 5), ("escrow:d", -5)]) == {}
    for bad in (
        [("wallet:@a:x", 1.5)],
        [("wallet:@a:x", True)],
        [("bank", 1)],
        [("wallet:", 1)],
        [("fees", 10**16)],
    ):
        with pytest.raises(ValueError):
            _net(bad)  # type: ignore[arg-type]


def test_ids_are_derived_and_stable() -> None:
    assert deal_id_for("$a") == deal_id_for("$a") != deal_id_for("$b")
    assert deal_id_for("$a").startswith("dl_") and len(deal_id_for("$a")) == 19
    assert transfer_id_for("fund:x") == transfer_id_for("fund:x") != transfer_id_for("fund:y")
