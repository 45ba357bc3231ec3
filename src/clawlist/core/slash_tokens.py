"""The slash-command lexer: words, key=value options, amounts, quantities, references, SlashError."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clawlist.core.errors import ClawlistError
from clawlist.core.money import HARD_MAX, parse_credits
from clawlist.core.slash_help import USAGE

#: The shortest reference prefix accepted (ids are printed with their first REF_LENGTH characters).
REF_MIN = 6
REF_LENGTH = 8
REF_MAX = 255
MAX_QUANTITY_DIGITS = 9


class SlashError(ClawlistError):
    """A command that cannot be parsed: the message says why, `usage` is the line to show."""

    def __init__(self, errcode: str, message: str, command: str | None = None) -> None:
        self.command = command
        self.usage = USAGE.get(command, "") if command else ""
        super().__init__(400, errcode, message)


_TOKEN = re.compile(
    r"(?P<opt>[A-Za-z_]+=(?:\"[^\"\n]*\"|“[^”\n]*”|'[^'\n]*'|[^\s\"“']\S*|(?=\s|$)))|(?P<word>\S+)"
)
_HASHTAG = re.compile(r"#([A-Za-z][A-Za-z0-9_-]{0,63})")
_REF = re.compile(r"[A-Za-z0-9_-]+")
CURRENCY_WORDS = frozenset({"credit", "credits", "cr"})


@dataclass
class Token:
    text: str
    start: int
    end: int
    key: str | None = None  # options: the key (lower case) and the value without quotes
    value: str = ""


@dataclass
class Args:
    """The arguments after the command word: options pulled out, the rest kept in order."""

    source: str
    words: list[Token] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    hashtags: list[str] = field(default_factory=list)
    removed: list[tuple[int, int]] = field(default_factory=list)

    def text_without_options(self) -> str:
        """The source with option words cut out, other spacing (and newlines) kept."""
        out, pos = [], 0
        for start, end in sorted(self.removed):
            if start > pos:
                out.append(self.source[pos:start])
            pos = max(pos, end)
        out.append(self.source[pos:])
        return "".join(out)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] in "\"“'" and value[-1] in "\"”'":
        return value[1:-1]
    return value


def split_args(command: str, source: str, keys: dict[str, str], *, hashtags: bool = False) -> Args:
    """Tokenise `source`. `keys` maps every accepted option spelling to its canonical key."""
    args = Args(source)
    for match in _TOKEN.finditer(source):
        text = match.group(0)
        token = Token(text, match.start(), match.end())
        if match.group("opt"):
            key, _, value = text.partition("=")
            canonical = keys.get(key.lower())
            if canonical is not None:
                if canonical in args.options:
                    raise SlashError("CL_USAGE", f"the option {key}= is given twice", command)
                args.options[canonical] = _unquote(value).strip()
                args.removed.append((token.start, token.end))
                continue
        if hashtags:
            tag = _HASHTAG.fullmatch(text.rstrip(".,;:!?"))
            if tag is not None:
                if tag.group(1).lower() not in args.hashtags:
                    args.hashtags.append(tag.group(1).lower())
                args.removed.append((token.start, token.end))
                continue
        args.words.append(token)
    return args


def parse_amount(command: str, text: str, what: str = "amount") -> int:
    cleaned = text.strip().strip("`")
    if not looks_like_amount(cleaned):
        raise SlashError("CL_USAGE", f"'{cleaned}' is not a valid {what}: use e.g. 12 or 12.50", command)
    if cleaned.startswith(("-", "−")):
        raise SlashError("CL_BAD_AMOUNT", f"the {what} must be positive, not {cleaned}", command)
    try:
        return parse_credits(cleaned.removeprefix("+"), maximum=HARD_MAX)
    except ClawlistError as exc:
        message = exc.message
        if message.startswith("amount "):
            message = f"the {what} {message[len('amount ') :]}"
        raise SlashError(exc.errcode, message, command) from None


_NUMBER = re.compile(r"[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:credits?|cr)?", re.IGNORECASE)


def looks_like_amount(text: str) -> bool:
    """Looks like a number (valid or not: `parse_amount` says what is wrong with it)."""
    return _NUMBER.fullmatch(text.strip("`")) is not None


def parse_quantity(command: str, text: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit() or len(value) > MAX_QUANTITY_DIGITS or int(value) < 1:
        raise SlashError("CL_USAGE", f"qty must be a whole number of at least 1, not '{value}'", command)
    return int(value)


def clean_ref(text: str) -> str | None:
    """A reference as typed (`$abc…`, `[abc…]`, `` `abc…` ``, `abc…,`) without its decoration, or None
    when it cannot be one."""
    value = text.strip().strip("`'\"“”[]()<>{}").rstrip(".,;:!?").strip("`'\"“”[]()<>{}")
    if value.startswith("$"):
        value = value[1:]
    if REF_MIN <= len(value) <= REF_MAX and _REF.fullmatch(value):
        return value
    return None


def parse_ref(command: str, token: Token, what: str) -> str:
    ref = clean_ref(token.text)
    if ref is None:
        raise SlashError(
            "CL_USAGE",
            f"'{token.text}' is not a {what} reference: copy the id from a reply (the first "
            f"{REF_LENGTH} characters are enough)",
            command,
        )
    return ref


def join_words(tokens: list[Token]) -> str:
    """The words of `tokens`, spaces collapsed."""
    return " ".join(t.text for t in tokens)


def drop_currency_word(words: list[Token], index: int) -> list[Token]:
    """Drop a 'credits' word right after the amount at `index`."""
    if index + 1 < len(words) and words[index + 1].text.lower() in CURRENCY_WORDS:
        return words[: index + 1] + words[index + 2 :]
    return words


def plain_words(command: str, source: str) -> list[Token]:
    return split_args(command, source, {}).words


__all__ = [
    "CURRENCY_WORDS",
    "MAX_QUANTITY_DIGITS",
    "REF_LENGTH",
    "REF_MAX",
    "REF_MIN",
    "Args",
    "SlashError",
    "Token",
    "clean_ref",
    "drop_currency_word",
    "join_words",
    "looks_like_amount",
    "parse_amount",
    "parse_quantity",
    "parse_ref",
    "plain_words",
    "split_args",
]
