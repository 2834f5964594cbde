"""Tests for plivo_tracker.plivo.signature (plivo-protocol.md §3).

The §3.8 vectors live in tests/fixtures/plivo/signature_vectors.json. The official SDK
(`plivo`, test-only) is the oracle for the property tests: it must accept what we sign,
and we must accept what it computes.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils import validate_signature, validate_v3_signature
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from plivo_tracker.plivo.signature import (
    MA_V2,
    MA_V3,
    V2,
    V2_NONCE,
    V3,
    V3_NONCE,
    Verdict,
    sign_v2,
    sign_v3,
    signed_headers,
    v2_string,
    v3_string,
    verify,
)

VECTORS_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "plivo" / "signature_vectors.json"
DATA: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = DATA["vectors"]
BY_ID = {v["id"]: v for v in VECTORS}

ACCOUNT = DATA["tokens"]["account"]
MAIN = DATA["tokens"]["main"]
RETIRED = DATA["tokens"]["retired"]

HEADER = {"v2": V2, "ma-v2": MA_V2, "v3": V3, "ma-v3": MA_V3}
NONCE_HEADER = {"v2": V2_NONCE, "ma-v2": V2_NONCE, "v3": V3_NONCE, "ma-v3": V3_NONCE}


def _copy(fields: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
    # The SDK mutates the params dict it is given (construct_get_url does params.update).
    return None if fields is None else {k: list(v) for k, v in fields.items()}


def _sign(vec: dict[str, Any]) -> str:
    if vec["header"] in ("v2", "ma-v2"):
        return sign_v2(vec["url"], vec["nonce"], vec["token"])
    return sign_v3(vec["method"], vec["url"], vec["nonce"], vec["token"], vec["form"])


def _tokens(vec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(account_tokens, main_tokens) holding the vector's token in the slot its header uses."""
    if vec["header"].startswith("ma-"):
        return [], [vec["token"]]
    return [vec["token"]], []


def _headers(vec: dict[str, Any], signature: str | None = None) -> dict[str, str]:
    return {
        HEADER[vec["header"]]: vec["signature"] if signature is None else signature,
        NONCE_HEADER[vec["header"]]: vec["nonce"],
    }


def _sdk_accepts(vec: dict[str, Any], signature: str) -> bool:
    if vec["header"] in ("v2", "ma-v2"):
        return validate_signature(vec["sdk_url"], vec["nonce"], signature, vec["token"])
    return validate_v3_signature(
        vec["method"],
        vec["sdk_url"],
        vec["nonce"],
        vec["token"],
        signature,
        _copy(vec["sdk_params"]),
    )


# ---------------------------------------------------------------------------
# §3.8 worked examples and Plivo-issued vectors
# ---------------------------------------------------------------------------


def test_fixture_covers_every_section_3_8_vector() -> None:
    assert set(BY_ID) == {
        "example1-v2",
        "example1-ma-v2",
        "example2-post-v3",
        "example2-post-ma-v3",
        "example2-get-v3",
        "example3-v3-retired",
        "example3-v3-account",
        "example3-ma-v3-main",
        "plivo-v2-answer-url",
        "plivo-go-v3-post-with-query",
        "plivo-go-v3-get-with-query",
        "plivo-go-v3-post-no-query",
        "plivo-go-v3-get-no-query",
    }


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_sign_produces_exact_signature(vec: dict[str, Any]) -> None:
    assert _sign(vec) == vec["signature"]


@pytest.mark.parametrize("vec", [v for v in VECTORS if v["signed_data"]], ids=lambda v: v["id"])
def test_vector_signed_data(vec: dict[str, Any]) -> None:
    if vec["header"] in ("v2", "ma-v2"):
        assert v2_string(vec["url"], vec["nonce"]) == vec["signed_data"]
    else:
        assert v3_string(vec["method"], vec["url"], vec["nonce"], vec["form"]) == vec["signed_data"]


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_verify_accepts(vec: dict[str, Any]) -> None:
    account, main = _tokens(vec)
    got = verify(vec["method"] or "POST", vec["url"], _headers(vec), vec["form"], account, main)
    assert got == Verdict(True, vec["header"], vec["nonce"])


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_sdk_oracle_accepts(vec: dict[str, Any]) -> None:
    # Guards the fixture itself: the official SDK agrees with every stored signature.
    assert _sdk_accepts(vec, vec["signature"])


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_wrong_token_rejected(vec: dict[str, Any]) -> None:
    account, main = (["not-the-token"], []) if vec["header"] in ("v2", "v3") else ([], ["nope"])
    got = verify(vec["method"] or "POST", vec["url"], _headers(vec), vec["form"], account, main)
    assert not got.ok


def test_example1_v2_ignores_query() -> None:
    vec = BY_ID["example1-v2"]
    bare = vec["url"].split("?")[0]
    assert sign_v2(bare, vec["nonce"], ACCOUNT) == vec["signature"]
    assert sign_v2(bare + "?tenant=other&x=", vec["nonce"], ACCOUNT) == vec["signature"]


def test_example1_both_headers_account_and_main() -> None:
    v2, ma = BY_ID["example1-v2"], BY_ID["example1-ma-v2"]
    headers = {V2: v2["signature"], MA_V2: ma["signature"], V2_NONCE: v2["nonce"]}
    assert verify("POST", v2["url"], headers, None, [ACCOUNT], [MAIN]) == Verdict(
        True, "v2", v2["nonce"]
    )
    # Plain V2 not signed by a known account token: Ma-V2 still verifies with the main token.
    assert verify("POST", v2["url"], headers, None, ["other"], [MAIN]) == Verdict(
        True, "ma-v2", v2["nonce"]
    )


def test_example2_post_and_get_forms_differ_but_both_verify() -> None:
    post, get = BY_ID["example2-post-v3"], BY_ID["example2-get-v3"]
    assert post["signature"] != get["signature"]
    # GET: the fields travel in the query; a form passed alongside is not signed.
    assert sign_v3("GET", get["url"], get["nonce"], ACCOUNT, post["form"]) == get["signature"]
    # POST with an empty form behaves like GET.
    assert sign_v3("POST", get["url"], get["nonce"], ACCOUNT, {}) == get["signature"]
    assert sign_v3("POST", get["url"], get["nonce"], ACCOUNT, None) == get["signature"]


def test_example2_empty_form_value_is_signed() -> None:
    vec = BY_ID["example2-post-v3"]
    form = {k: v for k, v in vec["form"].items() if k != "PowerpackUUID"}
    assert sign_v3("POST", vec["url"], vec["nonce"], ACCOUNT, form) != vec["signature"]


def test_example2_signed_headers_reproduce_v3_and_ma_v3() -> None:
    post, ma = BY_ID["example2-post-v3"], BY_ID["example2-post-ma-v3"]
    headers = signed_headers("POST", post["url"], post["form"], ACCOUNT, post["nonce"], MAIN)
    assert headers["X-Plivo-Signature-V3"] == post["signature"]
    assert headers["X-Plivo-Signature-Ma-V3"] == ma["signature"]
    assert headers["X-Plivo-Signature-V3-Nonce"] == post["nonce"]
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify("POST", post["url"], lower, post["form"], [ACCOUNT], [MAIN]).scheme == "v3"


def test_example1_signed_headers_reproduce_v2_and_ma_v2() -> None:
    v2, ma = BY_ID["example1-v2"], BY_ID["example1-ma-v2"]
    headers = signed_headers("POST", v2["url"], None, ACCOUNT, v2["nonce"], MAIN)
    assert headers["X-Plivo-Signature-V2"] == v2["signature"]
    assert headers["X-Plivo-Signature-Ma-V2"] == ma["signature"]
    assert "X-Plivo-Signature-Ma-V3" in headers
    assert "X-Plivo-Signature-Ma-V2" not in signed_headers("POST", v2["url"], None, ACCOUNT, "1")


def test_example3_wire_body_parses_to_signed_form() -> None:
    vec = BY_ID["example3-v3-account"]
    form: dict[str, list[str]] = {}
    for key, value in parse_qsl(vec["wire_body"], keep_blank_values=True):
        form.setdefault(key, []).append(value)
    assert form == vec["form"]
    assert form["Text"] == ["Grüße 👋"]
    assert "TextGrüße 👋To" in v3_string("POST", vec["url"], vec["nonce"], form)
    assert sign_v3("POST", vec["url"], vec["nonce"], ACCOUNT, form) == vec["signature"]


@pytest.mark.parametrize(
    "account_tokens",
    [[ACCOUNT], [RETIRED], [ACCOUNT, RETIRED], [RETIRED, ACCOUNT], ["x", ACCOUNT]],
)
@pytest.mark.parametrize("sep", [",", ", ", " , "])
def test_example3_rotation_either_token_validates(account_tokens: list[str], sep: str) -> None:
    vec = BY_ID["example3-v3-account"]
    header = sep.join(DATA["rotation"]["header"].split(","))
    headers = {V3: header, V3_NONCE: vec["nonce"]}
    got = verify("POST", vec["url"], headers, vec["form"], account_tokens, [])
    assert got == Verdict(True, "v3", vec["nonce"])


def test_example3_rotation_header_sdk_accepts_each_token() -> None:
    vec = BY_ID["example3-v3-account"]
    for token in (RETIRED, ACCOUNT):
        assert validate_v3_signature(
            "POST", vec["url"], vec["nonce"], token, DATA["rotation"]["header"], _copy(vec["form"])
        )


def test_example3_rotation_unknown_token_rejected() -> None:
    vec = BY_ID["example3-v3-account"]
    headers = {V3: DATA["rotation"]["header"], V3_NONCE: vec["nonce"]}
    assert not verify("POST", vec["url"], headers, vec["form"], [MAIN, "other"], []).ok


def test_example3_plain_v3_wrong_but_ma_v3_valid() -> None:
    # The integrator report in §3.1: plain V3 present but not matching, Ma-V3 matches.
    vec, ma = BY_ID["example3-v3-account"], BY_ID["example3-ma-v3-main"]
    headers = {V3: BY_ID["example3-v3-retired"]["signature"], MA_V3: ma["signature"]}
    headers[V3_NONCE] = vec["nonce"]
    got = verify("POST", vec["url"], headers, vec["form"], [ACCOUNT], [MAIN])
    assert got == Verdict(True, "ma-v3", vec["nonce"])


def test_example3_tampered_text_rejected() -> None:
    vec = BY_ID["example3-v3-account"]
    form = _copy(vec["form"])
    assert form is not None
    form["Text"] = ["Grüsse 👋"]
    assert not verify("POST", vec["url"], _headers(vec), form, [ACCOUNT], []).ok


ANSWER = BY_ID["plivo-v2-answer-url"]


@pytest.mark.parametrize("url", ANSWER["invalid_urls"])
def test_plivo_v2_vector_fails_for_other_url_spellings(url: str) -> None:
    assert sign_v2(url, ANSWER["nonce"], ANSWER["token"]) != ANSWER["signature"]
    assert not verify("POST", url, _headers(ANSWER), None, [ANSWER["token"]], []).ok
    assert not validate_signature(url, ANSWER["nonce"], ANSWER["signature"], ANSWER["token"])


@pytest.mark.parametrize("url", ANSWER["also_valid_urls"])
def test_plivo_v2_vector_passes_with_query(url: str) -> None:
    assert sign_v2(url, ANSWER["nonce"], ANSWER["token"]) == ANSWER["signature"]
    assert verify("GET", url, _headers(ANSWER), None, [ANSWER["token"]], []).ok
    assert validate_signature(url, ANSWER["nonce"], ANSWER["signature"], ANSWER["token"])


@pytest.mark.parametrize(
    ("url", "same_as"),
    [
        ("https://h.example/cb;v=1", "https://h.example/cb"),
        ("https://h.example/a;b/cb;x?q=1", "https://h.example/a;b/cb?q=1"),
        ("https://user:pw@h.example:8443/cb;p#frag", "https://user:pw@h.example:8443/cb"),
    ],
)
def test_semicolon_params_tail_dropped_like_sdk(url: str, same_as: str) -> None:
    # §3.2: the SDK drops a ";params" tail of the last path segment; we use the same split.
    nonce, form = "12345678901234567890", {"A": ["1"], "b": ["", "é"]}
    v2 = sign_v2(url, nonce, ACCOUNT)
    assert v2 == sign_v2(same_as, nonce, ACCOUNT)
    assert validate_signature(url, nonce, v2, ACCOUNT)
    v3 = sign_v3("POST", url, nonce, ACCOUNT, form)
    assert v3 == sign_v3("POST", same_as, nonce, ACCOUNT, form)
    assert validate_v3_signature("POST", url, nonce, ACCOUNT, v3, _copy(form))
    v3 = sign_v3("GET", url, nonce, ACCOUNT)
    assert validate_v3_signature("GET", url, nonce, ACCOUNT, v3)


def test_older_buggy_plivo_go_vector_is_not_accepted() -> None:
    # §3.8: produced by an earlier, buggy Go implementation; the Python SDK rejects it too.
    bad = "rXj4UwTSVxH6Kj+W0qX8LaCvVOOvmzPGzY8sQVn3d1I="
    assert sign_v3("GET", "https://answer.url", "12345", "my_auth_token") != bad
    headers = {V3: bad, V3_NONCE: "12345"}
    assert not verify("GET", "https://answer.url", headers, None, ["my_auth_token"], []).ok


@pytest.mark.parametrize("suffix", ["with-query", "no-query"])
def test_plivo_go_post_and_get_differ(suffix: str) -> None:
    post, get = BY_ID[f"plivo-go-v3-post-{suffix}"], BY_ID[f"plivo-go-v3-get-{suffix}"]
    assert post["signature"] != get["signature"]
    # The GET URL carries the params in its query; the POST one carries them in the form.
    assert get["form"] is None
    assert post["form"] == get["sdk_params"]
    assert get["url"].startswith(post["url"])


# ---------------------------------------------------------------------------
# verify() policy (§3.1)
# ---------------------------------------------------------------------------

URL = BY_ID["example2-post-v3"]["url"]
FORM: dict[str, list[str]] = BY_ID["example2-post-v3"]["form"]
NONCE = "70381946251208837465"


def _v3(token: str, form: dict[str, list[str]] | None = FORM, nonce: str = NONCE) -> str:
    return sign_v3("POST", URL, nonce, token, form)


def _v2(token: str, nonce: str = NONCE) -> str:
    return sign_v2(URL, nonce, token)


def _check(
    headers: dict[str, str], account: list[str] | None = None, main: list[str] | None = None
) -> Verdict:
    return verify(
        "POST",
        URL,
        headers,
        FORM,
        [ACCOUNT] if account is None else account,
        [MAIN] if main is None else main,
    )


def test_policy_v3_valid() -> None:
    assert _check({V3: _v3(ACCOUNT), V3_NONCE: NONCE}) == Verdict(True, "v3", NONCE)


def test_policy_v3_and_ma_v3_both_valid_reports_v3() -> None:
    headers = {V3: _v3(ACCOUNT), MA_V3: _v3(MAIN), V3_NONCE: NONCE}
    assert _check(headers) == Verdict(True, "v3", NONCE)


def test_policy_only_ma_v3_valid() -> None:
    headers = {V3: _v3("wrong-token"), MA_V3: _v3(MAIN), V3_NONCE: NONCE}
    assert _check(headers) == Verdict(True, "ma-v3", NONCE)


def test_policy_ma_v3_alone_valid() -> None:
    assert _check({MA_V3: _v3(MAIN), V3_NONCE: NONCE}) == Verdict(True, "ma-v3", NONCE)


@pytest.mark.parametrize(
    "v3_headers",
    [
        {V3: "wrong"},
        {MA_V3: "wrong"},
        {V3: "", MA_V3: ""},
    ],
    ids=["bad-v3", "bad-ma-v3", "empty-both"],
)
def test_policy_invalid_v3_does_not_fall_back_to_valid_v2(v3_headers: dict[str, str]) -> None:
    headers = {
        **v3_headers,
        V3_NONCE: NONCE,
        V2: _v2(ACCOUNT),
        MA_V2: _v2(MAIN),
        V2_NONCE: NONCE,
    }
    assert _check({V2: _v2(ACCOUNT), V2_NONCE: NONCE}).ok  # V2 alone would pass
    assert not _check(headers).ok


def test_policy_v3_signature_for_tampered_body_fails_even_with_valid_v2() -> None:
    headers = {V3: _v3(ACCOUNT), V3_NONCE: NONCE, V2: _v2(ACCOUNT), V2_NONCE: NONCE}
    tampered = {**FORM, "Status": ["delivered"]}
    got = verify("POST", URL, headers, tampered, [ACCOUNT], [MAIN])
    assert not got.ok


def test_policy_v2_only_valid() -> None:
    assert _check({V2: _v2(ACCOUNT), V2_NONCE: NONCE}) == Verdict(True, "v2", NONCE)


def test_policy_v2_covers_neither_body_nor_query() -> None:
    headers = {V2: _v2(ACCOUNT), V2_NONCE: NONCE}
    got = verify("POST", URL + "&x=1", headers, {"Status": ["forged"]}, [ACCOUNT], [])
    assert got == Verdict(True, "v2", NONCE)


def test_policy_only_ma_v2_valid() -> None:
    headers = {V2: _v2("wrong-token"), MA_V2: _v2(MAIN), V2_NONCE: NONCE}
    assert _check(headers) == Verdict(True, "ma-v2", NONCE)


def test_policy_v2_both_invalid() -> None:
    headers = {V2: _v2("wrong-token"), MA_V2: _v2("wrong-too"), V2_NONCE: NONCE}
    assert not _check(headers).ok


def test_policy_no_headers() -> None:
    got = _check({})
    assert not got.ok
    assert got.nonce is None
    # Nonce headers alone are not signatures.
    assert not _check({V3_NONCE: NONCE, V2_NONCE: NONCE}).ok


@pytest.mark.parametrize(
    "headers",
    [
        {V3: "SIG"},
        {V3: "SIG", V3_NONCE: ""},
        {V3: "SIG", V2_NONCE: NONCE},  # nonce of the other family does not count
        {MA_V3: "SIG"},
        {V2: "SIG2"},
        {V2: "SIG2", V2_NONCE: ""},
        {V2: "SIG2", V3_NONCE: NONCE},
        {MA_V2: "SIG2"},
    ],
    ids=[
        "v3-no-nonce",
        "v3-empty-nonce",
        "v3-with-v2-nonce",
        "ma-v3-no-nonce",
        "v2-no-nonce",
        "v2-empty-nonce",
        "v2-with-v3-nonce",
        "ma-v2-no-nonce",
    ],
)
def test_policy_missing_nonce(headers: dict[str, str]) -> None:
    # Signed over an empty nonce, so treating a missing nonce as "" would wrongly verify.
    real = {"SIG": _v3(ACCOUNT, nonce=""), "SIG2": _v2(ACCOUNT, nonce="")}
    headers = {k: real.get(v, v) for k, v in headers.items()}
    assert not _check(headers).ok


def test_policy_wrong_nonce() -> None:
    assert not _check({V3: _v3(ACCOUNT), V3_NONCE: NONCE[:-1] + "0"}).ok
    assert not _check({V2: _v2(ACCOUNT), V2_NONCE: NONCE[:-1] + "0"}).ok


GARBAGE = [
    "",
    " ",
    ",",
    " , ,",
    "not base64!!",
    "====",
    "A",
    "AAA",
    "é",
    "Zm9v",  # valid base64, wrong length
    "\x00",
    "F8f0qPHgnZxfhHFboKMReIY7SbbixsCK3UA6qj4JRmU",  # missing padding
    "F8f0qPHgnZxfhHFboKMReIY7SbbixsCK3UA6qj4JRmU=garbage",
    "-_-_" * 11,  # urlsafe alphabet
]


@pytest.mark.parametrize("value", GARBAGE)
@pytest.mark.parametrize("family", ["v2", "ma-v2", "v3", "ma-v3"])
def test_policy_garbage_signature_rejected_without_exception(value: str, family: str) -> None:
    headers = {HEADER[family]: value, NONCE_HEADER[family]: NONCE}
    got = _check(headers, account=[ACCOUNT, RETIRED], main=[MAIN])
    assert isinstance(got, Verdict)
    assert not got.ok


@pytest.mark.parametrize("value", GARBAGE)
def test_policy_garbage_next_to_valid_signature_still_ok(value: str) -> None:
    headers = {V3: f"{value},{_v3(ACCOUNT)}", V3_NONCE: NONCE}
    assert _check(headers).ok
    headers = {V3: f"{_v3(ACCOUNT)}, {value}", V3_NONCE: NONCE}
    assert _check(headers).ok


def test_policy_previous_token_accepted() -> None:
    tokens = [ACCOUNT, RETIRED]
    assert _check({V3: _v3(RETIRED), V3_NONCE: NONCE}, account=tokens).scheme == "v3"
    assert _check({V2: _v2(RETIRED), V2_NONCE: NONCE}, account=tokens).scheme == "v2"


def test_policy_token_not_in_list_rejected() -> None:
    assert not _check({V3: _v3(RETIRED), V3_NONCE: NONCE}, account=[ACCOUNT]).ok
    assert not _check({V2: _v2(RETIRED), V2_NONCE: NONCE}, account=[ACCOUNT]).ok
    assert not _check({V3: _v3(ACCOUNT), V3_NONCE: NONCE}, account=[]).ok


def test_policy_main_token_only_for_ma_headers() -> None:
    # A plain header signed with the main token fails when the main token is not an account token.
    assert not _check({V3: _v3(MAIN), V3_NONCE: NONCE}, account=[ACCOUNT], main=[MAIN]).ok
    assert not _check({V2: _v2(MAIN), V2_NONCE: NONCE}, account=[ACCOUNT], main=[MAIN]).ok
    # ...and the account token does not verify a Ma- header.
    assert not _check({MA_V3: _v3(ACCOUNT), V3_NONCE: NONCE}, account=[ACCOUNT], main=[MAIN]).ok
    assert not _check({MA_V2: _v2(ACCOUNT), V2_NONCE: NONCE}, account=[ACCOUNT], main=[MAIN]).ok
    # When the main account signs its own callbacks, its token is also an account token.
    assert _check({V3: _v3(MAIN), V3_NONCE: NONCE}, account=[MAIN], main=[MAIN]).ok


def test_policy_method_case_insensitive() -> None:
    headers = {V3: _v3(ACCOUNT), V3_NONCE: NONCE}
    assert verify("post", URL, headers, FORM, [ACCOUNT], []).ok


def test_policy_get_ignores_form_argument() -> None:
    # For GET the fields are the query; a body passed by a caller is not signed.
    get = BY_ID["example2-get-v3"]
    headers = {V3: get["signature"], V3_NONCE: get["nonce"]}
    assert verify("GET", get["url"], headers, {"x": ["y"]}, [ACCOUNT], []).ok
    assert not verify("POST", get["url"], headers, {"x": ["y"]}, [ACCOUNT], []).ok


# ---------------------------------------------------------------------------
# Property tests against the official SDK
# ---------------------------------------------------------------------------

# Strategies are kept to few draws each: Hypothesis' cost is per draw, not per character.


def _host(raw: str) -> str:
    return ".".join(label for label in raw.split(".") if label) or "h"


def _path(raw: str) -> str:
    return raw if not raw or raw.startswith("/") else "/" + raw


HOSTS = st.text(string.ascii_lowercase + string.digits + ".", min_size=1, max_size=16).map(_host)
# Userinfo is part of the signed netloc. (The SDK's URL validator rejects "~" right after "://".)
USERINFO = st.sampled_from(["", "", "", "u@", "user:pass@", "a.b-c~d:p_w~@", "x:@", "9@"])
PORTS = st.integers(-65535, 65535).map(lambda p: f":{p}" if p > 0 else "")
# ASCII path characters other than the delimiters "?", "#" and ";" (the SDK drops ";params").
PATHS = st.text(string.ascii_letters + string.digits + "/-._~!$'()*+,=:@%", max_size=24).map(_path)
QUERY_KEY = st.sampled_from(
    ["a", "b", "tenant", "Z", "_x", "a b", "k&=", "A", "Text", "From", "x+y", "%", "q"]
)
ASCII_VALUE = st.text(string.printable, max_size=12)
# (key, value); a None value renders as a bare "key" (a blank value without "=").
QUERY_PAIRS = st.lists(st.tuples(QUERY_KEY, st.one_of(ASCII_VALUE, st.none())), max_size=6)
FRAGMENTS = st.sampled_from(["", "", "", "frag", "a=b&c?d/e"])
FIELD_KEY = st.one_of(
    st.sampled_from(
        ["From", "To", "Text", "Type", "Status", "ErrorCode", "MessageUUID", "Units", "tenant", "a"]
    ),
    st.text(min_size=1, max_size=8),
)
FIELD_VALUE = st.one_of(
    st.sampled_from(
        [
            "",
            "",
            "sms",
            "Grüße 👋",
            "café",
            "naïve façade",
            "日本語",
            "👍🏽",
            "Ω≈ç√",
            "a+b=c&d",
            " ",
        ]
    ),
    st.text(max_size=12),
)


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return fields


# key -> [values], as parse_qs gives them; the sampled keys make repeated keys common.
FIELDS = st.lists(st.tuples(FIELD_KEY, FIELD_VALUE), max_size=8).map(_group)
NONCES = st.integers(0, 10**20 - 1).map(lambda n: f"{n:020d}")
TOKENS = st.one_of(
    st.text(string.ascii_letters + string.digits, min_size=40, max_size=40),
    st.text(min_size=1, max_size=20),
)


@dataclass(frozen=True)
class Url:
    scheme: str
    userinfo: str
    host: str
    port: str
    path: str
    query_pairs: tuple[tuple[str, str | None], ...]
    fragment: str

    @property
    def query(self) -> str:
        return "&".join(
            quote_plus(k) if v is None else f"{quote_plus(k)}={quote_plus(v)}"
            for k, v in self.query_pairs
        )

    @property
    def query_keys(self) -> set[str]:
        return {k for k, _ in self.query_pairs}

    def with_path(self, path: str) -> Url:
        return Url(
            self.scheme,
            self.userinfo,
            self.host,
            self.port,
            path,
            self.query_pairs,
            self.fragment,
        )

    def build(self, extra_query: str = "") -> str:
        query = "&".join(q for q in (self.query, extra_query) if q)
        return (
            f"{self.scheme}://{self.userinfo}{self.host}{self.port}{self.path}"
            + (f"?{query}" if query else "")
            + (f"#{self.fragment}" if self.fragment else "")
        )


def _url(
    scheme: str,
    userinfo: str,
    host: str,
    port: str,
    path: str,
    pairs: list[tuple[str, str | None]],
    fragment: str,
) -> Url:
    return Url(scheme, userinfo, host, port, path, tuple(pairs), fragment)


def urls() -> st.SearchStrategy[Url]:
    return st.builds(
        _url,
        st.sampled_from(["http", "https"]),
        USERINFO,
        HOSTS,
        PORTS,
        PATHS,
        QUERY_PAIRS,
        FRAGMENTS,
    )


def _get_fields(url: Url, fields: dict[str, list[str]]) -> dict[str, list[str]]:
    # §3.7: on GET the SDK lets a query value override a same-named params entry; keep keys apart.
    return {k: v for k, v in fields.items() if k not in url.query_keys}


def _encode(fields: dict[str, list[str]]) -> str:
    return urlencode([(k, v) for k, vs in fields.items() for v in vs])


PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(url=urls(), nonce=NONCES, token=TOKENS)
def test_property_v2_matches_sdk(url: Url, nonce: str, token: str) -> None:
    # (a) the SDK accepts what we sign, and verify() accepts it too.
    signature = sign_v2(url.build(), nonce, token)
    assert validate_signature(url.build(), nonce, signature, token)
    got = verify("POST", url.build(), {V2: signature, V2_NONCE: nonce}, None, [token], [])
    assert got == Verdict(True, "v2", nonce)


@PROPERTY
@given(url=urls(), fields=FIELDS, nonce=NONCES, token=TOKENS)
def test_property_v3_matches_sdk_both_ways(
    url: Url, fields: dict[str, list[str]], nonce: str, token: str
) -> None:
    token_b, nonce_b = token.encode("utf-8"), nonce.encode("utf-8")

    # POST: (b) the SDK accepts our signature; (c) verify() accepts the SDK's.
    ours = sign_v3("POST", url.build(), nonce, token, fields)
    assert validate_v3_signature("POST", url.build(), nonce, token, ours, _copy(fields))
    sdk_data = construct_post_url(url.build(), _copy(fields)).decode("utf-8")
    assert v3_string("POST", url.build(), nonce, fields) == f"{sdk_data}.{nonce}"
    sdk_sig = get_signature_v3(token_b, sdk_data, nonce_b).decode("ascii")
    got = verify("POST", url.build(), {V3: sdk_sig, V3_NONCE: nonce}, fields, [token], [])
    assert got == Verdict(True, "v3", nonce)

    # GET: our code sees the fields in the (percent-encoded, possibly non-ASCII) query; the SDK
    # gets the ASCII-only URL plus the decoded fields as params (§3.6), which is the same string.
    fields = _get_fields(url, fields)
    get_url = url.build(_encode(fields))
    ours = sign_v3("GET", get_url, nonce, token)
    assert validate_v3_signature("GET", url.build(), nonce, token, ours, _copy(fields))
    sdk_data = construct_get_url(url.build(), _copy(fields)).decode("utf-8")
    assert v3_string("GET", get_url, nonce) == f"{sdk_data}.{nonce}"
    sdk_sig = get_signature_v3(token_b, sdk_data, nonce_b).decode("ascii")
    headers = {MA_V3: f"{ours},{sdk_sig}", V3_NONCE: nonce}
    assert verify("GET", get_url, headers, None, [], [token]) == Verdict(True, "ma-v3", nonce)


ALNUM = string.ascii_letters + string.digits


@PROPERTY
@given(
    url=urls(),
    form=FIELDS,
    nonce=NONCES,
    token=TOKENS,
    other=TOKENS,
    method=st.sampled_from(["POST", "GET"]),
    target=st.sampled_from(["form", "nonce", "path", "token"]),
    data=st.data(),
)
def test_property_round_trip_and_single_change_fails(
    url: Url,
    form: dict[str, list[str]],
    nonce: str,
    token: str,
    other: str,
    method: str,
    target: str,
    data: st.DataObject,
) -> None:
    if method == "GET":
        form = _get_fields(url, form)
        request_url, body = url.build(_encode(form)), None
    else:
        request_url, body = url.build(), form
    headers = signed_headers(method, request_url, body, token, nonce)
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify(method, request_url, lower, body, [token], []) == Verdict(True, "v3", nonce)
    v3_only = {V3: lower[V3], V3_NONCE: nonce}

    accounts = [token]
    if target == "form" and any(form.values()):
        keys = [k for k in form if form[k]]
        key = data.draw(st.sampled_from(keys))
        values = list(form[key])
        i = data.draw(st.integers(0, len(values) - 1))
        value = values[i]
        if value:
            j = data.draw(st.integers(0, len(value) - 1))
            repl = data.draw(
                st.characters(exclude_categories=["Cs"]).filter(lambda c: c != value[j])
            )
            values[i] = value[:j] + repl + value[j + 1 :]
        else:
            values[i] = data.draw(st.characters(exclude_categories=["Cs"]))
        form = {**form, key: values}
        if method == "GET":
            request_url, body = url.build(_encode(form)), None
        else:
            body = form
    elif target == "nonce":
        j = data.draw(st.integers(0, len(nonce) - 1))
        repl = data.draw(st.sampled_from(string.digits).filter(lambda c: c != nonce[j]))
        v3_only[V3_NONCE] = nonce[:j] + repl + nonce[j + 1 :]
    elif target == "path" and url.path:
        j = data.draw(st.integers(0, len(url.path) - 1))
        repl = data.draw(st.sampled_from(ALNUM).filter(lambda c: c != url.path[j]))
        changed = url.with_path(url.path[:j] + repl + url.path[j + 1 :])
        request_url = changed.build(_encode(form)) if method == "GET" else changed.build()
    else:
        if other == token:
            other += "x"
        accounts = [other]

    assert not verify(method, request_url, v3_only, body, accounts, []).ok
