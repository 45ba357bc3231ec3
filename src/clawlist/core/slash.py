"""Slash commands: the text an agent types (`/sell 120 Road bike | 54 cm, new tyres #sports`) parsed
into a command. Pure: no I/O. The usage and help texts are in `core.slash_help`, the lexer (tokens,
amounts, references, `SlashError`) in `core.slash_tokens`; both are re-exported here.

The grammar is small on purpose, so a language model gets it right on the first try:

- the command word comes first (`/sell`, case-insensitive), then its positional arguments in the
  order the usage line gives, then free text where the usage line names one;
- options are whole words `key=value` anywhere in the command (`qty=2`, `loc=Berlin`,
  `loc="New York"`), and `#category` picks a category; a word with an unknown key stays text;
- amounts are credits: `12`, `12.50`, `1,200` (an optional `credits` or `cr` after the number is
  ignored); the parser turns them into integer minor units (100 = 1 credit);
- references (listing, offer, deal) are the ids the server prints, or their first 8 characters.
  In a DM, a reference marked optional (`[offer]`, `[deal]`) may be left out when there is exactly
  one open offer or deal it could mean.

`parse` raises only `SlashError` (a `ClawlistError` that carries the usage line to show).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass

from clawlist.core.deal_states import DealState
from clawlist.core.slash_help import ALIASES, DETAILS, USAGE, canonical, help_text, usage
from clawlist.core.slash_tokens import (
    CURRENCY_WORDS,
    MAX_QUANTITY_DIGITS,
    REF_LENGTH,
    REF_MAX,
    REF_MIN,
    Args,
    SlashError,
    clean_ref,
    drop_currency_word,
    join_words,
    looks_like_amount,
    parse_amount,
    parse_quantity,
    parse_ref,
    plain_words,
    split_args,
)

# -- parsed commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sell:
    price: int
    title: str
    description: str = ""
    category: str | None = None
    quantity: int | None = None
    condition: str | None = None
    location: str | None = None
    country: str | None = None
    region: str | None = None
    tags: tuple[str, ...] = ()
    name: str = "sell"


@dataclass(frozen=True)
class Search:
    words: str = ""
    category: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    location: str | None = None
    sort: str | None = None
    limit: int | None = None
    name: str = "search"


@dataclass(frozen=True)
class Offer:
    listing: str
    amount: int
    quantity: int | None = None
    name: str = "offer"


@dataclass(frozen=True)
class Counter:
    offer: str | None
    amount: int
    quantity: int | None = None
    name: str = "counter"


@dataclass(frozen=True)
class Respond:
    """/accept, /reject and /withdraw: an offer (or, for /withdraw, a listing) and an optional reason."""

    name: str
    ref: str | None
    reason: str = ""
    text_if_no_ref: str | None = None


@dataclass(frozen=True)
class DealStep:
    """/fund, /delivered, /confirm, /cancel and /dispute. `text` is the note or the reason; when the
    reference is optional, `text_if_no_ref` is the text to use if `ref` turns out not to be one."""

    name: str
    ref: str | None
    text: str = ""
    text_if_no_ref: str | None = None


@dataclass(frozen=True)
class Feedback:
    deal: str | None
    rating: int
    comment: str
    name: str = "feedback"


@dataclass(frozen=True)
class Balance:
    name: str = "balance"


@dataclass(frozen=True)
class Deals:
    state: str = "open"  # open | all | a deal state
    name: str = "deals"


@dataclass(frozen=True)
class Help:
    topic: str | None = None
    name: str = "help"


Command = Sell | Search | Offer | Counter | Respond | DealStep | Feedback | Balance | Deals | Help


# -- the command word and fixed vocabularies -------------------------------------------------------

_COMMAND = re.compile(r"/([A-Za-z][A-Za-z_-]*)")
_RATINGS = {
    "+1": 1,
    "1": 1,
    "+": 1,
    "positive": 1,
    "0": 0,
    "neutral": 0,
    "-1": -1,
    "-": -1,
    "−1": -1,
    "negative": -1,
}
_CONDITION_SPELLINGS = {"like-new": "like_new", "likenew": "like_new", "n/a": "not_applicable"}
_DEAL_FILTERS = ("open", "all", *(s.value for s in DealState))


# -- the commands ---------------------------------------------------------------------------------

_SELL_KEYS = {
    "qty": "qty",
    "quantity": "qty",
    "cond": "cond",
    "condition": "cond",
    "loc": "loc",
    "location": "loc",
    "country": "country",
    "region": "region",
    "tags": "tags",
    "tag": "tags",
    "cat": "cat",
    "category": "cat",
}


def _pick_category(command: str, args: Args, categories: Collection[str]) -> tuple[str | None, list[str]]:
    """The category (from `cat=` or a #hashtag naming a category room) and the other hashtags."""
    known = [h for h in args.hashtags if h in categories]
    category = None
    if "cat" in args.options:
        category = args.options["cat"].strip().lstrip("#").lower() or None
    for tag in known:
        if category is not None and tag != category:
            raise SlashError("CL_USAGE", f"give one category, not #{category} and #{tag}", command)
        category = tag
    return category, [h for h in args.hashtags if h != category]


def _parse_sell(source: str, categories: Collection[str]) -> Sell:
    args = split_args("sell", source, _SELL_KEYS, hashtags=True)
    if not args.words:
        raise SlashError("CL_USAGE", "/sell needs a price and a title", "sell")
    first = args.words[0]
    if not looks_like_amount(first.text):
        raise SlashError(
            "CL_USAGE", f"the price comes first, e.g. /sell 120 Road bike (got '{first.text}')", "sell"
        )
    price = parse_amount("sell", first.text, "price")
    after_price = first.end
    if len(args.words) > 1 and args.words[1].text.lower() in CURRENCY_WORDS:
        after_price = args.words[1].end
    args.removed.append((0, after_price))
    text = args.text_without_options()
    if "|" in text:
        title, _, description = text.partition("|")
    else:
        title, _, description = text.strip().partition("\n")
    title = " ".join(title.split())
    description = description.strip()
    if not title:
        raise SlashError("CL_USAGE", "/sell needs a title after the price", "sell")
    options = args.options
    category, other_tags = _pick_category("sell", args, categories)
    condition = options.get("cond")
    if condition is not None:
        condition = condition.strip().lower().replace(" ", "_")
        condition = _CONDITION_SPELLINGS.get(condition, condition.replace("-", "_"))
    tags: list[str] = []
    for tag in [*options.get("tags", "").split(","), *other_tags]:
        tag = tag.strip().lstrip("#")
        if tag and tag not in tags:
            tags.append(tag)
    return Sell(
        price=price,
        title=title,
        description=description,
        category=category,
        quantity=parse_quantity("sell", options["qty"]) if "qty" in options else None,
        condition=condition or None,
        location=options.get("loc") or None,
        country=(options.get("country") or "").strip().upper() or None,
        region=options.get("region") or None,
        tags=tuple(tags),
    )


_SEARCH_KEYS = {
    "min": "min",
    "min_price": "min",
    "max": "max",
    "max_price": "max",
    "loc": "loc",
    "location": "loc",
    "sort": "sort",
    "limit": "limit",
    "cat": "cat",
    "category": "cat",
}
SORTS = ("relevance", "newest", "price_asc", "price_desc", "reputation")


def _parse_search(source: str, categories: Collection[str]) -> Search:
    args = split_args("search", source, _SEARCH_KEYS, hashtags=True)
    options = args.options
    category, other_tags = _pick_category("search", args, categories)
    sort = options.get("sort")
    if sort is not None:
        sort = sort.lower().replace("-", "_")
        if sort not in SORTS:
            raise SlashError("CL_USAGE", f"sort= must be one of {', '.join(SORTS)}", "search")
    limit = None
    if "limit" in options:
        limit = parse_quantity("search", options["limit"])
    min_price = parse_amount("search", options["min"], "min price") if "min" in options else None
    max_price = parse_amount("search", options["max"], "max price") if "max" in options else None
    if min_price is not None and max_price is not None and min_price > max_price:
        raise SlashError("CL_USAGE", "min= is above max=", "search")
    return Search(
        words=" ".join([*(t.text for t in args.words), *other_tags]),
        category=category,
        min_price=min_price,
        max_price=max_price,
        location=options.get("loc") or None,
        sort=sort,
        limit=limit,
    )


_QTY_KEYS = {"qty": "qty", "quantity": "qty"}


def _parse_offer(source: str) -> Offer:
    args = split_args("offer", source, _QTY_KEYS)
    words = args.words
    if len(words) < 2:
        raise SlashError("CL_USAGE", "/offer needs a listing reference and an amount", "offer")
    listing, amount_token = words[0], words[1]
    if looks_like_amount(listing.text) and not looks_like_amount(amount_token.text):
        listing, amount_token = amount_token, listing  # "/offer 100 k3F9a2B1": the order is clear
    ref = parse_ref("offer", listing, "listing")
    amount = parse_amount("offer", amount_token.text)
    words = drop_currency_word(words, 1)
    if len(words) > 2:
        raise SlashError("CL_USAGE", f"unexpected words after the amount: {join_words(words[2:])}", "offer")
    quantity = parse_quantity("offer", args.options["qty"]) if "qty" in args.options else None
    return Offer(listing=ref, amount=amount, quantity=quantity)


def _parse_counter(source: str) -> Counter:
    args = split_args("counter", source, _QTY_KEYS)
    words = args.words
    quantity = parse_quantity("counter", args.options["qty"]) if "qty" in args.options else None
    if not words:
        raise SlashError("CL_USAGE", "/counter needs an amount", "counter")
    if len(words) == 1 or (len(words) == 2 and words[1].text.lower() in CURRENCY_WORDS):
        return Counter(offer=None, amount=parse_amount("counter", words[0].text), quantity=quantity)
    ref = parse_ref("counter", words[0], "offer")
    amount = parse_amount("counter", words[1].text)
    words = drop_currency_word(words, 1)
    if len(words) > 2:
        raise SlashError("CL_USAGE", f"unexpected words after the amount: {join_words(words[2:])}", "counter")
    return Counter(offer=ref, amount=amount, quantity=quantity)


def _parse_respond(name: str, source: str) -> Respond:
    words = plain_words(name, source)
    if name == "withdraw":
        if not words:
            raise SlashError("CL_USAGE", "/withdraw needs the reference of your offer or listing", name)
        if len(words) > 1:
            raise SlashError("CL_USAGE", "/withdraw takes one reference", name)
        return Respond(name, parse_ref(name, words[0], "offer or listing"))
    if name == "accept":
        if len(words) > 1:
            raise SlashError("CL_USAGE", "/accept takes one offer reference (or none in a DM)", name)
        return Respond(name, parse_ref(name, words[0], "offer") if words else None)
    # reject: [offer] [reason]
    if not words:
        return Respond(name, None)
    whole = " ".join(w.text for w in words)
    ref = clean_ref(words[0].text)
    if ref is None:
        return Respond(name, None, whole)
    return Respond(name, ref, " ".join(w.text for w in words[1:]), text_if_no_ref=whole)


def _parse_deal_step(name: str, source: str) -> DealStep:
    words = plain_words(name, source)
    if name in ("fund", "confirm", "cancel"):
        if len(words) > 1:
            raise SlashError("CL_USAGE", f"/{name} takes one deal reference (or none in a DM)", name)
        return DealStep(name, parse_ref(name, words[0], "deal") if words else None)
    # delivered [deal] [note] / dispute [deal] <reason>
    whole = " ".join(w.text for w in words)
    if not words:
        if name == "dispute":
            raise SlashError("CL_USAGE", "/dispute needs a reason", name)
        return DealStep(name, None)
    ref = clean_ref(words[0].text)
    if ref is None:
        if name == "dispute" and not whole:
            raise SlashError("CL_USAGE", "/dispute needs a reason", name)
        return DealStep(name, None, whole)
    rest = " ".join(w.text for w in words[1:])
    if name == "dispute" and not rest:
        # "/dispute <deal>" without a reason, or "/dispute <one-word reason>" in a DM: let the
        # caller decide once it knows whether the word is a deal.
        return DealStep(name, ref, "", text_if_no_ref=whole)
    return DealStep(name, ref, rest, text_if_no_ref=whole)


def _rating(text: str) -> int | None:
    return _RATINGS.get(text.strip().lower())


def _parse_feedback(source: str) -> Feedback:
    words = plain_words("feedback", source)
    if not words:
        raise SlashError("CL_USAGE", "/feedback needs a rating (+1, 0 or -1) and a comment", "feedback")
    deal: str | None = None
    if _rating(words[0].text) is None:
        deal = parse_ref("feedback", words[0], "deal")
        words = words[1:]
    if not words or _rating(words[0].text) is None:
        got = f" (got '{words[0].text}')" if words else ""
        raise SlashError("CL_USAGE", f"the rating is +1, 0 or -1{got}", "feedback")
    rating = _rating(words[0].text)
    assert rating is not None
    comment = " ".join(w.text for w in words[1:])
    if not comment:
        raise SlashError("CL_USAGE", "/feedback needs a comment after the rating", "feedback")
    return Feedback(deal=deal, rating=rating, comment=comment)


def _parse_deals(source: str) -> Deals:
    words = plain_words("deals", source)
    if not words:
        return Deals()
    state = words[0].text.lower().strip("[]")
    if len(words) > 1 or state not in _DEAL_FILTERS:
        raise SlashError("CL_USAGE", f"/deals takes one of: {', '.join(_DEAL_FILTERS)}", "deals")
    return Deals(state)


def strip_reply_fallback(body: str) -> str:
    """The body without a Matrix reply fallback: the quoted lines (`> <@user> ...`) a client puts
    before the text of a reply, up to the first blank line."""
    if not body.startswith("> "):
        return body
    lines = body.split("\n")
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index].strip():
        return body  # no blank line after the quote: not a fallback
    return "\n".join(lines[index + 1 :])


def _unknown(typed: str, closest_to: str) -> SlashError:
    known = [*USAGE, *ALIASES]
    close = difflib.get_close_matches(closest_to.lower(), known, n=1, cutoff=0.6)
    guess = f" (did you mean /{ALIASES.get(close[0], close[0])}?)" if close else ""
    return SlashError("CL_UNKNOWN_COMMAND", f"unknown command /{typed}{guess}: send /help to see them all")


def parse(body: str, categories: Collection[str] = ()) -> Command:
    """The command in a message body. `categories`: the category names a #hashtag may pick (other
    hashtags are tags in /sell and search words in /search). Raises `SlashError` (with the usage
    line) when it is malformed or unknown (errcode CL_UNKNOWN_COMMAND)."""
    if not isinstance(body, str):
        raise SlashError("CL_USAGE", "a command is text starting with /")
    text = strip_reply_fallback(body).strip()
    match = _COMMAND.match(text)
    if match is None:
        raise SlashError("CL_USAGE", "a command starts with / and a word, e.g. /help")
    word = match.group(1)
    name = canonical(word)
    rest = text[match.end() :]
    if name is not None and rest[:1] in ("?", "!", ".", ":", ","):
        rest = rest[1:]  # "/help?", "/sell: 12 Lamp"
    if rest and not rest[0].isspace():
        # "/sell120 ..." or "/help?": the command word must end with a space
        raise _unknown(word + rest.split()[0], name or word)
    if name is None:
        raise _unknown(word, word)
    source = rest
    if name == "sell":
        return _parse_sell(source, categories)
    if name == "search":
        return _parse_search(source, categories)
    if name == "offer":
        return _parse_offer(source)
    if name == "counter":
        return _parse_counter(source)
    if name in ("accept", "reject", "withdraw"):
        return _parse_respond(name, source)
    if name in ("fund", "delivered", "confirm", "cancel", "dispute"):
        return _parse_deal_step(name, source)
    if name == "feedback":
        return _parse_feedback(source)
    if name == "balance":
        if source.strip():
            raise SlashError("CL_USAGE", "/balance takes no arguments", name)
        return Balance()
    if name == "deals":
        return _parse_deals(source)
    topic = source.strip().split()
    if len(topic) > 1:
        raise SlashError("CL_USAGE", "/help takes one command name", name)
    return Help(topic[0] if topic else None)


__all__ = [
    "ALIASES",
    "DETAILS",
    "MAX_QUANTITY_DIGITS",
    "REF_LENGTH",
    "REF_MAX",
    "REF_MIN",
    "SORTS",
    "USAGE",
    "Balance",
    "Command",
    "Counter",
    "DealStep",
    "Deals",
    "Feedback",
    "Help",
    "Offer",
    "Respond",
    "Search",
    "Sell",
    "SlashError",
    "clean_ref",
    "help_text",
    "parse",
    "strip_reply_fallback",
    "usage",
]
