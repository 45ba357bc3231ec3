"""The slash commands' usage lines, help texts and aliases (what `/help` answers). Pure: no I/O."""

from __future__ import annotations

USAGE: dict[str, str] = {
    "sell": (
        "/sell <price> <title> [| description] [#category] [qty=N] [cond=new|like_new|good|fair|poor] "
        "[loc=<place>] [country=DE] [tags=a,b]"
    ),
    "search": "/search [words] [#category] [min=<price>] [max=<price>] [loc=<place>] "
    "[sort=relevance|newest|price_asc|price_desc|reputation] [limit=N]",
    "offer": "/offer <listing> <total amount> [qty=N]",
    "counter": "/counter [offer] <total amount> [qty=N]",
    "accept": "/accept [offer]",
    "reject": "/reject [offer] [reason]",
    "withdraw": "/withdraw <offer or listing>",
    "fund": "/fund [deal]",
    "delivered": "/delivered [deal] [note]",
    "confirm": "/confirm [deal]",
    "cancel": "/cancel [deal]",
    "dispute": "/dispute [deal] <reason>",
    "feedback": "/feedback [deal] <+1|0|-1> <comment>",
    "balance": "/balance",
    "deals": "/deals [open|all|agreed|funded|delivered|completed|disputed|resolved|cancelled]",
    "help": "/help [command]",
}

#: What each command does, with an example (shown by `/help <command>`).
DETAILS: dict[str, tuple[str, str]] = {
    "sell": (
        "List something for sale. The price is per unit, in credits. The title runs up to `|` (or the "
        "end of the first line); the description follows. Posted in this room when it is #market or a "
        "category room, otherwise in #market.",
        "/sell 120 Road bike, 54 cm | Aluminium frame, new tyres #sports cond=good loc=Berlin",
    ),
    "search": (
        "Find active listings. Each result starts with the listing's reference: use it in /offer.",
        "/search road bike #sports max=150",
    ),
    "offer": (
        "Offer to buy a listing. The amount is the total for all units (qty, default 1). The offer is "
        "posted in your DM with the seller, which is opened if needed; the negotiation continues there.",
        "/offer k3F9a2B1 100",
    ),
    "counter": (
        "Answer an offer made to you with another amount (total for all units).",
        "/counter Xy7Qp2Lm 110",
    ),
    "accept": (
        "Accept an offer made to you: this makes a deal. The buyer then pays with /fund.",
        "/accept Xy7Qp2Lm",
    ),
    "reject": ("Turn down an offer made to you, optionally saying why.", "/reject Xy7Qp2Lm too low"),
    "withdraw": (
        "Take back an open offer you made, or take one of your listings off the market.",
        "/withdraw k3F9a2B1",
    ),
    "fund": (
        "Buyer: pay the deal's amount into escrow from your balance. The seller is paid only when you "
        "confirm delivery.",
        "/fund Dm4Rt8Wq",
    ),
    "delivered": (
        "Seller: mark the deal delivered, with an optional note.",
        "/delivered Dm4Rt8Wq sent by mail",
    ),
    "confirm": (
        "Buyer: confirm you received it. The escrow is paid to the seller, minus the platform fee.",
        "/confirm Dm4Rt8Wq",
    ),
    "cancel": (
        "Cancel a deal: alone before it is funded; after funding both parties must /cancel.",
        "/cancel Dm4Rt8Wq",
    ),
    "dispute": (
        "Ask a moderator to decide a funded or delivered deal. The DM transcript is the evidence.",
        "/dispute Dm4Rt8Wq the item never arrived",
    ),
    "feedback": (
        "Rate the other party of a completed or resolved deal, once: +1 good, 0 neutral, -1 bad.",
        "/feedback Dm4Rt8Wq +1 fast and friendly",
    ),
    "balance": ("Show your credit balance and what is held in escrow for your deals.", "/balance"),
    "deals": ("List your deals (default: the open ones) with their references and next steps.", "/deals"),
    "help": ("Show all commands, or the help of one.", "/help offer"),
}

ALIASES = {
    "buy": "offer",
    "list": "sell",
    "find": "search",
    "pay": "fund",
    "deliver": "delivered",
    "shipped": "delivered",
    "received": "confirm",
    "rate": "feedback",
    "wallet": "balance",
    "commands": "help",
}


def usage(command: str) -> str:
    return USAGE.get(command, "")


def help_text(topic: str | None = None) -> str:
    """The reply to `/help` (every command) or `/help <command>` (one, with an example)."""
    if topic:
        name = canonical(topic.strip().lstrip("/").lower())
        if name is None:
            return f"There is no command '{topic}'.\n\n" + help_text(None)
        what, example = DETAILS[name]
        return f"{USAGE[name]}\n{what}\nExample: {example}"
    lines = [
        "Trade by sending these commands as plain messages (in #market, a category room, #help or a DM). "
        "Every command gets a reply. <...> is required, [...] optional; amounts are credits (12 or 12.50); "
        "options are key=value words; references are the ids the replies print (the first 8 characters "
        "are enough). In a DM you may leave out [offer] or [deal] when only one is open.",
        "",
        "Selling and buying:",
        *(f"  {USAGE[n]}" for n in ("sell", "search", "offer", "counter", "accept", "reject", "withdraw")),
        "Deals (escrow):",
        *(f"  {USAGE[n]}" for n in ("fund", "delivered", "confirm", "cancel", "dispute", "feedback")),
        "Your account:",
        *(f"  {USAGE[n]}" for n in ("balance", "deals", "help")),
        "",
        "A trade: seller /sell; buyer /search then /offer; seller /accept (or /counter, then the buyer "
        "/accept); buyer /fund; seller /delivered; buyer /confirm; both /feedback.",
    ]
    return "\n".join(lines)


def canonical(word: str) -> str | None:
    """The command a typed word names (aliases resolved, any case), or None when it names none."""
    name = word.lower()
    name = ALIASES.get(name, name)
    return name if name in USAGE else None


__all__ = ["ALIASES", "DETAILS", "USAGE", "canonical", "help_text", "usage"]
