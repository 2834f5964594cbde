"""The emitter against a recording receiver: dropped callbacks, sent-final routes, per-part
callbacks, signature modes, and Get Message following every MDR to its latest state.

The receiver is a plain ASGI app that records each request and answers 200; a high `speed`
makes a whole lifecycle take milliseconds.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from plivo_tracker.plivo.signature import verify
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.emitter import Emitter
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import AUTH_ID, BASE_URL, MAIN_TOKEN, TOKEN

CALLBACK_URL = BASE_URL + "/plivo/callback"
MESSAGES = f"/v1/Account/{AUTH_ID}/Message/"
QUIET = {"dup_rate": 0.0, "reorder_rate": 0.0}


@dataclass
class Call:
    method: str
    url: str
    headers: dict[str, str]
    fields: dict[str, list[str]]

    @property
    def one(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.fields.items()}


@dataclass
class Recorder:
    """An ASGI callback receiver that keeps every request and answers 200."""

    calls: list[Call] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        url = f"{scope['scheme']}://{headers['host']}{scope['path']}" + (
            f"?{query}" if query else ""
        )
        source = query if scope["method"] == "GET" else body.decode()
        fields = parse_qs(source, keep_blank_values=True)
        self.calls.append(Call(scope["method"], url, headers, fields))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def of(self, uuid: str) -> list[dict[str, str]]:
        """One message's callbacks in Sequence order (arrival order may differ: each callback
        is delivered by its own task, as Plivo does)."""
        mine = [c.one for c in self.calls if c.one["MessageUUID"] == uuid]
        return sorted(mine, key=lambda f: int(f["Sequence"]))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def callbacks(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=recorder)) as client:
        yield client


async def _run(
    callbacks: httpx.AsyncClient,
    cfg: ScenarioConfig,
    dsts: list[str],
    *,
    text: str = "code 123456",
    method: str = "POST",
    url: str | None = CALLBACK_URL,
    **emitter_kwargs: Any,
) -> tuple[SimulatedPlivo, Emitter, list[str]]:
    """Send one message per destination through the Message API and wait for every callback."""
    emitter = Emitter(TOKEN, cfg, seed=11, client=callbacks, **emitter_kwargs)
    sim = SimulatedPlivo(AUTH_ID, TOKEN, emitter=emitter)
    transport = httpx.ASGITransport(app=create_simulator_app(sim))
    uuids = []
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://simulator", auth=(AUTH_ID, TOKEN)
        ) as api:
            for dst in dsts:
                body = {"src": "14155550100", "dst": dst, "text": text, "method": method}
                if url is not None:
                    body["url"] = url
                resp = await api.post(MESSAGES, json=body)
                uuids.extend(resp.json()["message_uuid"])
            await emitter.idle()
    finally:
        await emitter.close()
    return sim, emitter, uuids


async def _get(sim: SimulatedPlivo, uuid: str) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=create_simulator_app(sim))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://simulator", auth=(AUTH_ID, TOKEN)
    ) as api:
        resp = await api.get(f"{MESSAGES}{uuid}/")
    assert resp.status_code == 200
    mdr: dict[str, Any] = resp.json()
    return mdr


def _numbers(n: int) -> list[str]:
    return [f"1415555{i:04d}" for i in range(n)]


# --- Dropped callbacks ----------------------------------------------------------------------


async def test_dropped_callbacks_never_reach_the_receiver_but_the_mdr_moves(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, callback_drop_rate=1.0, fail_rate=0.3, undelivered_rate=0.3)
    sim, emitter, uuids = await _run(callbacks, cfg, _numbers(10))
    assert recorder.calls == []
    assert emitter.delivered == []
    assert {uuid for uuid, _ in emitter.dropped} == set(uuids)
    for uuid in uuids:
        mdr = await _get(sim, uuid)
        assert mdr["message_state"] in ("delivered", "undelivered", "failed")
        assert mdr["error_code"] is not None  # "000" once delivered, else the Plivo code
        assert (mdr["error_code"] == "000") == (mdr["message_state"] == "delivered")
        assert mdr["message_updated_time"] >= mdr["message_time"]


async def test_a_share_of_messages_loses_all_its_callbacks(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, callback_drop_rate=0.5, **QUIET)
    sim, emitter, uuids = await _run(callbacks, cfg, _numbers(30))
    heard = {c.one["MessageUUID"] for c in recorder.calls}
    lost = {uuid for uuid, _ in emitter.dropped}
    assert heard
    assert lost
    assert heard.isdisjoint(lost)  # a message loses all of its callbacks or none
    assert heard | lost == set(uuids)
    for uuid in heard:  # the whole lifecycle, up to the state the MDR is in
        statuses = [c["Status"] for c in recorder.of(uuid)]
        assert statuses[0] == "queued"
        assert statuses[-1] == sim.messages[uuid]["message_state"]
    assert all(sim.messages[u]["message_state"] != "queued" for u in uuids)


# --- Sent-final destinations ----------------------------------------------------------------


async def test_sent_final_messages_stay_sent(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, fail_rate=0, undelivered_rate=0, sent_final_rate=1.0, **QUIET)
    sim, _, uuids = await _run(callbacks, cfg, _numbers(5))
    for uuid in uuids:
        assert [c["Status"] for c in recorder.of(uuid)] == ["queued", "sent"]
        mdr = await _get(sim, uuid)
        assert (mdr["message_state"], mdr["error_code"]) == ("sent", None)
        assert mdr["message_sent_time"] is not None


async def test_sent_final_prefixes_pick_the_routes_without_receipts(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(
        speed=1000, fail_rate=0, undelivered_rate=0, sent_final_prefixes=("1555",), **QUIET
    )
    sim, _, uuids = await _run(callbacks, cfg, ["15555550101", "14155550101", "15555550102"])
    states = [(await _get(sim, uuid))["message_state"] for uuid in uuids]
    assert states == ["sent", "delivered", "sent"]
    assert [c["Status"] for c in recorder.of(uuids[1])] == ["queued", "sent", "delivered"]


# --- Per-part callbacks (§2.4) ----------------------------------------------------------------


async def test_per_part_callbacks_carry_parent_and_part_info(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(
        speed=1000, fail_rate=0, undelivered_rate=0, per_part_callbacks=True, **QUIET
    )
    sim, _, uuids = await _run(callbacks, cfg, ["14155550101"], text="x" * 400)  # 3 parts
    [parent] = uuids  # the send returns the first part's UUID only
    parts = {c.one["PartInfo"]: c.one["MessageUUID"] for c in recorder.calls}
    assert sorted(parts) == ["1 of 3", "2 of 3", "3 of 3"]
    assert parts["1 of 3"] == parent
    assert len(set(parts.values())) == 3
    assert {c.one["ParentMessageUUID"] for c in recorder.calls} == {parent}
    assert {c.one["Units"] for c in recorder.calls} == {"1"}
    for uuid in parts.values():
        assert [c["Status"] for c in recorder.of(uuid)] == ["queued", "sent", "delivered"]
        assert (await _get(sim, uuid))["message_state"] == "delivered"
    assert (sim.accepted, sim.by_destination) == (1, {"14155550101": 1})


async def test_one_dlr_with_units_by_default(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, fail_rate=0, undelivered_rate=0, **QUIET)
    sim, _, [uuid] = await _run(callbacks, cfg, ["14155550101"], text="x" * 400)
    assert len(recorder.calls) == 3
    for call in recorder.calls:
        fields = call.one
        assert fields["MessageUUID"] == fields["ParentMessageUUID"] == uuid
        assert (fields["PartInfo"], fields["Units"], fields["TotalAmount"]) == (
            "reserved",
            "3",
            "0.01500",
        )
    assert list(sim.messages) == [uuid]
    assert (await _get(sim, uuid))["units"] == 3


# --- Signature modes (§3.1) ------------------------------------------------------------------

SIGNATURE_HEADERS = {
    "both": {"x-plivo-signature-v2", "x-plivo-signature-v3"},
    "v2": {"x-plivo-signature-v2"},
    "v3": {"x-plivo-signature-v3"},
    "ma": {
        "x-plivo-signature-v2",
        "x-plivo-signature-v3",
        "x-plivo-signature-ma-v2",
        "x-plivo-signature-ma-v3",
    },
}


def _signature_headers(call: Call) -> set[str]:
    return {h for h in call.headers if h.startswith("x-plivo-signature") and "nonce" not in h}


def _verified(call: Call, account: list[str], main: list[str], drop: tuple[str, ...] = ()) -> str:
    headers = {k: v for k, v in call.headers.items() if k not in drop}
    form = None if call.method == "GET" else call.fields
    verdict = verify(call.method, call.url, headers, form, account, main)
    assert verdict.ok, verdict.scheme
    return verdict.scheme


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(
    ("mode", "scheme"), [("both", "v3"), ("v2", "v2"), ("v3", "v3"), ("ma", "v3")]
)
async def test_every_signature_mode_is_genuine(
    callbacks: httpx.AsyncClient, recorder: Recorder, mode: str, scheme: str, method: str
) -> None:
    cfg = ScenarioConfig(speed=1000, **QUIET)
    await _run(
        callbacks, cfg, _numbers(2), method=method, signature_mode=mode, main_token=MAIN_TOKEN
    )
    assert len(recorder.calls) >= 4
    for call in recorder.calls:
        assert call.method == method
        assert _signature_headers(call) == SIGNATURE_HEADERS[mode]
        assert _verified(call, [TOKEN], [MAIN_TOKEN]) == scheme
        assert not verify(call.method, call.url, call.headers, call.fields, ["wrong"], ["wrong"]).ok


async def test_ma_headers_are_signed_with_the_main_token(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, **QUIET)
    await _run(callbacks, cfg, _numbers(1), signature_mode="ma", main_token=MAIN_TOKEN)
    v3_family = ("x-plivo-signature-v3", "x-plivo-signature-ma-v3")
    for call in recorder.calls:
        assert _verified(call, ["wrong"], [MAIN_TOKEN]) == "ma-v3"
        assert _verified(call, ["wrong"], [MAIN_TOKEN], drop=v3_family) == "ma-v2"
        assert _verified(call, [TOKEN], ["wrong"], drop=v3_family) == "v2"


def test_bad_signature_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="signature_mode"):
        Emitter(TOKEN, ScenarioConfig(), signature_mode="v1", client=httpx.AsyncClient())
    with pytest.raises(ValueError, match="main_token"):
        Emitter(TOKEN, ScenarioConfig(), signature_mode="ma", client=httpx.AsyncClient())


# --- Get Message follows the lifecycle ---------------------------------------------------------


async def test_get_message_shows_the_latest_state_of_every_message(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, fail_rate=0.3, undelivered_rate=0.3, reorder_rate=0.5)
    sim, _, uuids = await _run(callbacks, cfg, _numbers(20))
    for uuid in uuids:
        final = [c for c in recorder.of(uuid) if c["Status"] not in ("queued", "sent")]
        mdr = await _get(sim, uuid)
        assert {c["Status"] for c in final} == {mdr["message_state"]}
        expected_code = final[0]["ErrorCode"] or "000"
        assert mdr["error_code"] == expected_code
        assert mdr["units"] == 1
        if mdr["message_state"] != "failed":
            assert mdr["message_sent_time"] is not None


async def test_without_a_callback_url_the_mdr_still_moves(
    callbacks: httpx.AsyncClient, recorder: Recorder
) -> None:
    cfg = ScenarioConfig(speed=1000, fail_rate=0, undelivered_rate=0, **QUIET)
    sim, emitter, [uuid] = await _run(callbacks, cfg, ["14155550101"], url=None)
    assert recorder.calls == []
    assert emitter.dropped == []
    assert (await _get(sim, uuid))["message_state"] == "delivered"


def test_the_seed_decides_which_messages_lose_their_callbacks() -> None:
    """Two emitters with the same seed make the same decisions (runs are reproducible)."""
    from plivo_tracker.simulator.scenario import plan_message

    cfg = ScenarioConfig(callback_drop_rate=0.5)
    first = [plan_message(cfg, random.Random(s)).callbacks_lost for s in range(50)]
    again = [plan_message(cfg, random.Random(s)).callbacks_lost for s in range(50)]
    assert first == again
    assert 0 < sum(first) < 50
