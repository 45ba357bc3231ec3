"""The slash-command parser (core.slash): every command, well-formed and malformed, and a property
test that arbitrary text never raises anything but the parser's own usage error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawlist.core import slash
from clawlist.core.slash import (
    Balance,
    Counter,
    Deals,
    DealStep,
    Feedback,
    Help,
    Offer,
    Respond,
    Search,
    Sell,
    SlashError,
    parse,
)

CATEGORIES = ("electronics", "furniture", "services", "skills")


def p(text: str) -> slash.Command:
    return parse(text, CATEGORIES)


def refused(text: str, errcode: str = "CL_USAGE") -> SlashError:
    with pytest.raises(SlashError) as info:
        p(text)
    assert info.value.errcode == errcode, info.value
    assert info.value.status == 400
    return info.value


# -- /sell ------------------------------------------------------------------------------------------


def test_sell_full() -> None:
    cmd = p(
        '/sell 120 Road bike, 54 cm | Aluminium frame, new tyres #electronics cond=good loc="New York" '
        "country=us qty=2 tags=bike,road"
    )
    assert cmd == Sell(
        price=12000,
        title="Road bike, 54 cm",
        description="Aluminium frame, new tyres",
        category="electronics",
        quantity=2,
        condition="good",
        location="New York",
        country="US",
        tags=("bike", "road"),
    )


def test_sell_minimal_and_amount_forms() -> None:
    assert p("/sell 12 Lamp") == Sell(price=1200, title="Lamp")
    assert p("/sell 12.5 Lamp") == Sell(price=1250, title="Lamp")
    assert p("/sell 1,200 credits Old sofa") == Sell(price=120000, title="Old sofa")
    assert p("/SELL 0.01 Pin") == Sell(price=1, title="Pin")
    assert p("/list 3 cr Pen") == Sell(price=300, title="Pen")  # alias, currency word


def test_sell_description_on_next_lines_and_options_anywhere() -> None:
    cmd = p("/sell qty=3 9.99 Desk lamp #furniture\nWarm light.\nBarely used. cond=like-new")
    assert isinstance(cmd, Sell)
    assert (cmd.price, cmd.title, cmd.quantity, cmd.category) == (999, "Desk lamp", 3, "furniture")
    assert cmd.description == "Warm light.\nBarely used."
    assert cmd.condition == "like_new"


def test_sell_hashtags_that_are_not_categories_are_tags() -> None:
    cmd = p("/sell 5 Poster #vintage #furniture #retro | great #1 poster")
    assert isinstance(cmd, Sell)
    assert cmd.category == "furniture"
    assert cmd.tags == ("vintage", "retro")
    assert cmd.description == "great #1 poster"  # '#1' is not a hashtag
    # cat= names a category the server will check (a prohibited one is refused there, not here)
    other = p("/sell 5 Thing cat=weapons")
    assert isinstance(other, Sell) and other.category == "weapons"


def test_sell_unknown_key_stays_text() -> None:
    cmd = p("/sell 5 Cable type=usb-c")
    assert isinstance(cmd, Sell) and cmd.title == "Cable type=usb-c"


@pytest.mark.parametrize(
    ("text", "errcode"),
    [
        ("/sell", "CL_USAGE"),
        ("/sell 12", "CL_USAGE"),
        ("/sell 12 credits", "CL_USAGE"),
        ("/sell Lamp 12", "CL_USAGE"),
        ("/sell -5 Lamp", "CL_BAD_AMOUNT"),
        ("/sell 0 Lamp", "CL_BAD_AMOUNT"),
        ("/sell 99999999999999999 Lamp", "CL_BAD_AMOUNT"),
        ("/sell 12.345 Lamp", "CL_BAD_AMOUNT"),
        ("/sell 12 Lamp qty=0", "CL_USAGE"),
        ("/sell 12 Lamp qty=two", "CL_USAGE"),
        ("/sell 12 Lamp qty=1 quantity=2", "CL_USAGE"),
        ("/sell 12 Lamp #electronics #furniture", "CL_USAGE"),
        ("/sell 12 | only a description", "CL_USAGE"),
    ],
)
def test_sell_malformed(text: str, errcode: str) -> None:
    error = refused(text, errcode)
    assert error.command == "sell"
    assert error.usage == slash.USAGE["sell"]


def test_negative_amount_says_positive() -> None:
    assert "positive" in refused("/sell -5 Lamp", "CL_BAD_AMOUNT").message
    assert "over the limit" in refused("/offer abcdefgh 99999999999999999", "CL_BAD_AMOUNT").message


# -- /search ----------------------------------------------------------------------------------------


def test_search() -> None:
    assert p("/search") == Search()
    assert p("/search road bike #electronics min=10 max=150.5 loc=Berlin sort=price-asc limit=5") == Search(
        words="road bike",
        category="electronics",
        min_price=1000,
        max_price=15050,
        location="Berlin",
        sort="price_asc",
        limit=5,
    )
    assert p("/find lamp #cheap") == Search(words="lamp cheap")


@pytest.mark.parametrize(
    "text",
    [
        "/search x min=abc",
        "/search x max=-3",
        "/search x sort=best",
        "/search min=50 max=10",
        "/search limit=0",
    ],
)
def test_search_malformed(text: str) -> None:
    with pytest.raises(SlashError) as info:
        p(text)
    assert info.value.command == "search"


# -- negotiation ------------------------------------------------------------------------------------


def test_offer() -> None:
    assert p("/offer k3F9a2B1 100") == Offer(listing="k3F9a2B1", amount=10000)
    assert p("/offer $k3F9a2B1xyz 100 credits qty=2") == Offer(
        listing="k3F9a2B1xyz", amount=10000, quantity=2
    )
    assert p("/offer `k3F9a2B1`, 12.50") == Offer(listing="k3F9a2B1", amount=1250)
    assert p("/offer [k3F9a2B1] 7") == Offer(listing="k3F9a2B1", amount=700)
    assert p("/offer 100 k3F9a2B1") == Offer(listing="k3F9a2B1", amount=10000)  # order is clear
    assert p("/buy k3F9a2B1 5") == Offer(listing="k3F9a2B1", amount=500)


@pytest.mark.parametrize(
    ("text", "errcode"),
    [
        ("/offer", "CL_USAGE"),
        ("/offer k3F9a2B1", "CL_USAGE"),
        ("/offer k3F9a2B1 -5", "CL_BAD_AMOUNT"),
        ("/offer k3F9a2B1 0", "CL_BAD_AMOUNT"),
        ("/offer k3F9a2B1 lots", "CL_USAGE"),
        ("/offer k3F 10", "CL_USAGE"),  # too short to be a reference
        ("/offer k3F9a2B1 10 please", "CL_USAGE"),
        ("/offer k3F9a2B1 10 qty=-1", "CL_USAGE"),
    ],
)
def test_offer_malformed(text: str, errcode: str) -> None:
    error = refused(text, errcode)
    assert error.usage == slash.USAGE["offer"]


def test_counter() -> None:
    assert p("/counter 110") == Counter(offer=None, amount=11000)
    assert p("/counter 110 credits") == Counter(offer=None, amount=11000)
    assert p("/counter Xy7Qp2Lm 110 qty=1") == Counter(offer="Xy7Qp2Lm", amount=11000, quantity=1)
    refused("/counter")
    refused("/counter Xy7Qp2Lm", "CL_USAGE")
    refused("/counter Xy7Qp2Lm -1", "CL_BAD_AMOUNT")
    refused("/counter Xy7Qp2Lm 10 20")


def test_accept_reject_withdraw() -> None:
    assert p("/accept") == Respond("accept", None)
    assert p("/accept Xy7Qp2Lm") == Respond("accept", "Xy7Qp2Lm")
    refused("/accept Xy7Qp2Lm now")
    assert p("/reject") == Respond("reject", None)
    assert p("/reject too low") == Respond("reject", None, "too low")  # 'too' cannot be a reference
    assert p("/reject Xy7Qp2Lm too low") == Respond("reject", "Xy7Qp2Lm", "too low", "Xy7Qp2Lm too low")
    assert p("/withdraw k3F9a2B1") == Respond("withdraw", "k3F9a2B1")
    refused("/withdraw")
    refused("/withdraw a b")


# -- deals ------------------------------------------------------------------------------------------


def test_deal_steps() -> None:
    assert p("/fund") == DealStep("fund", None)
    assert p("/fund dl_abcdefgh") == DealStep("fund", "dl_abcdefgh")
    assert p("/pay dl_abcdefgh") == DealStep("fund", "dl_abcdefgh")
    assert p("/confirm dl_abcdefgh") == DealStep("confirm", "dl_abcdefgh")
    assert p("/cancel") == DealStep("cancel", None)
    refused("/fund dl_abcdefgh now")
    refused("/confirm a b")
    assert p("/delivered") == DealStep("delivered", None)
    assert p("/delivered dl_abcdefgh sent by mail") == DealStep(
        "delivered", "dl_abcdefgh", "sent by mail", "dl_abcdefgh sent by mail"
    )
    assert p("/delivered by mail") == DealStep("delivered", None, "by mail")
    assert p("/dispute dl_abcdefgh never arrived") == DealStep(
        "dispute", "dl_abcdefgh", "never arrived", "dl_abcdefgh never arrived"
    )
    assert p("/dispute scam") == DealStep("dispute", None, "scam")
    # one word that may be a deal or a reason: the server decides once it has looked
    assert p("/dispute dl_abcdefgh") == DealStep("dispute", "dl_abcdefgh", "", "dl_abcdefgh")
    refused("/dispute")


def test_feedback() -> None:
    assert p("/feedback dl_abcdefgh +1 fast and friendly") == Feedback("dl_abcdefgh", 1, "fast and friendly")
    assert p("/feedback dl_abcdefgh -1 never arrived") == Feedback("dl_abcdefgh", -1, "never arrived")
    assert p("/feedback dl_abcdefgh 0 ok") == Feedback("dl_abcdefgh", 0, "ok")
    assert p("/feedback +1 great") == Feedback(None, 1, "great")
    assert p("/rate dl_abcdefgh positive good") == Feedback("dl_abcdefgh", 1, "good")
    for bad in (
        "/feedback",
        "/feedback dl_abcdefgh",
        "/feedback dl_abcdefgh 5 wow",
        "/feedback dl_abcdefgh +1",
    ):
        assert refused(bad).usage == slash.USAGE["feedback"]


def test_balance_deals_help() -> None:
    assert p("/balance") == Balance()
    assert p("/wallet") == Balance()
    refused("/balance now")
    assert p("/deals") == Deals("open")
    assert p("/deals all") == Deals("all")
    assert p("/deals FUNDED") == Deals("funded")
    refused("/deals pending")
    assert p("/help") == Help()
    assert p("/help offer") == Help("offer")
    assert p("/help?") == Help()
    assert p("/sell: 5 Pen") == Sell(price=500, title="Pen")
    refused("/help a b")


def test_unknown_commands() -> None:
    error = refused("/frobnicate 12", "CL_UNKNOWN_COMMAND")
    assert "/help" in error.message and error.command is None
    assert "did you mean" not in error.message
    assert "(did you mean /offer?)" in refused("/offerr 12", "CL_UNKNOWN_COMMAND").message
    assert "(did you mean /sell?)" in refused("/sell12 Lamp", "CL_UNKNOWN_COMMAND").message
    refused("hello", "CL_USAGE")
    refused("/", "CL_USAGE")


# -- help texts -------------------------------------------------------------------------------------


def test_every_command_has_usage_details_and_a_parseable_example() -> None:
    assert set(slash.USAGE) == set(slash.DETAILS)
    for name, (_what, example) in slash.DETAILS.items():
        assert p(example).name == name, example
        assert slash.USAGE[name].startswith(f"/{name}")


def test_help_texts() -> None:
    overview = slash.help_text()
    for usage in slash.USAGE.values():
        assert usage in overview
    one = slash.help_text("/offer")
    assert one.startswith(slash.USAGE["offer"]) and "Example: /offer" in one
    assert slash.help_text("buy") == one  # an alias
    assert slash.help_text("nope").startswith("There is no command 'nope'")


def test_reply_fallback_is_ignored() -> None:
    body = "> <@system:test.local> Deal dl_abc agreed.\n> Next: /fund dl_abc\n\n/fund dl_abcdefgh"
    assert slash.strip_reply_fallback(body) == "/fund dl_abcdefgh"
    assert p(body) == DealStep("fund", "dl_abcdefgh")
    assert slash.strip_reply_fallback("> quoted\nno blank line") == "> quoted\nno blank line"
    assert slash.strip_reply_fallback("/balance") == "/balance"


def test_clean_ref() -> None:
    assert slash.clean_ref("$abcdefgh") == "abcdefgh"
    assert slash.clean_ref("(abcdefgh).") == "abcdefgh"
    assert slash.clean_ref("abc") is None
    assert slash.clean_ref("abc def") is None
    assert slash.clean_ref("héllo-wörld") is None


# -- never anything but a usage error ---------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        *(f"/{name}" for name in slash.USAGE),
        *(f"/{name}" for name in slash.ALIASES),
        "12",
        "-3",
        "0",
        "12.50",
        "1,200",
        "99999999999999999999",
        "credits",
        "qty=2",
        "qty=",
        "qty=-1",
        "cond=good",
        'loc="New',
        'York"',
        "max=5",
        "min=9",
        "sort=newest",
        "limit=3",
        "#electronics",
        "#furniture",
        "#x",
        "#",
        "|",
        "\n",
        "+1",
        "-1",
        "abcdefgh",
        "$abcdefgh",
        "dl_abcdefgh",
        "all",
        "open",
        "funded",
        "`",
        "“",
        "=",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=10), st.sampled_from([" ", "", "\n", "\t"]))
def test_parser_raises_only_usage_errors(words: list[str], sep: str) -> None:
    text = sep.join(words)
    try:
        cmd = parse(text, CATEGORIES)
    except SlashError as exc:
        assert exc.status == 400 and exc.errcode.startswith("CL_") and exc.message
        return
    assert cmd.name in slash.USAGE


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_on_arbitrary_text(text: str) -> None:
    for body in (text, "/" + text, "/sell " + text, "/offer " + text, "/feedback " + text):
        try:
            cmd = parse(body, CATEGORIES)
        except SlashError:
            continue
        assert cmd.name in slash.USAGE
