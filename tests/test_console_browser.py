"""The operator console in a real browser, against the whole system as real processes.

The same system Chromium and rules as tests/test_browser.py (skipped on a developer's machine
without it, failing under CI). ``WECOM_BUS_SCREENSHOTS=docs/screenshots`` also saves the
overview and the dead letters at a wide and a narrow width (the pictures in docs/console.md).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from devkit.embedded_redis import free_port
from shared.bus import names
from tests.system import System, fresh_database, running_system
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright  # isort: skip

pytestmark = pytest.mark.slow

KEY = secrets.token_urlsafe(24)
WIDE = ViewportSize(width=1280, height=860)
NARROW = ViewportSize(width=390, height=844)
SHOTS = os.environ.get("WECOM_BUS_SCREENSHOTS")


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    fresh_database(redis_url)
    with running_system(redis_url, tmp_path_factory.mktemp("console")) as running:
        running.ports["console"] = port = free_port()
        running.stack.env["CONSOLE_API_KEY"] = KEY
        running.stack.spawn("console", "--host", "127.0.0.1", "--port", str(port))
        running.stack.wait_ready({"console": running.url("console", "/readyz")}, timeout=60)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, system: System) -> Iterator[Page]:
    """A logged-in page at a wide viewport."""
    context = browser.new_context(viewport=WIDE, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("dialog", lambda dialog: dialog.accept())  # Replay/Drop ask for confirmation
    page.goto(system.url("console", "/"))
    expect(page).to_have_url(f"{system.url('console', '/login')}?next=%2F")
    page.fill('input[name="key"]', KEY)
    page.click('button[type="submit"]')
    expect(page.locator("h1")).to_have_text("Overview")
    try:
        yield page
    finally:
        context.close()


def shoot(page: Page, name: str) -> None:
    """Save ``name``.png wide and ``name``-narrow.png when screenshots are asked for."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)
    page.set_viewport_size(NARROW)
    page.screenshot(path=f"{SHOTS}/{name}-narrow.png", full_page=True)
    page.set_viewport_size(WIDE)


def deliveries(system: System, content: str) -> int:
    return sum(
        1
        for m in system.sends()
        if m["status"] == "delivered" and m["body"].get("text", {}).get("content") == content
    )


def test_a_dead_letter_is_listed_explained_and_replayed_once(page: Page, system: System) -> None:
    content = f"replay me once {time.time()}"
    system.fake("POST", "/fake/faults", json={"errcode": 81013, "path": "message/send"})
    answer = httpx.post(
        system.url("sender", "/v1/messages"),
        headers={"Authorization": f"Bearer {system.api_key}"},
        json={"touser": "carol", "msgtype": "text", "text": {"content": content}},
        timeout=10,
    )
    assert answer.status_code == 202
    with Redis.from_url(system.env["REDIS_URL"]) as client:
        system.wait_for(lambda: client.xlen(names.deadletter()) == 1, what="the dead letter")

    page.click("text=Dead letters")
    row = page.locator("tr.letter")
    expect(row).to_have_count(1)
    expect(row.locator(".reason")).to_contain_text("errcode 81013")
    shoot(page, "console-deadletters")

    row.locator("a").click()
    expect(page.locator("tr.reason td")).to_contain_text("errcode 81013")
    expect(page.locator("pre.payload")).to_contain_text(content)  # the send request, decoded

    page.click("button.replay")
    expect(page.locator(".notice")).to_contain_text("replayed 1")
    expect(page.locator(".empty")).to_have_text("No dead letters.")
    system.wait_for(lambda: deliveries(system, content) == 1, what="the replayed send")
    with Redis.from_url(system.env["REDIS_URL"]) as client:

        def settled() -> bool:
            info = client.xinfo_groups(names.outbox())[0]
            return bool(info["pending"] == 0 and not info["lag"])

        system.wait_for(settled, what="the sender to finish")
        assert client.xlen(names.deadletter()) == 0
    assert deliveries(system, content) == 1


def test_the_overview_shows_a_stopped_groups_lag_growing(page: Page, system: System) -> None:
    with Redis.from_url(system.env["REDIS_URL"]) as client:
        client.xgroup_create(names.events(), "stopped-team", id="$")
    page.reload()
    lag = page.locator('tr[data-group="stopped-team"] td.lag')
    expect(lag).to_have_text("0")
    for i in range(3):
        assert system.push(**{"from": "bob", "type": "text", "content": f"lag {i}"})["ok"]
    # What follows shows only after a refresh of the page (every 5 s), the counters only after
    # the ingress flushed them (every 5 s) too: up to 10 s unloaded, so never expect's default
    # 5 s (page.set_default_timeout does not reach expect).
    expect(lag).to_have_text("3", timeout=WAIT_MS)
    responder = page.locator('tr[data-group="responder"] td.lag')
    expect(responder).to_have_text("0", timeout=WAIT_MS)  # a running group keeps up
    counted = page.locator('[data-app="default"] .n-callbacks')
    expect(counted).not_to_have_text("0", timeout=WAIT_MS)
    shoot(page, "console-overview")
