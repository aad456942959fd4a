"""The chat page's bot mode in a real browser: the answer grows in place, then finishes.

Every part is a real process (ingress, fake WeCom playing the bot, the echo behaviour);
Chromium and its settings are those of tests/test_browser.py (which skips or fails the same
way when there is no browser).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.test_aibot_system import bot_system
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS

pytestmark = pytest.mark.slow


def test_bot_mode_shows_the_answer_growing_then_finished(redis_url: str, tmp_path: Path) -> None:
    env = {"FAKE_WECOM_BOT_POLL_INTERVAL": "0.1", "AIBOT_ECHO_DELAY": "0.5"}
    with bot_system(redis_url, tmp_path, **env) as system, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 720, "height": 680})
            page.set_default_timeout(WAIT_MS)
            page.goto(system.url("fake-wecom", "/"))
            page.select_option("#member", "bob")
            page.select_option("#app", "bot:helper")
            expect(page.locator("#enter-chat")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#enter-agent")).to_be_hidden(timeout=WAIT_MS)
            page.click("#enter-chat")
            expect(page.locator(".bubble.reply .body").first).to_have_text("hello", timeout=WAIT_MS)
            page.locator("#text").fill("streams grow word by word")
            page.locator("#text").press("Enter")
            answer = page.locator(".bubble.reply").nth(1)
            expect(answer.locator(".meta")).to_contain_text("streaming", timeout=WAIT_MS)
            expect(answer.locator(".body")).to_have_text(
                "streams grow word by word", timeout=WAIT_MS
            )
            expect(answer.locator(".meta")).to_contain_text("finished after", timeout=WAIT_MS)
        finally:
            browser.close()
        found = httpx.get(system.url("fake-wecom", "/fake/bot/messages")).json()["messages"]
    (asked,) = [r for r in found if r["kind"] == "text"]
    assert asked["from"] == "bob" and asked["status"] == "finished"
    assert len(asked["shown"]) >= 3  # "" then at least two growing texts before the last
