"""The dashboard's side of at-most-once sending, in a real browser against a real server: the
"sending is paused" banner (GET/POST /api/dispatch), the `unknown` status, a message's send
attempts, and the operator's adopt/resend panel for a message whose outcome is unknown.

Screenshots land in test-artifacts/screenshots/ (banner, phone banner, attempts, resolve panel).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Dashboard
from tests.browser.test_dashboard import go_live, sqlite_only
from tests.conftest import new_uuid

pytestmark = pytest.mark.slow

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def is_path(path: str) -> Any:
    """A page.route matcher for exactly this path (whatever the query)."""
    return lambda url: urlsplit(url).path == path


def horizontal_overflow(page: Page) -> int:
    return int(
        page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


@sqlite_only
def test_an_operator_pause_shows_a_banner_on_every_view_until_resumed(
    dashboard: Dashboard,
) -> None:
    page = dashboard.new_page(viewport={"width": 1280, "height": 900})
    # Page time moves on its own, and the test moves it 10 s at once to make the poll happen.
    page.clock.install()
    dashboard.open(page=page)
    go_live(page)
    region = page.locator("#dispatch")
    banner = page.locator("#dispatch-banner")
    expect(region).to_have_attribute("role", "status")
    expect(region).to_have_attribute("data-dispatch", "running")
    expect(banner).to_have_count(0)

    # Markup in the reason is text, never HTML.
    reason = "<b>carrier</b> maintenance & number checks"
    paused = dashboard.api("POST", "/api/dispatch/pause", json={"reason": reason})
    assert paused["paused"] is True
    assert paused["paused_by"] == "operator"
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/dispatch") as polled:
        page.clock.run_for(10_000)  # one poll
    assert polled.value.ok
    expect(banner).to_be_visible()
    expect(region).to_have_attribute("data-dispatch", "paused")
    expect(banner.get_by_role("heading", name="Sending is paused")).to_be_visible()
    expect(banner.locator(".dispatch-who")).to_have_text("Sending paused by an operator.")
    expect(banner.locator("#dispatch-reason")).to_have_text(reason)
    expect(banner.locator("b")).to_have_count(0)
    since = banner.locator(".dispatch-since time")
    expect(since).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    expect(since).to_have_text(re.compile(r"(just now|\d+ s ago)$"))
    dashboard.screenshot(page, "dispatch-banner")

    # Above every view, not only the live one.
    for route, ready in [("#/stats", "#view-stats"), ("#/nowhere", "#view-missing")]:
        page.goto(f"{dashboard.base}/{route}")
        expect(page.locator(ready)).to_be_visible()
        expect(banner).to_be_visible()
        expect(banner.locator("#dispatch-reason")).to_have_text(reason)
    page.goto(f"{dashboard.base}/#/")
    go_live(page)

    # The button shows its keyboard focus; Enter resumes, the banner goes, focus stays on the page.
    resume = banner.get_by_role("button", name="Resume sending")
    resume.focus()
    assert resume.evaluate(
        "(e) => e.matches(':focus-visible') && getComputedStyle(e).outlineStyle !== 'none'"
    )
    with page.expect_request(
        lambda r: r.method == "POST" and urlsplit(r.url).path == "/api/dispatch/resume"
    ) as posted:
        page.keyboard.press("Enter")
    assert (posted.value.headers.get("content-type") or "").startswith("application/json")
    expect(banner).to_have_count(0)
    expect(region).to_have_attribute("data-dispatch", "running")
    expect(region).to_contain_text("Sending resumed.")
    expect(page.locator("#main")).to_be_focused()
    assert dashboard.api("GET", "/api/dispatch")["paused"] is False

    # The next poll keeps it hidden.
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/dispatch"):
        page.clock.run_for(10_000)
    expect(banner).to_have_count(0)
    assert dashboard.problems == []


@sqlite_only
def test_a_pause_is_shown_on_load_and_after_the_page_reconnects(dashboard: Dashboard) -> None:
    dashboard.api("POST", "/api/dispatch/pause", json={"reason": "before the page opened"})
    # Page time stands still unless the test moves it: no poll can happen behind its back.
    page = dashboard.new_page(viewport={"width": 1280, "height": 900})
    start = datetime.now(UTC)
    page.clock.install(time=start)
    page.clock.pause_at(start + timedelta(seconds=1))
    dashboard.open(page=page)
    go_live(page)
    banner = page.locator("#dispatch-banner")
    expect(banner.locator("#dispatch-reason")).to_have_text("before the page opened")

    # Resumed and paused again elsewhere: the page asks again as soon as its socket reconnects,
    # without waiting for the next poll.
    dashboard.api("POST", "/api/dispatch/resume", json={})
    dashboard.api("POST", "/api/dispatch/pause", json={"reason": "paused again elsewhere"})
    port = dashboard.server.port
    dashboard.server.stop(graceful=True)
    expect(page.locator("#connection")).not_to_have_attribute("data-connection-state", "live")
    dashboard.server = dashboard.start_server("restarted", port=port)
    page.clock.run_for(1_000)  # the first retry comes within 0.5 s
    go_live(page)
    expect(banner.locator("#dispatch-reason")).to_have_text("paused again elsewhere")


@sqlite_only
def test_an_automatic_pause_says_it_is_retried_and_when(dashboard: Dashboard) -> None:
    """Plivo refusing the account (401/404 from the Message API) cannot happen to the simulator
    inside `serve`: only GET /api/dispatch is stubbed, with the server's own shape."""
    since = datetime.now(UTC) - timedelta(minutes=3)
    probe = datetime.now(UTC) + timedelta(seconds=40)
    state = {
        "paused": True,
        "paused_by": "auto",
        "reason": "Plivo answered 401: Authentication credentials invalid",
        "since": since.isoformat(),
        "next_probe_at": probe.isoformat(),
        "probes": 2,
    }
    page = dashboard.new_page(viewport={"width": 1280, "height": 900})

    def stub(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json=state)
        else:
            route.fallback()

    dispatch_url = is_path("/api/dispatch")
    page.route(dispatch_url, stub)
    dashboard.open(page=page)
    go_live(page)
    banner = page.locator("#dispatch-banner")
    who = banner.locator(".dispatch-who")
    expect(who).to_have_attribute("data-paused-by", "auto")
    expect(who).to_contain_text(
        "Plivo refused the account or address — sending is paused and retried automatically; "
        "next check at "
    )
    expect(who).to_contain_text("(2 checks so far)")
    probe_time = who.locator("time")
    expect(probe_time).to_have_attribute("datetime", re.compile(probe.strftime(r"^%Y-%m-%dT%H:%M")))
    expect(banner.locator("#dispatch-reason")).to_have_text(state["reason"])
    expect(banner.locator(".dispatch-since time")).to_have_text("3 min ago")

    # Resuming goes to the real server (nothing is paused there): the banner goes.
    page.unroute(dispatch_url, stub)
    banner.get_by_role("button", name="Resume sending").click()
    expect(banner).to_have_count(0)
    assert dashboard.problems == []


@sqlite_only
def test_the_pause_banner_fits_a_phone_screen(dashboard: Dashboard) -> None:
    reason = "Carrier maintenance " + "x" * 90 + " until further notice, see ticket OPS-4711"
    dashboard.api("POST", "/api/dispatch/pause", json={"reason": reason})
    [message_id] = dashboard.send("+14155550101")
    page = dashboard.new_page(**PHONE)
    banner = page.locator("#dispatch-banner")
    for route, name, ready in [
        ("#/", "phone-dispatch-live", "#messages-body tr"),
        (f"#/messages/{message_id}", "phone-dispatch-detail", "#attempts, #detail-settled"),
        ("#/stats", "phone-dispatch-stats", 'svg[data-chart="latency"]'),
    ]:
        dashboard.open(route, page=page)
        go_live(page)
        expect(page.locator(ready).first).to_be_visible()
        expect(banner.locator("#dispatch-reason")).to_have_text(reason)
        button = banner.get_by_role("button", name="Resume sending")
        expect(button).to_be_visible()
        overflow = horizontal_overflow(page)
        assert overflow <= 0, f"{name}: {overflow}px of horizontal scrolling"
        box = banner.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 390
        button_box = button.bounding_box()
        assert button_box is not None
        assert button_box["x"] + button_box["width"] <= 390
        dashboard.screenshot(page, name)
    # Nothing was sent while paused: the message still waits in the outbox.
    assert dashboard.api("GET", f"/api/messages/{message_id}")["status"] == "accepted"
    assert dashboard.problems == []


def test_the_detail_view_lists_send_attempts_and_the_settled_state(
    dashboard: Dashboard,
) -> None:
    page = dashboard.open()
    go_live(page)
    [message_id] = dashboard.send("+14155550101")
    dashboard.wait_dispatched()
    final = dashboard.wait_final([message_id])[message_id]
    message = dashboard.api("GET", f"/api/messages/{message_id}")
    attempts = message["attempts"]
    assert attempts
    assert attempts[0]["outcome"] == "accepted"
    assert attempts[0]["api_id"]
    assert message["settled"] is True
    assert message["settled_reason"] == "final"

    page.goto(f"{dashboard.base}/#/messages/{message_id}")
    detail = page.locator("#detail-content")
    expect(detail).to_have_attribute("data-status", final)
    section = page.get_by_role("region", name=re.compile(r"^Send attempts"))
    expect(section.get_by_role("heading", level=2)).to_have_text(f"Send attempts ({len(attempts)})")
    items = page.locator("#attempts > li")
    expect(items).to_have_count(len(attempts))
    assert items.evaluate_all("els => els.map((e) => e.dataset.outcome)") == [
        a["outcome"] for a in attempts
    ]
    first = items.first
    expect(first).to_have_attribute("data-outcome", "accepted")
    expect(first.locator(".chip-outcome")).to_have_text("accepted")
    expect(first.locator(".attempt-http")).to_have_text(f"HTTP {attempts[0]['http_status']}")
    api_id = first.locator(".attempt-api-id")
    expect(api_id).to_have_text(attempts[0]["api_id"])
    expect(api_id).to_have_attribute("title", re.compile("quote this to Plivo support"))
    assert api_id.evaluate("(e) => getComputedStyle(e).fontFamily").lower().find("mono") >= 0
    expect(first).to_contain_text("Started")
    expect(first).to_contain_text("Finished")

    # Only elements at the top of the view (no stray text such as "null" for a missing part).
    assert detail.evaluate("(e) => [...e.childNodes].filter((n) => n.nodeType === 3).length") == 0
    settled = page.locator("#detail-settled")
    expect(settled).to_have_text("settled")
    expect(settled).to_have_attribute("data-settled", "true")
    expect(page.locator("#detail-error-detail")).to_have_count(0)
    dashboard.screenshot(page, "detail-attempts")
    assert dashboard.problems == []


@sqlite_only
def test_the_status_filter_offers_unknown_with_its_own_badge(dashboard: Dashboard) -> None:
    page = dashboard.open()
    go_live(page)
    status = page.get_by_label("Status")
    options = status.locator("option").evaluate_all("els => els.map((e) => e.value)")
    assert "unknown" in options
    with page.expect_response(lambda r: "status=unknown" in r.url) as listed:
        status.select_option("unknown")
    assert listed.value.status == 200
    expect(page.locator("#messages")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator("#list-error")).to_be_hidden()
    expect(page.locator("#messages-body tr")).to_have_count(0)

    # The badge: its own class and colours, the word itself, a "?" mark and an explanation.
    look = page.evaluate(
        """async () => {
            const { badge } = await import('/static/format.js');
            const looks = {};
            for (const s of ['unknown', 'undelivered', 'accepted', 'no-such-status']) {
              const b = badge(s);
              document.body.append(b);
              const style = getComputedStyle(b);
              looks[s] = { cls: b.className, text: b.textContent, title: b.title,
                           bg: style.backgroundColor,
                           mark: getComputedStyle(b, '::before').content };
              b.remove();
            }
            return looks;
        }"""
    )
    assert look["unknown"]["cls"] == "badge badge-unknown"
    assert look["unknown"]["text"] == "unknown"
    assert look["unknown"]["mark"] == '"?"'
    assert "adopt" in look["unknown"]["title"]
    assert look["unknown"]["bg"] not in {look["undelivered"]["bg"], look["accepted"]["bg"]}
    assert look["no-such-status"]["cls"] == "badge badge-other"
    assert dashboard.problems == []


@sqlite_only
def test_an_unknown_message_can_be_adopted_or_sent_again_with_a_confirmation(
    dashboard: Dashboard,
) -> None:
    """A real `unknown` needs Plivo faults that `serve`'s in-process simulator cannot be told to
    make: the message's GET is stubbed as unknown (with the server's own shape), the resolve
    POSTs go to the real server (which refuses: the message is not unknown there) until the
    last one, stubbed as accepted; the reload after it reads the real message."""
    [message_id] = dashboard.send("+14155550101")
    dashboard.wait_dispatched()
    real_status = dashboard.wait_final([message_id])[message_id]
    real = dashboard.api("GET", f"/api/messages/{message_id}")
    started = datetime.now(UTC) - timedelta(minutes=2)
    detail_text = "lookups found nothing after a 500 answer; Plivo may have the message"
    unknown = {
        **real,
        "status": "unknown",
        "message_uuid": None,
        "settled": False,
        "settled_reason": None,
        "error_detail": detail_text,
        "sent_at": None,
        "delivered_at": None,
        "units": None,
        "total_rate": None,
        "total_amount": None,
        "mcc": None,
        "mnc": None,
        "events": [e for e in real["events"] if e["source"] != "callback"],
        "parts": [],
        "attempts": [
            {
                "attempt": 1,
                "started_at": started.isoformat(),
                "finished_at": (started + timedelta(seconds=10)).isoformat(),
                "outcome": "ambiguous",
                "http_status": 500,
                "detail": "internal server error",
                "api_id": "0c8b6f86-5f3c-11ef-8d0e-0242ac110004",
            },
            {
                "attempt": 1,
                "started_at": (started + timedelta(seconds=11)).isoformat(),
                "finished_at": (started + timedelta(seconds=12)).isoformat(),
                "outcome": "undecided",
                "http_status": None,
                "detail": "3 lookups could not decide",
                "api_id": None,
            },
        ],
    }
    path = f"/api/messages/{message_id}"

    def stub_get(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json=unknown)
        else:
            route.fallback()

    page = dashboard.new_page(viewport={"width": 1280, "height": 900})
    message_url = is_path(path)
    page.route(message_url, stub_get)
    dashboard.open(f"#/messages/{message_id}", page=page)
    go_live(page)
    detail = page.locator("#detail-content")
    expect(detail).to_have_attribute("data-status", "unknown")
    expect(detail.locator(".detail-head .badge")).to_have_text("unknown")
    expect(detail.locator(".detail-head .badge")).to_have_class(re.compile(r"\bbadge-unknown\b"))
    expect(page.locator("#detail-error-detail")).to_have_text(detail_text)
    expect(page.locator("#detail-settled")).to_have_text("waiting")
    expect(page.locator("#attempts > li")).to_have_count(2)
    expect(page.locator('#attempts > li[data-outcome="ambiguous"] .attempt-http')).to_have_text(
        "HTTP 500"
    )
    panel = page.get_by_role("region", name="Resolve this send")
    expect(panel).to_be_visible()
    posts: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            posts.append(json.loads(r.post_data or "null"))
            if r.method == "POST" and urlsplit(r.url).path == f"{path}/resolve"
            else None
        ),
    )

    # Adopt with nothing typed: said on the page, nothing posted.
    uuid_input = panel.get_by_label("Plivo MessageUUID")
    adopt = panel.get_by_role("button", name="Adopt this UUID")
    adopt.click()
    error = page.locator("#resolve-error")
    expect(error).to_have_text("Enter the MessageUUID Plivo gave this message.")
    expect(uuid_input).to_have_attribute("aria-invalid", "true")
    expect(uuid_input).to_be_focused()
    assert posts == []

    # Adopt a UUID: the real server answers 409 (not unknown there), and its message is shown.
    uuid = new_uuid()
    uuid_input.fill(uuid)
    with page.expect_response(lambda r: urlsplit(r.url).path == f"{path}/resolve") as answered:
        adopt.click()
    assert answered.value.status == 409
    api_error = answered.value.json()["error"]
    expect(error).to_have_text(api_error["message"])
    expect(error).to_have_attribute("role", "alert")
    assert posts == [{"action": "adopt", "message_uuid": uuid}]
    expect(uuid_input).to_have_value(uuid)  # kept for another try
    dashboard.screenshot(page, "detail-unknown")

    # Send again asks first; Cancel posts nothing.
    again = panel.get_by_role("button", name="Send again")
    again.click()
    confirm = panel.get_by_role("group", name=re.compile("Send this message again"))
    expect(confirm).to_contain_text("gets the SMS twice")
    expect(again).to_have_attribute("aria-expanded", "true")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_have_count(0)
    expect(again).to_be_focused()
    assert len(posts) == 1

    # Confirmed: the resend is accepted (stubbed), and the message is read again (for real).
    def accept(route: Route) -> None:
        route.fulfill(json={"id": message_id, "resolved": "resend"})

    page.route(is_path(f"{path}/resolve"), accept)
    again.click()
    page.unroute(message_url, stub_get)
    with page.expect_response(lambda r: urlsplit(r.url).path == path) as reloaded:
        panel.get_by_role("button", name="Yes, send it again").click()
    assert reloaded.value.ok
    assert posts[-1] == {"action": "resend"}
    expect(detail).to_have_attribute("data-status", real_status)
    expect(panel).to_have_count(0)
    expect(page.locator("#detail-notice")).to_have_text("Queued to send again.")
    expect(page.get_by_role("heading", level=1)).to_be_focused()

    # Only the expected 409 reached the console (the browser logs every failed load).
    [logged] = dashboard.problems
    assert "status of 409" in logged
    assert f"{path}/resolve" in logged
