"""STOP / START / HELP keywords, pure: what an inbound text asks for, if anything.

The rule (docs/operations.md, "Opt-outs"): the **whole** message must be one keyword.
Letter case and whitespace do not matter (" Stop ", "stop all" and "S T O P" are the same as
STOP and STOPALL), nor do punctuation marks around it ("STOP.", "Stop!"). A keyword inside a
sentence ("please don't stop texting me", "STOP IT") is not a keyword: such a message is an
ordinary reply, answered by a person, because a text that merely contains "end" or "yes" would
otherwise opt people in and out behind their back. Carriers and Plivo document the same rule for
their own keyword handling.

Lists are configured with OPT_OUT_KEYWORDS, OPT_IN_KEYWORDS and HELP_KEYWORDS (config.py);
no keyword may be in two lists (the settings refuse it), so the order below never decides.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

Action = Literal["opt_out", "opt_in", "help"]

DEFAULT_OPT_OUT = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
DEFAULT_OPT_IN = ("START", "UNSTOP", "YES")
DEFAULT_HELP = ("HELP", "INFO")
MAX_KEYWORD_LENGTH = 32  # the `keyword` columns
# Marks a sender may put around a keyword ("STOP.", "'stop'", "Stop!!"); inside it they make
# another word.
_AROUND = ".,;:!?¡¿\"'`()[]{}*-_~…“”‘’«»"


class KeywordLists(Protocol):
    """What `classify` needs: Settings, or `Keywords` (tests, tools)."""

    @property
    def opt_out_keywords(self) -> list[str]: ...

    @property
    def opt_in_keywords(self) -> list[str]: ...

    @property
    def help_keywords(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Keywords:
    opt_out_keywords: list[str]
    opt_in_keywords: list[str]
    help_keywords: list[str]


DEFAULTS = Keywords(list(DEFAULT_OPT_OUT), list(DEFAULT_OPT_IN), list(DEFAULT_HELP))


def normalise(text: str) -> str:
    """The comparable form of a text: Unicode NFKC (full-width letters are letters), every
    whitespace character removed, marks around it stripped, upper case."""
    folded = unicodedata.normalize("NFKC", text)
    squeezed = "".join(ch for ch in folded if not ch.isspace())
    return squeezed.strip(_AROUND).upper()


def normalise_all(words: Iterable[str]) -> list[str]:
    """A configured list, normalised like texts, empty entries dropped, first spelling kept."""
    return list(dict.fromkeys(w for w in (normalise(word) for word in words) if w))


def classify(text: str | None, cfg: KeywordLists) -> Action | None:
    """`"opt_out"`, `"opt_in"` or `"help"` when the whole text is one configured keyword,
    else None (no text, an empty one, or any other message)."""
    if not text:
        return None
    word = normalise(text)
    if not word:
        return None
    if word in normalise_all(cfg.opt_out_keywords):
        return "opt_out"
    if word in normalise_all(cfg.opt_in_keywords):
        return "opt_in"
    if word in normalise_all(cfg.help_keywords):
        return "help"
    return None
