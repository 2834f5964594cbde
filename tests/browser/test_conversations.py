"""The conversations view (#/conversations) in Chromium against a real `serve` in simulator
mode: the list of threads, a thread's bubbles in order, a reply sent through POST /api/messages
going live to its final status, received messages arriving live through the page's one
WebSocket, media shown as links only, and the opt-out toggle.

Received messages are real: `plivo-tracker simulate` posts them, signed as Plivo signs, to the
server's /plivo/inbound (on demand, POST /_simulator/inbound), and the server streams them to the
page as `"type": "message"` frames like any change.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, WebSocketRoute, expect

from plivo_tracker.simulator.inbound import incoming_fields
from tests.browser.conftest import OUR_NUMBER as OURS
from tests.browser.conftest import Dashboard
from tests.conftest import new_uuid

pytestmark = pytest.mark.slow
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

ALICE, BOB, CAROL = "+14155550101", "+14155550102", "+14155550103"


def go_live(page: Page, timeout: float = 15_000) -> None:
    expect(page.locator("#connection")).to_have_attribute(
        "data-connection-state", "live", timeout=timeout
    )


def masked(number: str) -> str:
    return f"{number[:5]}•••{number[-4:]}"


def receive(dashboard: Dashboard, sender: str, text: str) -> int:
    """A message from `sender`, through the simulator and /plivo/inbound; its id."""
    return dashboard.inbound(sender, text)


def listed_numbers(page: Page) -> list[str]:
    return page.locator("#convo-list > li").evaluate_all("els => els.map((e) => e.dataset.number)")


def bubble_ids(page: Page) -> list[int]:
    return [
        int(i)
        for i in page.locator("#thread-messages > li").evaluate_all(
            "els => els.map((e) => e.dataset.messageId)"
        )
    ]


def test_threads_bubbles_a_live_reply_and_received_messages_live(dashboard: Dashboard) -> None:
    [hello] = dashboard.send(ALICE, text="Your table is ready")
    from_bob = receive(dashboard, BOB, "Do you deliver?")
    # Signed by hand: the simulator only sends http(s) media, Plivo's payload may hold anything.
    with_media = dashboard.inbound_signed(
        incoming_fields(
            new_uuid(),
            ALICE.lstrip("+"),
            OURS.lstrip("+"),
            "Here we are <b>now</b>",
            ["https://media.example.com/door.jpg", "javascript:alert(1)"],
        )
    )
    dashboard.wait_final([hello])

    page = dashboard.open("#/conversations")
    go_live(page)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Conversations")).to_have_attribute("aria-current", "page")
    items = page.locator("#convo-list > li")
    expect(items).to_have_count(2)
    assert listed_numbers(page) == [ALICE, BOB]  # the newest message first
    alice_item = page.locator(f'#convo-list > li[data-number="{ALICE}"]')
    expect(alice_item.locator(".convo-number")).to_have_text(masked(ALICE))
    expect(alice_item.locator(".convo-preview")).to_have_text("Here we are <b>now</b>")
    expect(alice_item).to_have_attribute("data-last-message-id", str(with_media))
    expect(page.locator(f'#convo-list > li[data-number="{BOB}"] .convo-preview')).to_have_text(
        "Do you deliver?"
    )
    expect(page.locator(f'#convo-list > li[data-number="{BOB}"]')).to_have_attribute(
        "data-last-message-id", str(from_bob)
    )

    # The thread: both directions, oldest first; our message with its final status.
    alice_item.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"#/conversations/%2B14155550101$"))
    expect(page.locator("#thread-number")).to_have_text(masked(ALICE))
    bubbles = page.locator("#thread-messages > li")
    expect(bubbles).to_have_count(2)
    assert bubble_ids(page) == [hello, with_media]
    ours = page.locator(f'#thread-messages > li[data-message-id="{hello}"]')
    theirs = page.locator(f'#thread-messages > li[data-message-id="{with_media}"]')
    expect(ours).to_have_attribute("data-direction", "outbound")
    final = dashboard.api("GET", f"/api/messages/{hello}")["status"]
    expect(ours.locator(".badge")).to_have_text(final)
    expect(theirs).to_have_attribute("data-direction", "inbound")
    expect(theirs.locator(".badge")).to_have_count(0)  # a received message has no delivery
    # Text is text: the markup in it is shown, never parsed.
    expect(theirs.locator(".bubble-text")).to_have_text("Here we are <b>now</b>")
    expect(theirs.locator("b")).to_have_count(0)
    # Media: an http(s) URL is a link that gives the other site nothing; anything else is text.
    media = theirs.locator(".bubble-media li")
    expect(media).to_have_count(2)
    link = media.nth(0).locator("a")
    expect(link).to_have_attribute("href", "https://media.example.com/door.jpg")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    expect(media.nth(1).locator("a")).to_have_count(0)
    expect(media.nth(1)).to_have_text("javascript:alert(1)")

    # A reply goes through the normal send API and its bubble follows it to its final status.
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/api/messages")
    ) as posted:
        page.get_by_label("Reply").fill("See you at 8")
        page.get_by_role("button", name="Send reply").click()
    body = json.loads(posted.value.post_data or "{}")
    assert body["to"] == [ALICE]
    assert body["text"] == "See you at 8"
    assert body["type"] == "sms"
    assert len(posted.value.headers.get("idempotency-key", "")) >= 16
    expect(bubbles).to_have_count(3)
    reply_id = bubble_ids(page)[-1]
    assert reply_id > with_media
    reply = page.locator(f'#thread-messages > li[data-message-id="{reply_id}"]')
    expect(reply.locator(".bubble-text")).to_have_text("See you at 8")
    expect(page.get_by_label("Reply")).to_have_value("")
    reply_final = dashboard.wait_final([reply_id])[reply_id]
    expect(reply).to_have_attribute("data-status", reply_final, timeout=15_000)
    expect(reply.locator(".badge")).to_have_text(reply_final)
    expect(alice_item).to_have_attribute("data-last-message-id", str(reply_id))

    # Received while the page is open: Bob's conversation moves to the top; a message from
    # Alice appears in her open thread, after the reply.
    sockets = len(dashboard.sockets)
    again = receive(dashboard, BOB, "Hello?")
    expect(page.locator("#convo-list > li").first).to_have_attribute(
        "data-number", BOB, timeout=15_000
    )
    expect(page.locator(f'#convo-list > li[data-number="{BOB}"]')).to_have_attribute(
        "data-last-message-id", str(again)
    )
    expect(bubbles).to_have_count(3)  # not Alice's
    late = receive(dashboard, ALICE, "Running late 🏃")
    expect(bubbles).to_have_count(4, timeout=15_000)
    assert bubble_ids(page) == [hello, with_media, reply_id, late]
    expect(bubbles.last).to_have_attribute("data-direction", "inbound")
    expect(bubbles.last.locator(".bubble-text")).to_have_text("Running late 🏃")
    assert listed_numbers(page) == [ALICE, BOB]
    # Over the page's one socket, as frames of the stream (no second socket, no polling).
    assert len(dashboard.sockets) == sockets
    streamed = {
        json.loads(p).get("message_id")
        for _, p in dashboard.frames_received
        if json.loads(p).get("type") in ("status", "message")
    }
    assert {again, late} <= streamed
    dashboard.screenshot(page, "conversations")
    assert dashboard.problems == []


@sqlite_only
def test_message_frames_add_received_messages_and_resume_with_since(
    dashboard: Dashboard,
) -> None:
    """`"type": "message"` frames (the shared contract's shape) from a stand-in socket
    (page.route_web_socket; the HTTP API is the real one): the message joins its thread live and
    bumps it to the top, its hostile text stays text, only its http(s) media are links, and a
    reconnection resumes with ?since= the message frame's id."""
    first = receive(dashboard, ALICE, "first")
    urls: list[str] = []
    sockets: list[WebSocketRoute] = []

    def stand_in(ws: WebSocketRoute) -> None:
        urls.append(ws.url)
        sockets.append(ws)
        ws.send(json.dumps({"type": "ready", "last_id": 40, "heartbeat_seconds": 15}))

    page = dashboard.new_page(viewport={"width": 1280, "height": 900})
    page.route_web_socket(re.compile(r"/ws(\?|$)"), stand_in)
    dashboard.open(f"#/conversations/{CAROL.replace('+', '%2B')}", page=page)
    go_live(page)
    expect(page.locator("#convo-list > li")).to_have_count(1)
    expect(page.locator("#thread-number")).to_have_text(masked(CAROL))
    expect(page.locator("#thread-messages > li")).to_have_count(0)
    frame = {
        "id": 41,
        "type": "message",
        "message_id": first + 100,
        "message_uuid": "5f0c1d2e-0000-4000-8000-000000000041",
        "direction": "inbound",
        "from": CAROL,
        "to": OURS,
        "text": '<img src=x onerror="document.title=1">hi',
        "media_urls": [
            "data:text/html,<script>alert(1)</script>",
            "http://media.example.com/a.png",
        ],
        "status": "received",
        "at": "2026-12-01T10:00:00Z",
    }
    sockets[0].send(json.dumps(frame))
    bubble = page.locator(f'#thread-messages > li[data-message-id="{first + 100}"]')
    expect(bubble).to_be_visible()
    expect(bubble).to_have_attribute("data-direction", "inbound")
    expect(bubble.locator(".bubble-text")).to_have_text(frame["text"])
    expect(bubble.locator("img")).to_have_count(0)
    links = bubble.locator(".bubble-media a")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "http://media.example.com/a.png")
    assert listed_numbers(page) == [CAROL, ALICE]

    sockets[0].close(code=1012, reason="restart")
    expect(page.locator("#connection")).to_have_attribute(
        "data-connection-state", "live", timeout=15_000
    )
    assert len(urls) == 2
    assert parse_qs(urlsplit(urls[1]).query).get("since") == ["41"]
    assert page.title() != "1"
    assert dashboard.problems == []


def _is_opt_out(request: Request, method: str) -> bool:
    return request.method == method and "/api/opt-outs/" in request.url


@sqlite_only
def test_the_opt_out_toggle_calls_the_opt_outs_api(dashboard: Dashboard) -> None:
    """The request the page makes (the contract's PUT /api/opt-outs/{number}); what the server
    answers is the next test's business."""
    receive(dashboard, ALICE, "hi")
    page = dashboard.open(f"#/conversations/{ALICE.replace('+', '%2B')}")
    go_live(page)
    expect(page.locator("#thread-messages > li")).to_have_count(1)
    page.on("dialog", lambda d: d.accept())
    button = page.locator("#thread-optout")
    expect(button).to_have_text("Opt out")
    with page.expect_request(lambda r: _is_opt_out(r, "PUT")) as put:
        button.click()
    assert urlsplit(put.value.url).path == "/api/opt-outs/%2B14155550101"
    assert put.value.headers.get("content-type") == "application/json"
    assert json.loads(put.value.post_data or "null") == {"note": "dashboard"}
    expect(page.locator("#thread-optout-result")).not_to_have_text("")
    assert dashboard.problems == []


def test_opting_out_and_back_in_from_a_thread(dashboard: Dashboard) -> None:
    receive(dashboard, ALICE, "hi")
    page = dashboard.open(f"#/conversations/{ALICE.replace('+', '%2B')}")
    go_live(page)
    page.on("dialog", lambda d: d.accept())
    state = page.locator("#thread-optout-state")
    expect(state).to_have_attribute("data-opted-out", "false")
    with page.expect_response(lambda r: _is_opt_out(r.request, "PUT")) as put:
        page.locator("#thread-optout").click()
    assert put.value.status == 200
    expect(state).to_have_attribute("data-opted-out", "true")
    expect(page.locator(f'#convo-list > li[data-number="{ALICE}"]')).to_have_attribute(
        "data-opted-out", "true"
    )
    listed = dashboard.api("GET", "/api/conversations")["conversations"]
    assert [(c["number"], c["opted_out"]) for c in listed] == [(ALICE, True)]

    # A reply to an opted-out number is refused per recipient, and the page says why.
    page.get_by_label("Reply").fill("Are you sure?")
    page.get_by_role("button", name="Send reply").click()
    refusal = page.locator('#reply-errors li[data-reason="opted_out"]')
    expect(refusal).to_have_count(1)
    expect(page.locator("#thread-messages > li")).to_have_count(1)

    with page.expect_response(lambda r: _is_opt_out(r.request, "DELETE")) as deleted:
        page.locator("#thread-optout").click()
    assert deleted.value.status in (200, 204)
    expect(state).to_have_attribute("data-opted-out", "false")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#thread-messages > li")).to_have_count(2)
    # The one refused reply above is the browser's only complaint (a failed resource, 422).
    assert [p for p in dashboard.problems if "status of 422" not in p] == []
    assert len(dashboard.problems) == 1


def test_a_received_stop_opts_the_open_thread_out_live_and_a_reply_is_refused(
    dashboard: Dashboard,
) -> None:
    """STOP arrives as Plivo delivers it (the simulator's signed post to /plivo/inbound): the
    open thread shows the number opted out as soon as the message's frame arrives (the page
    re-reads GET /api/conversations/{number}), and on a reload; a reply is refused with the
    422's `opted_out`; START, received the same way, opts it back in live."""
    receive(dashboard, ALICE, "hi")
    page = dashboard.open(f"#/conversations/{ALICE.replace('+', '%2B')}")
    go_live(page)
    bubbles = page.locator("#thread-messages > li")
    expect(bubbles).to_have_count(1)
    state = page.locator("#thread-optout-state")
    item = page.locator(f'#convo-list > li[data-number="{ALICE}"]')
    expect(state).to_have_attribute("data-opted-out", "false")
    expect(item).to_have_attribute("data-opted-out", "false")
    sockets = len(dashboard.sockets)

    stop = receive(dashboard, ALICE, " Stop ")  # keywords ignore case and spaces
    expect(bubbles).to_have_count(2, timeout=15_000)
    expect(bubbles.last).to_have_attribute("data-message-id", str(stop))
    expect(state).to_have_attribute("data-opted-out", "true")
    expect(state).to_have_text("opted out")
    expect(page.locator("#thread-optout")).to_have_text("Opt back in")
    expect(item).to_have_attribute("data-opted-out", "true")
    assert len(dashboard.sockets) == sockets  # live, not a reconnection's reload
    recorded = dashboard.api("GET", f"/api/opt-outs/{ALICE.replace('+', '%2B')}")
    assert recorded["opted_out"] is True
    assert recorded["message_id"] == stop

    # A reply goes to POST /api/messages like any send, and is refused for this number.
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/api/messages")
    ) as answered:
        page.get_by_label("Reply").fill("Sorry to see you go")
        page.get_by_role("button", name="Send reply").click()
    assert answered.value.status == 422
    body = answered.value.json()
    assert "opted_out" in json.dumps(body["error"])
    assert "14155550101" in json.dumps(body["error"])
    refusal = page.locator('#reply-errors li[data-reason="opted_out"]')
    expect(refusal).to_have_count(1)
    expect(refusal.locator("strong")).to_have_text(masked(ALICE))
    expect(bubbles).to_have_count(2)
    dashboard.screenshot(page, "conversation-opted-out")

    # A reload reads the same state.
    page.reload()
    go_live(page)
    expect(bubbles).to_have_count(2)
    expect(state).to_have_attribute("data-opted-out", "true")

    start = receive(dashboard, ALICE, "START")
    expect(bubbles).to_have_count(3, timeout=15_000)
    expect(bubbles.last).to_have_attribute("data-message-id", str(start))
    expect(state).to_have_attribute("data-opted-out", "false")
    expect(item).to_have_attribute("data-opted-out", "false")
    # The refused reply above is the browser's only complaint (a failed resource, 422).
    assert [p for p in dashboard.problems if "status of 422" not in p] == []
    assert len(dashboard.problems) == 1
