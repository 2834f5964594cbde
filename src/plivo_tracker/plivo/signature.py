"""Plivo request signatures: sign and verify V2 and V3 (plain and Ma-), pure and constant-time.

The algorithm follows plivo-protocol.md §3 and is cross-checked against the official SDK in tests.
Nothing here reads the clock, the network or the settings: callers pass tokens and the URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

Fields = Mapping[str, Sequence[str]]

V2 = "x-plivo-signature-v2"
MA_V2 = "x-plivo-signature-ma-v2"
V2_NONCE = "x-plivo-signature-v2-nonce"
V3 = "x-plivo-signature-v3"
MA_V3 = "x-plivo-signature-ma-v3"
V3_NONCE = "x-plivo-signature-v3-nonce"


def _mac(token: str, data: str) -> bytes:
    # surrogatepass: a lone surrogate (a JSON escape) cannot match, but must not raise either.
    return hmac.new(
        token.encode("utf-8"), data.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).digest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _base(url: str) -> str:
    # Same split as the SDK: drops query, fragment and a ";params" tail.
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}{u.path}"


def _pairs(fields: Fields) -> Iterator[tuple[str, str]]:
    # Code-point order, case-sensitive, every value of a repeated key (also sorted).
    for key in sorted(fields):
        for value in sorted(fields[key]):
            yield key, value


def _scalar(value: object) -> str:
    # The SDK's string_format: numbers and booleans through str(), None as "None".
    return value if isinstance(value, str) else str(value)


def _params_string(obj: Mapping[str, object]) -> str:
    out = []
    for key in sorted(obj):
        value = obj[key]
        if isinstance(value, list):
            out.append("".join(key + _scalar(v) for v in sorted(_scalar(v) for v in value)))
        elif isinstance(value, dict):
            out.append(key + _params_string(value))
        else:
            out.append(key + _scalar(value))
    return "".join(out)


def fields_from_json(obj: Mapping[str, object]) -> dict[str, list[str]]:
    """A JSON object body as signable fields, following the SDK's rules (§3.4).

    Scalars become strings, arrays keep every value, and a nested object signs as
    `key + P(object)`, so it is carried here as one pre-rendered value.
    """
    fields: dict[str, list[str]] = {}
    for key, value in obj.items():
        if isinstance(value, list):
            fields[key] = [_scalar(v) for v in value]
        elif isinstance(value, dict):
            fields[key] = [_params_string(value)]
        else:
            fields[key] = [_scalar(value)]
    return fields


def v2_string(url: str, nonce: str) -> str:
    """The data V2 signs: base URL (no query) immediately followed by the nonce."""
    return _base(url) + nonce


def v3_string(method: str, url: str, nonce: str, form: Fields | None = None) -> str:
    """The data V3 signs: URL with sorted decoded query, sorted form pairs, and the nonce."""
    query = parse_qs(urlparse(url).query, keep_blank_values=True)
    qs = "&".join(f"{k}={v}" for k, v in _pairs(query))
    s = _base(url)
    if method.upper() == "POST" and form:
        s += "?" + qs + ("." if qs else "") + "".join(k + v for k, v in _pairs(form))
    elif qs:
        s += "?" + qs
    return s + "." + nonce


def sign_v2(url: str, nonce: str, token: str) -> str:
    return _b64(_mac(token, v2_string(url, nonce)))


def sign_v3(method: str, url: str, nonce: str, token: str, form: Fields | None = None) -> str:
    return _b64(_mac(token, v3_string(method, url, nonce, form)))


def _matches(header: str, tokens: Iterable[str], data: str) -> bool:
    """True if any comma-separated signature in `header` is the HMAC of `data` under any token."""
    got: list[bytes] = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            got.append(base64.b64decode(part, validate=True))
        except ValueError:
            continue
    if not got:
        return False
    ok = False
    for token in tokens:
        expected = _mac(token, data)
        for candidate in got:
            # Compare every pair (no early exit) so timing does not reveal which one matched.
            ok |= hmac.compare_digest(expected, candidate)
    return ok


# Nonces longer than this are cut before they are stored (genuine nonces have 20 digits).
NONCE_MAX = 128


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of a check: which header family verified and the nonce that came with it.

    `nonces` holds every nonce the request carried (V2 and V3 nonce headers, cut to NONCE_MAX,
    without repeats), whichever scheme verified: all of them are recorded, so stripping one
    family from a captured request cannot replay it. It is evidence, not part of the verdict,
    so it takes no part in equality.
    """

    ok: bool
    scheme: str  # "v3", "ma-v3", "v2", "ma-v2" when ok; a reason when not
    nonce: str | None = None
    nonces: tuple[str, ...] = field(default=(), compare=False)


def request_nonces(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every non-empty nonce header of the request (lower-case names), cut to NONCE_MAX, once."""
    n2 = headers.get(V2_NONCE)
    n3 = headers.get(V3_NONCE)
    if n2:
        n2 = n2[:NONCE_MAX]
        if n3:
            n3 = n3[:NONCE_MAX]
            return (n2,) if n2 == n3 else (n2, n3)
        return (n2,)
    return (n3[:NONCE_MAX],) if n3 else ()


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    form: Fields | None,
    account_tokens: Sequence[str],
    main_tokens: Sequence[str],
    *,
    v3_only: bool = False,
) -> Verdict:
    """Apply the policy of plivo-protocol.md §3.1 to one request.

    `headers` must have lower-case names. `url` is the URL Plivo called, rebuilt from
    configuration (PUBLIC_BASE_URL + path + raw query), never from the Host header.
    If any V3 header is present only V3 counts: V2 does not cover the body, so falling back
    to it would let a tampered body through. `v3_only` (PLIVO_SIGNATURE=v3) refuses V2 entirely.
    """
    nonces = request_nonces(headers)
    v3, ma_v3 = headers.get(V3), headers.get(MA_V3)
    if v3 is not None or ma_v3 is not None:
        nonce = headers.get(V3_NONCE)
        if not nonce:
            return Verdict(False, "v3 signature without nonce", None, nonces)
        data = v3_string(method, url, nonce, form)
        if v3 is not None and _matches(v3, account_tokens, data):
            return Verdict(True, "v3", nonce, nonces)
        if ma_v3 is not None and _matches(ma_v3, main_tokens, data):
            return Verdict(True, "ma-v3", nonce, nonces)
        return Verdict(False, "v3 signature mismatch", None, nonces)
    v2, ma_v2 = headers.get(V2), headers.get(MA_V2)
    if v2 is not None or ma_v2 is not None:
        if v3_only:
            return Verdict(False, "v2 signature not accepted (PLIVO_SIGNATURE=v3)", None, nonces)
        nonce = headers.get(V2_NONCE)
        if not nonce:
            return Verdict(False, "v2 signature without nonce", None, nonces)
        data = v2_string(url, nonce)
        if v2 is not None and _matches(v2, account_tokens, data):
            return Verdict(True, "v2", nonce, nonces)
        if ma_v2 is not None and _matches(ma_v2, main_tokens, data):
            return Verdict(True, "ma-v2", nonce, nonces)
        return Verdict(False, "v2 signature mismatch", None, nonces)
    return Verdict(False, "no signature headers", None, nonces)


def signed_headers(
    method: str,
    url: str,
    form: Fields | None,
    token: str,
    nonce: str,
    main_token: str | None = None,
) -> dict[str, str]:
    """Headers Plivo would send for this request (V2 and V3, plus Ma- with a main token)."""
    headers = {
        "X-Plivo-Signature-V2": sign_v2(url, nonce, token),
        "X-Plivo-Signature-V2-Nonce": nonce,
        "X-Plivo-Signature-V3": sign_v3(method, url, nonce, token, form),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
    if main_token is not None:
        headers["X-Plivo-Signature-Ma-V2"] = sign_v2(url, nonce, main_token)
        headers["X-Plivo-Signature-Ma-V3"] = sign_v3(method, url, nonce, main_token, form)
    return headers
