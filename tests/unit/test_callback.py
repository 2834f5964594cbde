"""Tests for plivo_tracker.plivo.callback and plivo_tracker.plivo.error_codes (§2.2, §2.4, §4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.messages.status import MessageStatus
from plivo_tracker.plivo import error_codes
from plivo_tracker.plivo.callback import (
    UnparseableCallback,
    dedupe_key,
    parse_callback,
    parse_time,
)

UUID = "3a9e4b52-6c1d-11ef-9f0e-0242ac120003"
PART_UUID = "7b1f2c63-6c1d-11ef-9f0e-0242ac120004"


def form(**overrides: str | None) -> dict[str, list[str]]:
    """A realistic status callback as the web layer hands it over: key → [values]."""
    fields = {
        "MessageUUID": UUID,
        "Status": "delivered",
        "To": "14155550101",
        "From": "14155550100",
        "Type": "sms",
        "ErrorCode": "000",
        "Units": "2",
        "TotalRate": "0.00500",
        "TotalAmount": "0.01000",
        "MCC": "310",
        "MNC": "004",
        "ParentMessageUUID": UUID,
        "PartInfo": "reserved",
        "Sequence": "3",
        "MessageTime": "2026-01-02 03:04:00.000001",
        "QueuedTime": "2026-01-02 03:04:01.250000",
        "SentTime": "2026-01-02 03:04:02.500000",
        "DeliveryReportTime": "2026-01-02 03:04:05.123456",
        "PowerpackUUID": "",
        "requester_ip": "203.0.113.7",
    }
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return {k: [v] for k, v in fields.items()}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- parse_callback --------------------------------------------------------------------------


def test_parse_full_realistic_form() -> None:
    ev = parse_callback(form())
    assert ev.message_uuid == UUID
    assert ev.status is MessageStatus.DELIVERED
    assert ev.to == "14155550101"
    assert ev.from_ == "14155550100"
    assert ev.type == "sms"
    assert ev.error_code is None
    assert ev.sequence == 3
    assert ev.units == 2
    assert ev.total_rate == "0.00500"
    assert ev.total_amount == "0.01000"
    assert ev.mcc == "310"
    assert ev.mnc == "004"
    assert ev.parent_uuid == UUID
    assert ev.part_info == "reserved"
    assert ev.message_time == utc(2026, 1, 2, 3, 4, 0, 1)
    assert ev.queued_time == utc(2026, 1, 2, 3, 4, 1, 250000)
    assert ev.sent_time == utc(2026, 1, 2, 3, 4, 2, 500000)
    assert ev.delivery_report_time == utc(2026, 1, 2, 3, 4, 5, 123456)
    assert ev.event_time == ev.delivery_report_time
    assert ev.dedupe_key == f"{UUID}|delivered|3"
    assert not ev.is_part
    assert ev.message_key == UUID


def test_parse_undelivered_with_error_code() -> None:
    ev = parse_callback(form(Status="undelivered", ErrorCode="80"))
    assert ev.status is MessageStatus.UNDELIVERED
    assert ev.error_code == "80"


def test_parse_minimal_old_style_form() -> None:
    ev = parse_callback({"MessageUUID": [UUID], "Status": ["sent"], "To": ["1"], "From": ["2"]})
    assert ev.status is MessageStatus.SENT
    assert ev.sequence is None
    assert ev.units is None
    assert ev.parent_uuid is None
    assert ev.event_time is None
    assert not ev.is_part
    assert ev.message_key == UUID


@pytest.mark.parametrize("uuid", [None, "", "   "])
def test_missing_message_uuid_is_unparseable(uuid: str | None) -> None:
    with pytest.raises(UnparseableCallback, match="MessageUUID"):
        parse_callback(form(MessageUUID=uuid))


def test_overlong_message_uuid_is_unparseable() -> None:
    with pytest.raises(UnparseableCallback):
        parse_callback(form(MessageUUID="a" * 65))


@pytest.mark.parametrize("status", ["bogus", "", "accepted", "delivered!"])
def test_unknown_status_is_unparseable(status: str) -> None:
    with pytest.raises(UnparseableCallback, match="Status"):
        parse_callback(form(Status=status))


def test_missing_status_is_unparseable() -> None:
    with pytest.raises(UnparseableCallback):
        parse_callback(form(Status=None))


def test_unparseable_is_a_value_error() -> None:
    assert issubclass(UnparseableCallback, ValueError)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("DELIVERED", MessageStatus.DELIVERED), ("Sent", MessageStatus.SENT), (" failed ", "failed")],
)
def test_status_case_and_whitespace_insensitive(raw: str, expected: str) -> None:
    ev = parse_callback(form(Status=raw))
    assert ev.status == expected
    assert ev.dedupe_key == f"{UUID}|{expected}|3"


def test_type_lowercased() -> None:
    assert parse_callback(form(Type="MMS")).type == "mms"
    assert parse_callback(form(Type="")).type is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", None), ("000", None), (None, None), ("30", "30"), ("420", "420"), ("900", "900")],
)
def test_error_code_normalised(raw: str | None, expected: str | None) -> None:
    assert parse_callback(form(Status="failed", ErrorCode=raw)).error_code == expected


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "-1", str(2**31)])
def test_non_numeric_or_out_of_range_sequence_is_none(raw: str) -> None:
    ev = parse_callback(form(Sequence=raw))
    assert ev.sequence is None
    assert "|h:" in ev.dedupe_key


def test_non_numeric_units_is_none() -> None:
    assert parse_callback(form(Units="two")).units is None


def test_mcc_mnc_keep_leading_zeros() -> None:
    ev = parse_callback(form(MCC="004", MNC="01"))
    assert ev.mcc == "004"
    assert isinstance(ev.mcc, str)
    assert ev.mnc == "01"


def test_first_value_of_repeated_field_is_used() -> None:
    fields = form()
    fields["To"] = ["14155550101", "14155559999"]
    assert parse_callback(fields).to == "14155550101"


# --- parse_time ------------------------------------------------------------------------------


def test_parse_time_naive_is_utc() -> None:
    parsed = parse_time("2026-01-02 03:04:05.123456")
    assert parsed == utc(2026, 1, 2, 3, 4, 5, 123456)
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


def test_parse_time_without_fraction() -> None:
    assert parse_time("2026-01-02 03:04:05") == utc(2026, 1, 2, 3, 4, 5)


def test_parse_time_offset_converted_to_utc() -> None:
    parsed = parse_time("2017-05-22 21:36:14+05:30")
    assert parsed is not None
    assert parsed.tzinfo == UTC
    assert (parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute) == (
        2017,
        5,
        22,
        16,
        6,
    )
    assert parsed == datetime(2017, 5, 22, 21, 36, 14, tzinfo=timezone(timedelta(hours=5.5)))


@pytest.mark.parametrize("raw", ["garbage", "2026-13-45 99:99:99", "yesterday", None])
def test_parse_time_garbage_is_none(raw: str | None) -> None:
    assert parse_time(raw) is None


def test_garbage_time_in_callback_is_none() -> None:
    ev = parse_callback(form(DeliveryReportTime="not a time"))
    assert ev.delivery_report_time is None
    assert ev.event_time == ev.sent_time


@pytest.mark.parametrize(
    "raw",
    ["9999-12-31 23:59:59-23:59", "9999-12-31T23:59:59-12:00", "0001-01-01 00:00:00+00:01"],
)
def test_parse_time_out_of_range_in_utc_is_none(raw: str) -> None:
    # Valid as written, but not representable once in UTC: was an OverflowError (a 500).
    assert parse_time(raw) is None


@pytest.mark.parametrize(
    "fields",
    [
        {**form(), "\ud800": ["x"]},
        {**form(), "To": ["14155550101", "\udc00"]},
        {**form(), "Extra": ["", "a\udfffb"]},
    ],
    ids=["key", "second value", "second value of an extra field"],
)
def test_lone_surrogate_in_a_key_or_later_value_is_unparseable(
    fields: dict[str, list[str]],
) -> None:
    # Every key and value is stored as UTF-8 (the raw payload, the spool): such a payload is
    # kept raw in the quarantine instead of failing the database and the spool (a 503).
    with pytest.raises(UnparseableCallback, match="lone surrogate"):
        parse_callback(fields)


def test_nul_in_a_later_value_is_still_parsed() -> None:
    # NUL is only a problem in a column (first values); the raw payload escapes it.
    ev = parse_callback({**form(), "To": ["14155550101", "\x00"]})
    assert ev.to == "14155550101"


# --- dedupe key ------------------------------------------------------------------------------


def test_dedupe_key_same_for_verbatim_retry() -> None:
    assert parse_callback(form()).dedupe_key == parse_callback(form()).dedupe_key


def test_dedupe_key_differs_when_sequence_differs() -> None:
    assert (
        parse_callback(form(Sequence="3")).dedupe_key
        != parse_callback(form(Sequence="4")).dedupe_key
    )


def test_dedupe_key_differs_when_status_differs() -> None:
    assert parse_callback(form(Status="sent")).dedupe_key != parse_callback(form()).dedupe_key


def test_dedupe_key_with_sequence_ignores_other_fields() -> None:
    # (MessageUUID, Status, Sequence) identifies a callback (§2.3 rule 3).
    assert parse_callback(form(Units="5")).dedupe_key == parse_callback(form()).dedupe_key


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Units", "3"),
        ("TotalAmount", "0.01500"),
        ("DeliveryReportTime", "2026-01-02 03:04:06.000000"),
        ("PowerpackUUID", "pp-1"),
        ("ExtraUnknownField", "x"),
    ],
)
def test_dedupe_key_without_sequence_differs_when_any_field_differs(field: str, value: str) -> None:
    base = parse_callback(form(Sequence=None))
    other = parse_callback(form(Sequence=None, **{field: value}))
    assert base.dedupe_key != other.dedupe_key


def test_dedupe_key_without_sequence_ignores_dict_order() -> None:
    fields = form(Sequence=None)
    reordered = dict(reversed(list(fields.items())))
    assert list(reordered) != list(fields)
    assert parse_callback(fields).dedupe_key == parse_callback(reordered).dedupe_key
    assert dedupe_key(fields, UUID, "delivered", None) == dedupe_key(
        reordered, UUID, "delivered", None
    )


def test_dedupe_key_without_sequence_separates_key_and_value() -> None:
    # "ab"+"c" must not collide with "a"+"bc".
    one = dedupe_key({"ab": ["c"]}, UUID, "sent", None)
    two = dedupe_key({"a": ["bc"]}, UUID, "sent", None)
    assert one != two


def test_dedupe_key_direct_with_sequence() -> None:
    assert dedupe_key({}, UUID, "sent", "2") == f"{UUID}|sent|2"


# --- multipart (§2.4) ------------------------------------------------------------------------


@pytest.mark.parametrize("part_info", ["reserved", "", None])
def test_new_style_long_message_is_not_a_part(part_info: str | None) -> None:
    ev = parse_callback(form(ParentMessageUUID=UUID, PartInfo=part_info, Units="3"))
    assert not ev.is_part
    assert ev.message_key == UUID
    assert ev.units == 3


def test_old_style_part_belongs_to_parent() -> None:
    ev = parse_callback(form(MessageUUID=PART_UUID, ParentMessageUUID=UUID, PartInfo="2 of 3"))
    assert ev.message_uuid == PART_UUID
    assert ev.parent_uuid == UUID
    assert ev.part_info == "2 of 3"
    assert ev.is_part
    assert ev.message_key == UUID


def test_old_style_part_without_part_info_still_belongs_to_parent() -> None:
    ev = parse_callback(form(MessageUUID=PART_UUID, ParentMessageUUID=UUID, PartInfo=None))
    assert ev.is_part
    assert ev.message_key == UUID


def test_old_style_first_part_is_its_own_parent() -> None:
    ev = parse_callback(form(ParentMessageUUID=UUID, PartInfo="1 of 3"))
    assert ev.is_part
    assert ev.message_key == UUID


@pytest.mark.parametrize(
    ("field", "limit"), [("ParentMessageUUID", 64), ("To", 64), ("MCC", 8), ("PartInfo", 32)]
)
def test_overlong_field_is_unparseable(field: str, limit: int) -> None:
    parse_callback(form(**{field: "1" * limit}))  # at the limit: fine
    with pytest.raises(UnparseableCallback, match=field):
        parse_callback(form(**{field: "1" * (limit + 1)}))


# --- error codes (§4) ------------------------------------------------------------------------

# code → (a phrase of §4's meaning, our class for it)
PROTOCOL_TABLE: dict[str, tuple[str, str]] = {
    "10": ("invalid message", "permanent"),
    "20": ("network error", "retryable"),
    "30": ("spam", "permanent"),
    "40": ("invalid source number", "permanent"),
    "50": ("invalid destination number", "permanent"),
    "60": ("loop detected", "permanent"),
    "70": ("destination permanently unavailable", "permanent"),
    "80": ("destination temporarily unavailable", "retryable"),
    "90": ("no route available", "unclear"),
    "100": ("prohibited by carrier", "permanent"),
    "110": ("message too long", "permanent"),
    "200": ("stop", "permanent"),
    "201": ("toll-free", "permanent"),
    "300": ("failed to dispatch message", "unclear"),
    "420": ("expired", "retryable"),
    "450": ("geo permissions", "permanent"),
    "900": ("insufficient credit", "retryable"),
    "910": ("account disabled", "permanent"),
    "1000": ("unknown error", "unclear"),
}


@pytest.mark.parametrize(("code", "row"), sorted(PROTOCOL_TABLE.items()))
def test_every_protocol_code_has_its_meaning(code: str, row: tuple[str, str]) -> None:
    phrase, error_class = row
    info = error_codes.describe(code)
    assert info is not None
    assert info.code == code
    assert phrase in info.meaning.lower()
    assert not info.meaning.startswith("unknown Plivo error")
    assert info.error_class == error_class


def test_known_codes_are_exactly_the_protocol_table() -> None:
    assert set(error_codes.KNOWN_CODES) == set(PROTOCOL_TABLE)


def test_unknown_code() -> None:
    info = error_codes.describe("12345")
    assert info is not None
    assert info.code == "12345"
    assert info.meaning == "unknown Plivo error 12345"
    assert info.error_class == "unclear"


@pytest.mark.parametrize("code", ["30003", "30005", "30006", "30007"])
def test_twilio_30000_range_codes_are_not_plivo_codes(code: str) -> None:
    assert code not in error_codes.KNOWN_CODES
    info = error_codes.describe(code)
    assert info is not None
    assert info.meaning == f"unknown Plivo error {code}"


def test_non_numeric_code_is_unknown_not_an_error() -> None:
    info = error_codes.describe("E42")
    assert info is not None
    assert info.meaning == "unknown Plivo error E42"


@pytest.mark.parametrize("code", [None, "", "   ", "000", "0"])
def test_no_error_values(code: str | None) -> None:
    assert error_codes.normalize(code) is None
    assert error_codes.describe(code) is None


def test_normalize_keeps_code_as_sent() -> None:
    assert error_codes.normalize(" 30 ") == "30"
    assert error_codes.normalize("420") == "420"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
            st.booleans(),
        ),
        max_size=8,
    ),
    st.text(alphabet="&=%+ab2F0cé", max_size=30),
)
def test_parse_form_matches_parse_qs(pairs: list[tuple[str, str, bool]], noise: str) -> None:
    """The fast form parser gives exactly what parse_qs(keep_blank_values=True) gives."""
    from urllib.parse import parse_qs, quote_plus

    from plivo_tracker.plivo.callback import parse_form

    encoded = "&".join(
        quote_plus(k) + ("=" + quote_plus(v) if with_eq else "") for k, v, with_eq in pairs
    )
    for text in (encoded, noise, encoded + "&" + noise):
        assert parse_form(text) == parse_qs(text, keep_blank_values=True)
