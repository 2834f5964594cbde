"""STOP/START/HELP keywords (pure, property-tested), their settings, and the import CSV."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from plivo_tracker.config import ConfigError, load_settings
from plivo_tracker.optouts.csvfile import parse
from plivo_tracker.optouts.keywords import (
    DEFAULT_HELP,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    DEFAULTS,
    Keywords,
    classify,
    normalise,
)

EXPECTED = {
    **dict.fromkeys(DEFAULT_OPT_OUT, "opt_out"),
    **dict.fromkeys(DEFAULT_OPT_IN, "opt_in"),
    **dict.fromkeys(DEFAULT_HELP, "help"),
}
ALL_WORDS = set(EXPECTED)
SPACE = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000"])
AROUND = st.sampled_from(["", ".", "!", "!!", "?", '"', "'", "…", "*"])


@st.composite
def spelled(draw: st.DrawFn, word: str) -> str:
    """`word` in any case, with whitespace anywhere in and around it, and marks around it."""
    out = []
    for ch in word:
        out.append(ch.lower() if draw(st.booleans()) else ch.upper())
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(SPACE))
    lead = draw(st.lists(SPACE, max_size=3))
    tail = draw(st.lists(SPACE, max_size=3))
    return "".join(lead) + draw(AROUND) + "".join(out) + draw(AROUND) + "".join(tail)


@given(st.sampled_from(sorted(EXPECTED)).flatmap(lambda w: st.tuples(st.just(w), spelled(w))))
@example(("STOP", " stop "))
@example(("STOPALL", "Stop All"))
@example(("UNSUBSCRIBE", "unsubscribe."))
@example(("HELP", "\tHelp?\n"))
def test_every_spelling_of_a_keyword_is_that_keyword(case: tuple[str, str]) -> None:
    word, text = case
    assert classify(text, DEFAULTS) == EXPECTED[word]


WORD = st.text(st.characters(categories=["Lu", "Ll", "Nd"]), min_size=1, max_size=12)


@given(
    keyword=st.sampled_from(sorted(EXPECTED)),
    before=st.lists(WORD, max_size=3),
    after=st.lists(WORD, max_size=3),
)
@example(keyword="STOP", before=["please", "don't"], after=["texting", "me"])
@example(keyword="STOP", before=[], after=["IT"])
@example(keyword="YES", before=["oh"], after=[])
def test_a_keyword_inside_a_sentence_is_not_a_keyword(
    keyword: str, before: list[str], after: list[str]
) -> None:
    """Only a message that is one keyword counts: with any other word it is an ordinary reply
    (unless the words happen to spell a keyword together: "STOP" "ALL" is STOPALL)."""
    assume(before or after)
    text = " ".join([*before, keyword, *after])
    assume(normalise(text) not in ALL_WORDS)
    assert classify(text, DEFAULTS) is None


@given(st.text(max_size=60))
def test_case_and_surrounding_whitespace_never_change_the_answer(text: str) -> None:
    answer = classify(text, DEFAULTS)
    assert classify(f"  {text.upper()}\n", DEFAULTS) == classify(text.upper(), DEFAULTS)
    if text.isascii():
        assert classify(text.swapcase(), DEFAULTS) == answer
        assert classify(" \t" + text.lower() + " ", DEFAULTS) == answer


@given(st.text(max_size=60))
def test_an_answer_is_only_ever_a_configured_keyword(text: str) -> None:
    answer = classify(text, DEFAULTS)
    if answer is not None:
        assert EXPECTED[normalise(text)] == answer


@pytest.mark.parametrize("text", [None, "", "   ", "\n", "...", "STOP STOP", "STOPP", "ST0P"])
def test_not_keywords(text: str | None) -> None:
    assert classify(text, DEFAULTS) is None


def test_configured_lists_replace_the_defaults() -> None:
    cfg = Keywords(["ARRET", "stop"], ["go on"], [])
    assert classify("arrêt", cfg) is None  # accents are letters of their own
    assert classify("Arret", cfg) == "opt_out"
    assert classify("go on", cfg) == "opt_in"
    assert classify("GOON", cfg) == "opt_in"
    assert classify("START", cfg) is None
    assert classify("HELP", cfg) is None


def test_full_width_letters_are_letters() -> None:
    assert classify("ＳＴＯＰ", DEFAULTS) == "opt_out"


# ---- settings ----------------------------------------------------------------------------------


def test_keyword_settings_defaults_and_normalisation() -> None:
    s = load_settings()
    assert s.opt_out_keywords == list(DEFAULT_OPT_OUT)
    assert s.opt_in_keywords == list(DEFAULT_OPT_IN)
    assert s.help_keywords == list(DEFAULT_HELP)
    assert s.help_text == ""
    assert s.opt_out_transactional_exemption is False
    s = load_settings(opt_out_keywords="stop, Stop all ,arrêt", help_text="  Acme: reply STOP  ")
    assert s.opt_out_keywords == ["STOP", "STOPALL", "ARRÊT"]
    assert s.help_text == "Acme: reply STOP"
    assert classify("stop all", s) == "opt_out"


@pytest.mark.parametrize(
    ("overrides", "variable", "says"),
    [
        ({"opt_in_keywords": "start,stop"}, "OPT_IN_KEYWORDS", "STOP is in OPT_OUT_KEYWORDS"),
        ({"help_keywords": "help,yes"}, "HELP_KEYWORDS", "YES is in OPT_IN_KEYWORDS"),
        ({"opt_out_keywords": ",, ,"}, "OPT_OUT_KEYWORDS", "at least one keyword"),
        ({"opt_out_keywords": "x" * 33}, "OPT_OUT_KEYWORDS", "longer than 32"),
        ({"help_text": "bell\x07"}, "HELP_TEXT", "control character"),
        ({"help_text": "x" * 1601}, "HELP_TEXT", "1600"),
        ({"opt_out_transactional_exemption": "maybe"}, "OPT_OUT_TRANSACTIONAL_EXEMPTION", ""),
    ],
)
def test_bad_keyword_settings_are_one_line_naming_the_variable(
    overrides: dict[str, str], variable: str, says: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(**overrides)
    message = str(raised.value)
    assert message.startswith(f"{variable}: "), message
    assert says in message
    assert "\n" not in message


# ---- the import CSV ----------------------------------------------------------------------------


def test_csv_without_header_takes_the_first_column() -> None:
    rows, bad = parse("+14155550101\n14155550102,ignored\n\n  +1 (415) 555-0103  \n")
    assert bad == []
    assert [r.number for r in rows] == ["+14155550101", "+14155550102", "+14155550103"]
    assert all(r.note is None and r.opted_out_at is None for r in rows)


def test_csv_with_header_reads_note_and_time() -> None:
    text = (
        "\ufeffName,Phone,Note,opted_out_at\n"
        "Ann,+14155550101,asked by email,2025-03-01T10:00:00Z\n"
        'Bob,+14155550102,"said ""stop"" on a call",\n'
    )
    rows, bad = parse(text)
    assert bad == []
    assert rows[0].number == "+14155550101"
    assert rows[0].note == "asked by email"
    assert rows[0].opted_out_at == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert rows[1].note == 'said "stop" on a call'
    assert rows[1].opted_out_at is None


def test_csv_reports_every_bad_line_with_its_number() -> None:
    text = (
        "number,opted_out_at\n"  # 1
        "+14155550101,\n"  # 2
        "12,\n"  # 3: too short
        "\n"  # 4: blank, skipped
        ",2025-01-01T00:00:00Z\n"  # 5: no number
        "+14155550102,yesterday\n"  # 6
        "+14155550103,2025-01-01T00:00:00\n"  # 7: no time zone
        '"+1415555\n0104",\n'  # 8-9: a quoted newline, reported at its last line
    )
    rows, bad = parse(text)
    assert [r.number for r in rows] == ["+14155550101"]
    assert [b.line for b in bad] == [3, 5, 6, 7, 9]
    assert "'12' is not a phone number" in str(bad[0])
    assert str(bad[1]) == "line 5: no number"
    assert "needs a time zone" in bad[3].problem


def test_csv_first_row_that_is_neither_header_nor_number_is_a_bad_line() -> None:
    rows, bad = parse("Mobile\n+14155550101\n")
    assert [b.line for b in bad] == [1]
    assert [r.number for r in rows] == ["+14155550101"]
