"""The dashboard at / in a real browser against a real server: live table, send form, detail,
stats, the connection's resume after a drop, API keys, and a phone-sized screen.

Screenshots land in test-artifacts/screenshots/ (live table, detail, stats, phone).
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.browser.conftest import Dashboard
from tests.conftest import new_uuid

pytestmark = pytest.mark.slow

API_KEY = "browser-test-key-0123456789abcdefghij"
# Tests of the page alone run on SQLite only; those that read lists, stats or replays from the
# database run on both (the `db_url` fixture).
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def go_live(page: Page, timeout: float = 15_000) -> None:
    expect(page.locator("#connection")).to_have_attribute(
        "data-connection-state", "live", timeout=timeout
    )


def masked(number: str) -> str:
    return f"{number[:5]}•••{number[-4:]}"


@sqlite_only
def test_dashboard_loads_goes_live_without_console_errors(dashboard: Dashboard) -> None:
    page = dashboard.open()
    indicator = page.locator("#connection")
    go_live(page)
    expect(indicator).to_have_attribute("role", "status")
    expect(indicator).to_have_attribute("aria-live", "polite")
    expect(indicator).to_have_text(re.compile(r"^\s*live"))
    expect(page.locator("#messages-empty")).to_be_visible()
    expect(page).to_have_title(re.compile("plivo-tracker"))

    # Landmarks, and a label for every form control.
    expect(page.get_by_role("banner")).to_be_visible()
    expect(page.get_by_role("main")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Live")).to_have_attribute("aria-current", "page")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label'))
            .map((e) => e.id || e.name)"""
    )
    assert unlabelled == []

    # Header navigation: Stats and back.
    nav.get_by_role("link", name="Stats").click()
    expect(page.locator("#view-stats")).to_be_visible()
    expect(page.locator("#view-live")).to_be_hidden()
    expect(page.locator('svg[data-chart="delivery-rate"]')).to_be_visible()
    expect(nav.get_by_role("link", name="Stats")).to_have_attribute("aria-current", "page")
    nav.get_by_role("link", name="Live").click()
    expect(page.locator("#view-live")).to_be_visible()
    go_live(page)

    # Nothing but this server was contacted; nothing was logged.
    origin = dashboard.base
    ws_origin = origin.replace("http://", "ws://", 1)
    assert dashboard.request_urls
    assert [u for u in dashboard.request_urls if not u.startswith(origin + "/")] == []
    assert dashboard.sockets
    assert [ws.url for ws in dashboard.sockets if not ws.url.startswith(ws_origin + "/ws")] == []
    assert dashboard.problems == []


def test_send_through_the_form_rows_reach_their_final_status(dashboard: Dashboard) -> None:
    page = dashboard.open()
    go_live(page)
    numbers = ["+14155550101", "+14155550102", "+14155550103"]
    page.get_by_label("Recipients").fill("+14155550101, +14155550102\n+14155550103")
    page.get_by_label("Text", exact=True).fill("Your code is 482193")
    expect(page.locator("#text-info")).to_have_text(re.compile(r"^19 characters · 1 segment"))
    expect(page.locator("#text-info")).to_have_attribute("data-encoding", "GSM-7")

    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/api/messages")
    ) as posted:
        page.get_by_role("button", name="Send").click()
    key = posted.value.headers.get("idempotency-key", "")
    assert len(key) >= 16
    body = json.loads(posted.value.post_data or "{}")
    assert body["to"] == numbers
    assert body["type"] == "sms"

    created = page.locator("#send-result a[data-created-id]")
    expect(created).to_have_count(3)
    ids = [int(i) for i in created.evaluate_all("els => els.map((e) => e.dataset.createdId)")]
    for message_id, number in zip(ids, numbers, strict=True):
        tr = page.locator(f'#messages-body tr[data-message-id="{message_id}"]')
        expect(tr).to_be_visible()
        expect(tr.locator(".cell-to")).to_have_text(masked(number))
        expect(tr.locator(".cell-text")).to_have_text("Your code is 482193")
        expect(tr.locator("time").first).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    # Newest first. (A callback that beats the send's answer may add a placeholder row for a
    # moment, until the send adopts it: only the order of our three rows is checked.)
    shown = page.locator("#messages-body tr").evaluate_all(
        "els => els.map((e) => Number(e.dataset.messageId))"
    )
    assert [i for i in shown if i in ids] == sorted(ids, reverse=True)

    finals = dashboard.wait_final(ids)
    for message_id, status in finals.items():
        tr = page.locator(f'#messages-body tr[data-message-id="{message_id}"]')
        expect(tr).to_have_attribute("data-status", status, timeout=15_000)
        expect(tr.locator(".badge")).to_have_text(status)
    dashboard.screenshot(page, "live-table")
    assert dashboard.problems == []


def test_a_received_message_joins_the_table_live_with_its_direction(
    dashboard: Dashboard,
) -> None:
    """A real inbound message (the simulator's signed post to /plivo/inbound) reaches the open
    table as a `"type": "message"` frame: its row appears without a reload, marked inbound,
    naming its sender, its text shown as text."""
    [ours] = dashboard.send("+14155550101", text="Your table is ready")
    page = dashboard.open()
    go_live(page)
    ours_row = page.locator(f'#messages-body tr[data-message-id="{ours}"]')
    expect(ours_row).to_have_attribute("data-direction", "outbound")
    expect(ours_row.locator(".cell-to")).to_have_text(masked("+14155550101"))
    lists = [u for u in dashboard.request_urls if "/api/messages?" in u and "ids=" not in u]
    sockets = len(dashboard.sockets)

    text = 'On my way <img src=x onerror="document.title=1"> 🚗'
    theirs = dashboard.inbound("+14155550102", text)
    row = page.locator(f'#messages-body tr[data-message-id="{theirs}"]')
    expect(row).to_be_visible(timeout=15_000)
    expect(row).to_have_attribute("data-direction", "inbound")
    expect(row).to_have_attribute("data-status", "received")
    expect(row.locator(".badge")).to_have_text("received")
    expect(row.locator(".cell-to")).to_have_text(f"from {masked('+14155550102')}")
    expect(row.locator(".cell-text")).to_have_text(text)
    expect(row.locator("img")).to_have_count(0)
    expect(row.locator(".cell-type")).to_have_text("SMS")
    shown = page.locator("#messages-body tr").evaluate_all(
        "els => els.map((e) => Number(e.dataset.messageId))"
    )
    assert shown.index(theirs) < shown.index(ours)  # newest first

    # It came as a message frame over the page's one socket (the table fetched it by id), not
    # through a reload of the list.
    frames = [json.loads(p) for _, p in dashboard.frames_received]
    [frame] = [f for f in frames if f.get("message_id") == theirs]
    assert frame["type"] == "message"
    assert frame["direction"] == "inbound"
    assert len(dashboard.sockets) == sockets
    assert [u for u in dashboard.request_urls if "/api/messages?" in u and "ids=" not in u] == lists
    assert page.title() != "1"
    dashboard.screenshot(page, "live-table-inbound")
    assert dashboard.problems == []


@sqlite_only
def test_invalid_number_is_flagged_as_you_type_and_not_sent(dashboard: Dashboard) -> None:
    page = dashboard.open()
    go_live(page)
    posts: list[str] = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.url) if r.method == "POST" and r.url.endswith("/api/messages") else None
        ),
    )
    page.get_by_label("Text", exact=True).fill("hello")
    recipients = page.get_by_label("Recipients")
    recipients.press_sequentially("+14155550101, +1415555", delay=20)

    errors = page.locator("#to-errors li")
    expect(errors).to_have_count(1)
    expect(errors).to_contain_text("+1415555")
    expect(errors).to_contain_text("invalid number")
    expect(recipients).to_have_attribute("aria-invalid", "true")
    expect(recipients).to_have_attribute("aria-describedby", re.compile(r"\bto-errors\b"))

    page.get_by_role("button", name="Send").click()
    expect(page.locator("#send-result")).to_have_text(re.compile("^Not sent"))
    expect(recipients).to_be_focused()
    assert posts == []
    assert dashboard.api("GET", "/api/messages")["messages"] == []

    # Fixing the number clears the error.
    recipients.fill("+14155550101")
    expect(errors).to_have_count(0)
    expect(recipients).not_to_have_attribute("aria-invalid", "true")
    assert dashboard.problems == []


def test_detail_view_shows_the_timeline_and_raw_callbacks_live(dashboard: Dashboard) -> None:
    page = dashboard.open()
    go_live(page)
    [message_id] = dashboard.send("+14155550101")
    # The row arrives by the WebSocket (an unknown id is fetched); open it from the table.
    page.locator(f'#messages-body tr[data-message-id="{message_id}"] a').click()
    expect(page).to_have_url(re.compile(rf"#/messages/{message_id}$"))
    expect(page.get_by_role("heading", level=1, name=f"Message #{message_id}")).to_be_visible()

    # Left open, the view follows the message to its final status by itself.
    final = dashboard.wait_final([message_id])[message_id]
    detail = page.locator("#detail-content")
    expect(detail).to_have_attribute("data-status", final, timeout=15_000)
    expect(detail.locator(".detail-head .badge")).to_have_text(final)

    message = dashboard.api("GET", f"/api/messages/{message_id}")
    events = message["events"]
    final_event = [e for e in events if e["status"] == final and e["effect"] != "same"][0]
    items = page.locator("#timeline > li")
    expect(page.locator(f'#timeline > li[data-event-id="{final_event["id"]}"]')).to_have_count(1)
    shown = [int(i) for i in items.evaluate_all("els => els.map((e) => e.dataset.eventId)")]
    assert shown == sorted(shown)  # oldest first
    assert set(shown) <= {e["id"] for e in events}
    expect(items.first.locator(".badge")).to_have_text(events[0]["status"])

    callback = next(e for e in events if e["source"] == "callback")
    item = page.locator(f'#timeline > li[data-event-id="{callback["id"]}"]')
    expect(item.locator(".event-head .badge")).to_have_text(callback["status"])
    raw = item.locator("details.raw").first
    expect(raw.locator("pre")).to_be_hidden()
    raw.locator("summary").click()
    expect(raw.locator("pre")).to_be_visible()
    expect(raw.locator("pre")).to_contain_text(callback["raw"]["MessageUUID"])
    assert json.loads(raw.locator("pre").inner_text()) == callback["raw"]
    dashboard.screenshot(page, "detail")

    page.get_by_role("link", name="Back to live messages").click()
    expect(page.locator("#view-live")).to_be_visible()
    assert dashboard.problems == []


def test_a_dropped_connection_resumes_with_since_and_shows_what_was_missed(
    dashboard: Dashboard,
) -> None:
    page = dashboard.open()
    go_live(page)
    [first] = dashboard.send("+14155550101")
    first_final = dashboard.wait_final([first])[first]
    expect(page.locator(f'#messages-body tr[data-message-id="{first}"]')).to_have_attribute(
        "data-status", first_final, timeout=15_000
    )
    sockets_before = len(dashboard.sockets)

    # The server goes away: its WebSocket closes, the page keeps trying.
    port = dashboard.server.port
    dashboard.server.stop(graceful=True)
    expect(page.locator("#connection")).to_have_attribute(
        "data-connection-state", "reconnecting", timeout=10_000
    )

    # Meanwhile another server process on the same database takes a message to its end.
    other = dashboard.start_server("other")
    [missed] = dashboard.send("+14155550102", text="sent while you were away", base=other.base)
    missed_final = dashboard.wait_final([missed], base=other.base)[missed]
    other.stop(graceful=True)
    expect(page.locator(f'#messages-body tr[data-message-id="{missed}"]')).to_have_count(0)

    # The server comes back on its port: the page resumes where it stopped.
    dashboard.server = dashboard.start_server("restarted", port=port)
    go_live(page, timeout=30_000)
    tr = page.locator(f'#messages-body tr[data-message-id="{missed}"]')
    expect(tr).to_have_attribute("data-status", missed_final, timeout=15_000)
    expect(tr.locator(".cell-text")).to_have_text("sent while you were away")

    # It resumed with ?since=<the last event id it had>, and got the missed change replayed.
    resumed = [ws.url for ws in dashboard.sockets[sockets_before:]]
    since = [parse_qs(urlsplit(u).query).get("since", [""])[0] for u in resumed]
    assert since, resumed
    assert all(s.isdigit() for s in since), resumed
    frames = [json.loads(p) for url, p in dashboard.frames_received if url in resumed]
    replayed = [f for f in frames if f.get("type") == "status" and f["message_id"] == missed]
    assert replayed
    assert replayed[-1]["status"] == missed_final
    assert all(f["id"] > int(since[-1]) for f in replayed)


def test_stats_page_draws_the_numbers_of_the_api(dashboard: Dashboard) -> None:
    ids = dashboard.send("+14155550101", "+14155550102", "+14155550103")
    dashboard.wait_final(ids)
    page = dashboard.open("#/stats")
    go_live(page)
    expect(page.locator('[data-stat="total"]')).to_have_text("3")
    stats = dashboard.api("GET", "/api/stats?window=24h")
    assert stats["total"] == 3
    by_status = stats["by_status"]
    expect(page.locator('[data-stat="delivered"]')).to_have_text(str(by_status["delivered"]))
    rate = stats["delivery_rate"]
    expect(page.locator('[data-stat="delivery_rate"]')).to_have_text(f"{rate * 100:.1f}%")

    # By status: one segment per status present.
    segments = page.locator('svg[data-chart="status"] rect.seg')
    expect(segments).to_have_count(sum(1 for n in by_status.values() if n))
    # Delivery rate over time: a volume bar per non-empty point, a dot per rated point.
    points = stats["series"]["points"]
    chart = page.locator('svg[data-chart="delivery-rate"]')
    bars = chart.locator(".chart-volume rect")
    expect(bars).to_have_count(sum(1 for p in points if p["total"]))
    totals = bars.evaluate_all("els => els.map((e) => Number(e.dataset.total))")
    assert sum(totals) == stats["total"]
    expect(chart.locator(".chart-dots circle")).to_have_count(
        sum(1 for p in points if p["delivery_rate"] is not None)
    )
    # Latency: p50/p90/p99 of both measures, with the API's values.
    latency = page.locator('svg[data-chart="latency"]')
    expect(latency.locator("rect.chart-bar")).to_have_count(6)
    for measure in ("time_to_sent", "time_to_delivered"):
        for p in ("p50", "p90", "p99"):
            value = stats["latency"][measure][p]
            bar = latency.locator(f'rect[data-metric="{measure}.{p}"]')
            if value is None:
                expect(bar).to_have_attribute("data-value", "")
            else:
                assert float(bar.get_attribute("data-value") or "nan") == pytest.approx(value)
    # Error codes (with meanings) and carriers.
    errors = stats["errors"]
    if errors:
        expect(page.locator("#error-codes li")).to_have_count(len(errors))
        for error in errors:
            item = page.locator(f'#error-codes li[data-code="{error["code"]}"]')
            expect(item).to_contain_text(error["meaning"] or "unknown code")
    else:
        expect(page.get_by_text("No errors in this window.")).to_be_visible()
    expect(page.locator("#carriers tbody tr")).to_have_count(len(stats["carriers"]))
    dashboard.screenshot(page, "stats")

    # Refreshes by itself (every 10 s) while shown.
    with page.expect_request(lambda r: "/api/stats?window=24h" in r.url, timeout=15_000):
        pass
    # Another window: the route and the query follow.
    with page.expect_request(lambda r: "/api/stats?window=1h" in r.url):
        page.get_by_text("1 hour", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/stats\?window=1h$"))
    expect(page.locator("#window-1h")).to_be_checked()
    assert dashboard.problems == []


@sqlite_only
def test_filters_requery_the_list_and_load_more_follows_the_cursor(dashboard: Dashboard) -> None:
    [special] = dashboard.send("+14155550199", text="Find me 7731")
    received = dashboard.inbound("+14155550154", "a reply")  # from the last bulk recipient
    bulk = dashboard.send(*[f"+1415555{i:04d}" for i in range(100, 155)], text="bulk hello")
    # Every earlier message has its final status before the page loads: the only change that
    # can arrive after the status filter below is the late message's own.
    dashboard.wait_final([special, *bulk])
    page = dashboard.open()
    go_live(page)
    rows = page.locator("#messages-body tr")
    table = page.locator("#messages")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-message-id", str(bulk[-1]))  # newest first
    more = page.get_by_role("button", name="Load more")
    with page.expect_request(lambda r: "cursor=" in r.url):
        more.click()
    expect(rows).to_have_count(57)
    expect(rows.last).to_have_attribute("data-message-id", str(special))
    expect(more).to_be_hidden()

    # Text search (q), then a number (the other party: a recipient, or the sender of a received
    # message, as the Number column shows it): each re-queries the list.
    search = page.get_by_label("Text or UUID")
    with page.expect_request(lambda r: "q=Find+me" in r.url):
        search.fill("Find me")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-message-id", str(special))
    search.fill("")
    expect(rows).to_have_count(50)
    number = page.get_by_label("Number")
    with page.expect_request(lambda r: "number=%2B14155550100" in r.url):
        number.fill("+1 415 555 0100")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-message-id", str(bulk[0]))
    number.fill("+1 415 555 0154")
    expect(rows).to_have_count(2)
    assert shown_ids(page) == [bulk[-1], received]
    expect(rows.last).to_contain_text("from")
    number.fill("")
    expect(rows).to_have_count(50)

    # A status: the list is re-queried, and live changes are filtered by the page: a new
    # message shows up only once (and if) it is delivered.
    with page.expect_request(lambda r: "status=delivered" in r.url):
        page.get_by_label("Status").select_option("delivered")
    expect(table).not_to_have_attribute("aria-busy", "true")
    [late] = dashboard.send("+14155550198", text="a late one")
    final = dashboard.wait_final([late])[late]
    late_row = page.locator(f'#messages-body tr[data-message-id="{late}"]')
    if final == "delivered":
        expect(late_row).to_be_visible(timeout=15_000)
        expect(rows.first).to_have_attribute("data-message-id", str(late))
    else:
        page.wait_for_timeout(1_000)  # a wrong insertion would come from a fetch: give it time
        expect(late_row).to_have_count(0)
    shown = rows.evaluate_all("els => els.map((e) => e.dataset.status)")
    assert set(shown) == {"delivered"}
    assert shown_ids(page) == sorted(shown_ids(page), reverse=True)
    assert dashboard.problems == []


def applied_id(dashboard: Dashboard, uuid: str, timeout: float = 15.0) -> int:
    """The id of the message a callback made, once the projector has applied it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(dashboard.api("GET", f"/api/messages/{uuid}")["id"])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


def shown_ids(page: Page) -> list[int]:
    return [
        int(i)
        for i in page.locator("#messages-body tr").evaluate_all(
            "els => els.map((e) => e.dataset.messageId)"
        )
    ]


@sqlite_only
def test_rows_stay_newest_first_whatever_order_changes_arrive_in(dashboard: Dashboard) -> None:
    # Four messages known only from signed callbacks, so that the test alone decides when each
    # one changes status: two queued, two delivered, interleaved by id.
    # Each one is applied before the next is posted: placeholders made in one projector pass
    # get their ids in UUID order (the unique index's lock order), not in arrival order.
    uuids = [new_uuid() for _ in range(4)]
    ids = []
    for uuid, status in zip(uuids, ["queued", "delivered", "queued", "delivered"], strict=True):
        dashboard.callback(uuid, status, sequence=1 if status == "queued" else 3)
        ids.append(applied_id(dashboard, uuid))
    assert ids == sorted(ids)
    page = dashboard.open()
    go_live(page)
    with page.expect_request(lambda r: "status=delivered" in r.url):
        page.get_by_label("Status").select_option("delivered")
    rows = page.locator("#messages-body tr")
    expect(rows).to_have_count(2)
    assert shown_ids(page) == [ids[3], ids[1]]

    # The older messages are delivered now, in an order that is not theirs: each row goes where
    # a fresh list query would put it, not on top.
    dashboard.callback(uuids[2], "delivered", sequence=3)
    expect(rows).to_have_count(3)
    assert shown_ids(page) == [ids[3], ids[2], ids[1]]
    dashboard.callback(uuids[0], "delivered", sequence=3)
    expect(rows).to_have_count(4)
    assert shown_ids(page) == [ids[3], ids[2], ids[1], ids[0]]
    page.reload()
    go_live(page)
    page.get_by_label("Status").select_option("delivered")
    expect(rows).to_have_count(4)
    assert shown_ids(page) == [ids[3], ids[2], ids[1], ids[0]]
    assert dashboard.problems == []


@sqlite_only
def test_phone_viewport_has_no_horizontal_scrolling(dashboard: Dashboard) -> None:
    ids = dashboard.send("+14155550101", "+447911123456", text="A message " * 12)
    dashboard.wait_final(ids)
    page = dashboard.new_page(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    checks = [
        ("#/", "phone-live", "#messages-body tr"),
        (f"#/messages/{ids[0]}", "phone-detail", "#timeline > li"),
        ("#/stats", "phone-stats", 'svg[data-chart="latency"]'),
    ]
    for route, name, ready in checks:
        dashboard.open(route, page=page)
        go_live(page)
        expect(page.locator(ready).first).to_be_visible()
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: {overflow}px of horizontal scrolling"
        dashboard.screenshot(page, name)
        if name == "phone-live":
            # The table turns into cards: no header row, each message within the screen.
            expect(page.locator("#messages thead")).to_be_hidden()
            widths = page.locator("#messages-body tr").evaluate_all(
                "els => els.map((e) => e.getBoundingClientRect().right)"
            )
            assert widths
            assert max(widths) <= 390
    assert dashboard.problems == []


@sqlite_only
@pytest.mark.parametrize("server_env", [{"API_KEYS": API_KEY}], ids=["api-keys"])
def test_an_api_key_is_asked_for_then_sent_in_a_header_and_the_first_ws_message(
    dashboard: Dashboard,
) -> None:
    page = dashboard.open()
    dialog = page.get_by_role("dialog", name="API key required")
    expect(dialog).to_be_visible()
    # The WebSocket, given no key within 5 s, closes with 4401: the page says it is offline.
    expect(page.locator("#connection")).to_have_attribute(
        "data-connection-state", "offline", timeout=15_000
    )
    dialog.get_by_label("API key").fill(API_KEY)
    with page.expect_request(lambda r: "/api/messages?" in r.url) as listed:
        dialog.get_by_role("button", name="Save key").click()
    assert listed.value.headers.get("x-api-key") == API_KEY
    expect(dialog).to_be_hidden()
    go_live(page)
    expect(page.locator("#messages-empty")).to_be_visible()
    expect(page.locator("#list-error")).to_be_hidden()
    assert page.evaluate("() => localStorage.getItem('plivo-tracker.api-key')") == API_KEY

    # Never in the URL; the first message on the socket.
    last = dashboard.sockets[-1].url
    assert "api_key" not in last
    assert API_KEY not in last
    first_sent = next(p for url, p in dashboard.frames_sent if url == last)
    assert json.loads(first_sent) == {"type": "auth", "api_key": API_KEY}

    # A reload remembers the key.
    page.reload()
    go_live(page)
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages-empty")).to_be_visible()


STATE_LOG = """
document.addEventListener("DOMContentLoaded", () => {
  const indicator = document.getElementById("connection");
  window.__states = [indicator.dataset.connectionState];
  new MutationObserver(() => window.__states.push(indicator.dataset.connectionState)).observe(
    indicator, { attributes: true, attributeFilter: ["data-connection-state"] });
});
"""


@sqlite_only
def test_a_silent_socket_is_dropped_and_4408_resumes_at_once(dashboard: Dashboard) -> None:
    """Heartbeats missing for 2 × 15 s: the page drops the socket and reconnects with since;
    closed with 4408 (too slow), it reconnects at once with since. The socket is a stand-in
    (page.route_web_socket) and page time stands still unless the test moves it (so "at once"
    means: without any timer); the HTTP API is the real one.

    The message is known only from one signed `queued` callback, so that nothing changes it in
    the database while the stand-in socket tells the page its own story; the stand-in's frame
    brings no error code, which would make the page fetch the message's meaning from the real
    API (and see the database's status, not the stand-in's)."""
    uuid = new_uuid()
    dashboard.callback(uuid, "queued", sequence=1)
    message_id = dashboard.api("GET", f"/api/messages/{uuid}")["id"]
    page = dashboard.new_page()
    page.add_init_script(STATE_LOG)
    start = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    page.clock.install(time=start)
    page.clock.pause_at(start + timedelta(seconds=1))
    urls: list[str] = []

    def stand_in(ws: WebSocketRoute) -> None:
        urls.append(ws.url)
        if len(urls) == 1:
            ws.send(json.dumps({"type": "ready", "last_id": 7}))  # then silence
        elif len(urls) == 2:
            ws.send(json.dumps({"type": "ready", "last_id": 7}))
            frame = {
                "id": 8,
                "type": "status",
                "message_id": message_id,
                "message_uuid": None,
                "status": "rejected",
                "previous_status": "queued",
                "error_code": None,
                "at": "2026-11-23T15:20:11.123456Z",
            }
            ws.send(json.dumps(frame))
            ws.close(code=4408, reason="too slow")
        else:
            ws.send(json.dumps({"type": "ready", "last_id": 8}))

    page.route_web_socket(re.compile(r"/ws(\?|$)"), stand_in)
    dashboard.open(page=page)
    go_live(page)
    expect(page.locator(f'#messages-body tr[data-message-id="{message_id}"]')).to_be_visible()
    assert len(urls) == 1

    page.clock.run_for(29_000)  # a heartbeat late is not yet dead
    assert len(urls) == 1
    page.clock.run_for(2_000)  # 31 s without a frame: dead; the retry follows within 0.5 s
    tr = page.locator(f'#messages-body tr[data-message-id="{message_id}"]')
    expect(tr).to_have_attribute("data-status", "rejected")
    go_live(page)
    page.wait_for_function("() => window.__states.length >= 5")
    assert [parse_qs(urlsplit(u).query).get("since") for u in urls] == [None, ["7"], ["8"]]
    states = page.evaluate("() => window.__states")
    assert states[-4:] == ["reconnecting", "live", "reconnecting", "live"], states
