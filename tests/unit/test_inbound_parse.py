"""Inbound message parsing (plivo/inbound.py) and the simulator's inbound fields, pure;
the signature of inbound bodies with any text checked against the official SDK."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils import validate_v3_signature

from plivo_tracker.plivo.callback import UnparseableCallback, parse_form
from plivo_tracker.plivo.inbound import Media, parse_inbound, remote_number
from plivo_tracker.plivo.signature import V3, V3_NONCE, sign_v3, verify
from plivo_tracker.simulator.inbound import (
    TEXTS,
    IncomingTraffic,
    content_type,
    incoming_fields,
    intent,
)

URL = "https://hooks.example.com/plivo/inbound"
TOKEN = "account-token"
# Text as people write it: any character that can travel in a form body (no lone surrogates).
texts = st.text(st.characters(codec="utf-8"), max_size=200)
# Text that can be stored: without NUL (PostgreSQL text refuses it).
storable = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


def _fields(**values: str) -> dict[str, list[str]]:
    base = {"MessageUUID": "u-1", "From": "447700900123", "To": "14155550100"}
    return {k: [v] for k, v in {**base, **values}.items()}


@given(storable)
def test_text_is_kept_exactly_as_received(text: str) -> None:
    msg = parse_inbound(_fields(Text=text))
    assert msg.text == text  # never stripped, never re-encoded


@given(storable)
def test_text_survives_the_form_encoding(text: str) -> None:
    """Whatever Plivo sends, encoded as a form body and read back by our form parser."""
    body = urlencode({"MessageUUID": "u", "From": "1415", "To": "1415", "Text": text})
    assert parse_inbound(parse_form(body)).text == text
    assert parse_form(body) == parse_qs(body, keep_blank_values=True)


@settings(max_examples=150)
@given(texts, st.sampled_from(["POST", "GET"]))
def test_sdk_oracle_accepts_what_we_verify(text: str, method: str) -> None:
    fields = {"From": "447700900123", "To": "14155550100", "Text": text, "MessageUUID": "u-1"}
    nonce = "12345678901234567890"
    if method == "POST":
        url, form = URL, {k: [v] for k, v in fields.items()}
        sig = sign_v3("POST", url, nonce, TOKEN, form)
        params: dict[str, str] | None = dict(fields)
    else:
        # The SDK raises on percent-encoded non-ASCII in the URL (§3.6): give it the bare URL
        # and the decoded query as params, which it signs the same way.
        url, form, params = URL + "?" + urlencode(fields), None, dict(fields)
        sig = sign_v3("GET", url, nonce, TOKEN, None)
    sdk_url = URL if method == "GET" else url
    assert validate_v3_signature(method, sdk_url, nonce, TOKEN, sig, params)
    headers = {V3: sig, V3_NONCE: nonce}
    assert verify(method, url, headers, form, [TOKEN], []).ok
    tampered = dict(fields, Text=text + "!")
    assert not verify("POST", URL, headers, {k: [v] for k, v in tampered.items()}, [TOKEN], []).ok


@given(st.from_regex(r"\+?[0-9]{7,15}", fullmatch=True))
def test_numbers_become_e164(raw: str) -> None:
    assert remote_number(raw) == "+" + raw.lstrip("+")


@given(
    st.one_of(
        st.from_regex(r"[0-9]{1,6}", fullmatch=True),  # short codes
        st.from_regex(r"[A-Za-z][A-Za-z0-9 ]{0,10}", fullmatch=True),  # sender ids
    )
)
def test_short_codes_and_sender_ids_stay(raw: str) -> None:
    assert remote_number(raw) == raw


@pytest.mark.parametrize("missing", ["MessageUUID", "From", "To"])
def test_without_uuid_or_numbers_it_is_quarantined(missing: str) -> None:
    fields = _fields(Text="hi")
    fields[missing] = ["  "]
    with pytest.raises(UnparseableCallback, match=missing):
        parse_inbound(fields)


@pytest.mark.parametrize(
    "bad",
    [{"Text": "a\x00b"}, {"From": "1" * 65}, {"Type": "x" * 9}, {"MessageUUID": "u" * 65}],
)
def test_what_no_column_can_hold_is_quarantined(bad: dict[str, str]) -> None:
    with pytest.raises(UnparseableCallback):
        parse_inbound(_fields(**bad))


@given(st.lists(st.integers(0, 30), unique=True, min_size=1, max_size=10), st.booleans())
def test_media_in_number_order_with_their_types(numbers: list[int], url_form: bool) -> None:
    fields = _fields()
    for n in numbers:
        fields[f"{'MediaUrl' if url_form else 'Media'}{n}"] = [f"https://m.example.com/{n}.jpg"]
        fields[f"MediaContentType{n}"] = [f"image/{n}"]
    msg = parse_inbound(fields)
    assert msg.media == tuple(
        Media(f"https://m.example.com/{n}.jpg", f"image/{n}") for n in sorted(numbers)
    )
    assert msg.type == "mms"  # no Type given: media make it an MMS


def test_sms_keys_and_defaults() -> None:
    msg = parse_inbound(_fields(Text=" STOP ", Units="2", MessageIntent="optout", Type="SMS"))
    assert msg.dedupe_key == "inbound:u-1"
    assert msg.message_key == "u-1"
    assert msg.status.value == "received"
    assert (msg.text, msg.type, msg.units, msg.message_intent) == (" STOP ", "sms", 2, "optout")
    assert (msg.from_number, msg.to_number) == ("+447700900123", "+14155550100")
    assert parse_inbound(_fields()).text is None  # no text field at all


# ---- the simulator's side -------------------------------------------------------------------


@given(storable, st.lists(st.sampled_from(["a.jpg", "b.png", "c.pdf", "d"]), max_size=3))
def test_simulator_fields_parse_back(text: str, names: list[str]) -> None:
    media = [f"https://media.example.com/{n}" for n in names]
    fields = incoming_fields("u-9", "447700900123", "14155550100", text, media)
    msg = parse_inbound({k: [v] for k, v in fields.items()})
    assert msg.text == text
    assert msg.media_urls == media
    assert msg.type == ("mms" if media else "sms")
    assert [m.content_type for m in msg.media] == [content_type(u) for u in media]


def test_simulator_texts_include_keywords_and_non_ascii() -> None:
    assert {intent(t) for t in TEXTS} == {"optout", "optin", "help", ""}
    assert any(not t.isascii() for t in TEXTS)
    assert any(t != t.strip() for t in TEXTS)  # spaces around a keyword
    assert intent(" stop ") == "optout"
    assert content_type("https://x/y.JPG?sig=1") == "image/jpeg"


async def test_incoming_traffic_sends_to_our_numbers() -> None:
    got: list[tuple[str, str, str | None, list[str]]] = []

    async def receive(src: str, dst: str, text: str | None, media: object) -> None:
        got.append((src, dst, text, list(media)))  # type: ignore[call-overload]

    traffic = IncomingTraffic(receive, ["14155550100"], 60.0, seed=1)
    for _ in range(30):
        await traffic.once()
    assert {dst for _, dst, _, _ in got} == {"14155550100"}
    assert all(text in TEXTS for _, _, text, _ in got)
    assert len({src for src, _, _, _ in got}) > 1
    with pytest.raises(ValueError, match="per_minute"):
        IncomingTraffic(receive, ["1"], 0)
    # Seeded: the same seed gives the same stream.
    again: list[tuple[str, str, str | None, list[str]]] = []

    async def receive_again(src: str, dst: str, text: str | None, media: object) -> None:
        again.append((src, dst, text, list(media)))  # type: ignore[call-overload]

    replay = IncomingTraffic(receive_again, ["14155550100"], 60.0, seed=1)
    for _ in range(30):
        await replay.once()
    assert again == got
