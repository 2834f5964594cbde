"""A message resent after a final failure shows its chain in the detail view: the original and
each resend, linked both ways (RESEND_ERROR_CODES)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard
from tests.browser.test_dashboard import go_live

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"RESEND_ERROR_CODES": "80", "RESEND_BACKOFF_SECONDS": "0"}


def test_the_detail_view_shows_the_resend_chain(dashboard: Dashboard) -> None:
    [original] = dashboard.send("+14155550101")
    dashboard.wait_dispatched()
    uuid = dashboard.api("GET", f"/api/messages/{original}")["message_uuid"]
    # The carrier's final word, signed as Plivo signs it: undelivered, "retry later" (80).
    dashboard.callback(uuid, "undelivered", sequence=99, ErrorCode="80", To="14155550101")
    deadline = time.monotonic() + 30
    chain: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        chain = dashboard.api("GET", f"/api/messages/{original}")["chain"]
        if len(chain) == 2:
            break
        time.sleep(0.2)
    assert [link["id"] for link in chain][0] == original
    assert len(chain) == 2, chain
    resend = int(str(chain[1]["id"]))

    page = dashboard.open(f"#/messages/{original}")
    go_live(page)
    links = page.locator("#detail-chain > li")
    expect(links).to_have_count(2)
    expect(links.first.locator("strong")).to_have_text(f"#{original}")
    expect(links.first).to_contain_text("undelivered")
    links.nth(1).get_by_role("link", name=f"#{resend}").click()
    expect(page.locator("#detail-content")).to_have_attribute("data-message-id", str(resend))
    expect(page.locator("#detail-chain > li").nth(1).locator("strong")).to_have_text(f"#{resend}")
    dashboard.screenshot(page, "detail-chain")
    assert dashboard.problems == []


def test_the_send_form_passes_plivo_options_and_shows_a_bad_one(dashboard: Dashboard) -> None:
    page = dashboard.open()
    go_live(page)
    page.get_by_label("Recipients").fill("+14155550101")
    page.get_by_label("Text", exact=True).fill("Your code is 482193")
    page.get_by_text("Plivo options").click()
    page.get_by_label("Expires after (seconds)").fill("3")  # below Plivo's 5
    page.get_by_role("button", name="Send").click()
    errors = page.locator("#form-errors li")
    expect(errors).to_have_count(1)
    expect(errors.first).to_contain_text("Expires after: ")
    page.get_by_label("Expires after (seconds)").fill("300")
    page.get_by_label("What Plivo keeps").select_option("number_only")
    page.get_by_label("Track link clicks").check()
    dashboard.screenshot(page, "send-options")
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/api/messages")
    ) as posted:
        page.get_by_role("button", name="Send").click()
    body = posted.value.post_data_json
    assert body["message_expiry"] == 300
    assert body["log"] == "number_only"
    assert body["trackable"] is True
    assert "dlt_entity_id" not in body  # unset options stay the server's defaults
    created = page.locator("#send-result a[data-created-id]")
    expect(created).to_have_count(1)
    message_id = int(created.first.get_attribute("data-created-id") or "0")
    stored = dashboard.api("GET", f"/api/messages/{message_id}")["send_options"]
    assert stored == {"message_expiry": 300, "log": "number_only", "trackable": True}
    assert [p for p in dashboard.problems if "422" not in p] == []
