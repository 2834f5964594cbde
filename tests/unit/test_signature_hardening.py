"""Signature hardening: every nonce of a request, PLIVO_SIGNATURE=v3, previous main tokens.

Also the nonce list carried on CallbackItem and through spool files (old files included).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.config import ConfigError, Settings, load_settings
from plivo_tracker.inbound.items import CallbackItem, make_item
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.plivo.signature import (
    MA_V2,
    MA_V3,
    NONCE_MAX,
    V2,
    V2_NONCE,
    V3,
    V3_NONCE,
    Verdict,
    sign_v2,
    sign_v3,
    verify,
)

URL = "https://hooks.example.com/plivo/callback?tenant=acme"
FORM = {"MessageUUID": ["3a9e4b52-6c1d-11ef-9f0e-0242ac120003"], "Status": ["sent"]}
ACCOUNT = "account-token-TEST"
MAIN = "main-token-TEST"
N2 = "48215093776120384519"
N3 = "70381946251208837465"
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
PUBLIC = "https://hooks.example.com"


def _v2(token: str, nonce: str = N2) -> str:
    return sign_v2(URL, nonce, token)


def _v3(token: str, nonce: str = N3) -> str:
    return sign_v3("POST", URL, nonce, token, FORM)


def _check(headers: dict[str, str], *, v3_only: bool = False) -> Verdict:
    return verify("POST", URL, headers, FORM, [ACCOUNT], [MAIN], v3_only=v3_only)


BOTH = {V2: _v2(ACCOUNT), V2_NONCE: N2, V3: _v3(ACCOUNT), V3_NONCE: N3}


# --- every nonce of the request ----------------------------------------------------------------


def test_v2_and_v3_nonces_both_returned_whichever_scheme_verifies() -> None:
    got = _check(BOTH)
    assert (got.ok, got.scheme, got.nonce) == (True, "v3", N3)
    assert set(got.nonces) == {N2, N3}
    # The V2 headers alone verify too, and still report the V3 nonce that came with them.
    v2_only = _check({V2: BOTH[V2], V2_NONCE: N2, V3_NONCE: N3})
    assert (v2_only.ok, v2_only.scheme, v2_only.nonce) == (True, "v2", N2)
    assert set(v2_only.nonces) == {N2, N3}


def test_shared_nonce_is_returned_once() -> None:
    headers = {V2: _v2(ACCOUNT, N3), V2_NONCE: N3, V3: _v3(ACCOUNT), V3_NONCE: N3}
    assert _check(headers).nonces == (N3,)


def test_nonces_are_cut_to_128_then_deduplicated() -> None:
    long_a, long_b = "7" * 200, "7" * 150  # the same first 128 characters
    headers = {V3: _v3(ACCOUNT, long_a), V3_NONCE: long_a, V2_NONCE: long_b}
    got = _check(headers)
    assert got.ok
    assert got.nonce == long_a  # the verified nonce itself is whole; routes.py cuts it
    assert got.nonces == ("7" * NONCE_MAX,)


def test_empty_nonce_headers_are_not_nonces() -> None:
    got = _check({V3: _v3(ACCOUNT), V3_NONCE: N3, V2_NONCE: ""})
    assert got.ok
    assert got.nonces == (N3,)
    assert _check({}).nonces == ()


def test_nonces_reported_when_verification_fails() -> None:
    got = _check({V3: _v3("wrong"), V3_NONCE: N3, V2_NONCE: N2})
    assert not got.ok
    assert set(got.nonces) == {N2, N3}


NONCE_VALUES = st.one_of(
    st.text(alphabet="0123456789", min_size=0, max_size=24),
    st.text(min_size=0, max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(
    n2=st.none() | NONCE_VALUES,
    n3=st.none() | NONCE_VALUES,
    same=st.booleans(),
    signatures=st.sets(st.sampled_from([V2, MA_V2, V3, MA_V3])),
    valid=st.booleans(),
)
def test_property_nonces_equal_the_nonce_headers_present(
    n2: str | None, n3: str | None, same: bool, signatures: set[str], valid: bool
) -> None:
    if same:
        n3 = n2
    headers: dict[str, str] = {}
    if n2 is not None:
        headers[V2_NONCE] = n2
    if n3 is not None:
        headers[V3_NONCE] = n3
    for name in signatures:
        token = MAIN if "-ma-" in name else ACCOUNT
        if name in (V2, MA_V2):
            headers[name] = sign_v2(URL, n2 or "", token if valid else "wrong")
        else:
            headers[name] = sign_v3("POST", URL, n3 or "", token if valid else "wrong", FORM)
    got = _check(headers)
    expected = {n[:NONCE_MAX] for n in (n2, n3) if n}
    assert set(got.nonces) == expected
    assert len(got.nonces) == len(set(got.nonces))
    assert all(len(n) <= NONCE_MAX for n in got.nonces)
    if got.ok:
        assert got.nonce is not None
        assert got.nonce[:NONCE_MAX] in got.nonces


# --- PLIVO_SIGNATURE=v3 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {V2: _v2(ACCOUNT), V2_NONCE: N2},
        {MA_V2: _v2(MAIN), V2_NONCE: N2},
        {V2: _v2(ACCOUNT), MA_V2: _v2(MAIN), V2_NONCE: N2, V3_NONCE: N3},
    ],
    ids=["v2", "ma-v2", "v2-with-v3-nonce"],
)
def test_v3_only_refuses_v2_signatures(headers: dict[str, str]) -> None:
    assert _check(headers).ok  # accepted by default ("any")
    got = _check(headers, v3_only=True)
    assert not got.ok
    assert "PLIVO_SIGNATURE=v3" in got.scheme


@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        (BOTH, "v3"),
        ({V3: _v3(ACCOUNT), V3_NONCE: N3}, "v3"),
        ({MA_V3: _v3(MAIN), V3_NONCE: N3}, "ma-v3"),
        ({V3: _v3("wrong"), MA_V3: _v3(MAIN), V3_NONCE: N3}, "ma-v3"),
    ],
)
def test_v3_only_accepts_v3_and_ma_v3(headers: dict[str, str], scheme: str) -> None:
    got = _check(headers, v3_only=True)
    assert (got.ok, got.scheme) == (True, scheme)


def test_v3_only_still_refuses_a_bad_v3_and_no_headers() -> None:
    headers = {V3: _v3("wrong"), V3_NONCE: N3, V2: _v2(ACCOUNT), V2_NONCE: N2}
    assert not _check(headers, v3_only=True).ok
    assert not _check({}, v3_only=True).ok


# --- settings --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _creds(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "plivo_auth_id": AUTH_ID,
        "plivo_auth_token": "current",
        "public_base_url": PUBLIC,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "any"), ("any", "any"), ("ANY", "any"), ("v3", "v3"), ("V3", "v3")],
)
def test_plivo_signature_values(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
) -> None:
    if value is not None:
        monkeypatch.setenv("PLIVO_SIGNATURE", value)
    assert load_settings().plivo_signature == expected


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("value", ["v2", "both", "v3,v2", "none", "3"])
def test_plivo_signature_bad_value_is_a_one_line_error(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(plivo_signature=value)
    message = str(info.value)
    assert message.startswith("PLIVO_SIGNATURE:"), message
    assert "\n" not in message


@pytest.mark.usefixtures("clean_env")
def test_main_tokens_with_previous_main_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_MAIN_AUTH_TOKENS_PREVIOUS", "old-main1, main ,,old-main2")
    s = _creds(plivo_main_auth_token="main", plivo_auth_tokens_previous="old")
    assert s.plivo_main_auth_tokens_previous == ["old-main1", "main", "old-main2"]
    assert s.main_tokens == ["main", "old-main1", "old-main2"]
    assert s.account_tokens == ["current", "old"]


@pytest.mark.usefixtures("clean_env")
def test_main_tokens_unchanged_without_main_token() -> None:
    s = _creds(plivo_auth_tokens_previous="old", plivo_main_auth_tokens_previous="old-main")
    assert s.main_tokens == s.account_tokens == ["current", "old"]
    assert _creds(plivo_main_auth_token="main").main_tokens == ["main"]


# --- CallbackItem.nonces and the spool ---------------------------------------------------------


def _item(nonce: str | None, nonces: tuple[str, ...] = ()) -> CallbackItem:
    return make_item(
        received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        method="POST",
        path="/plivo/callback",
        query="",
        headers={},
        body=b"MessageUUID=x&Status=sent",
        fields={"MessageUUID": ["x"], "Status": ["sent"]},
        nonce=nonce,
        scheme="v3" if nonce else None,
        nonces=nonces,
    )


def test_make_item_always_carries_its_nonce_in_nonces() -> None:
    assert _item(N3).nonces == (N3,)
    assert _item(N3, (N2, N3)).nonces == (N2, N3)
    assert _item(N3, (N2,)).nonces == (N3, N2)
    assert _item(None).nonces == ()


def test_spool_round_trip_keeps_every_nonce(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool._write([_item(N3, (N2, N3)), _item(None)])
    back = Spool.read(path)
    assert [(i.nonce, i.nonces) for i in back] == [(N3, (N2, N3)), (None, ())]


def test_spool_file_with_a_single_nonce_still_reads(tmp_path: Path) -> None:
    # A line as written before `nonces` existed.
    old = {
        "received_at": "2026-01-02T03:04:05+00:00",
        "method": "POST",
        "path": "/plivo/callback",
        "query": "",
        "headers": {},
        "body": "TWVzc2FnZVVVSUQ9eCZTdGF0dXM9c2VudA==",
        "fields": {"MessageUUID": ["x"], "Status": ["sent"]},
        "nonce": N3,
        "scheme": "v3",
        "reason": None,
    }
    path = tmp_path / "00000000000000000001-abcd.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps({**old, "nonce": None}) + "\n")
    first, second = Spool.read(path)
    assert (first.nonce, first.nonces) == (N3, (N3,))
    assert (second.nonce, second.nonces) == (None, ())
    assert first.event is not None
