"""The fake WeCom's chat page in a real browser, against the whole system as real processes.

Chromium is the system one (/usr/bin/chromium, from apt) driven by Playwright; the machine may
have no internet, so Chromium is started with everything that would call home turned off.
``WECOM_BUS_SCREENSHOT=docs/screenshots/chat.png`` also saves the conversation as a picture.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import System, fresh_database, running_system

# The system Chromium; WECOM_BUS_CHROMIUM names another binary (and lets a test name a missing one).
CHROMIUM = Path(os.environ.get("WECOM_BUS_CHROMIUM", "/usr/bin/chromium"))


def _no_browser(reason: str) -> None:
    """Without a browser: skip on a developer's machine, but fail in CI (env CI set), where a
    skipped browser test would keep the run green while the chat page goes untested."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"no browser in CI: {reason}", pytrace=False)
    pytest.skip(f"no browser: {reason}", allow_module_level=True)


try:
    from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
except ImportError:
    _no_browser("playwright is not installed (pip install -e '.[dev]')")
if not CHROMIUM.exists():
    _no_browser(f"{CHROMIUM} is missing (apt-get install -y chromium)")

pytestmark = pytest.mark.slow

# Loopback only: no first-run, sync, update or metrics traffic towards Google.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # replies travel through four processes and a 500 ms poll: generous, not slept


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    fresh_database(redis_url)
    with running_system(redis_url, tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 720, "height": 680},
            locale="zh-CN",
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, system: System) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(system.url("fake-wecom", "/"))
    try:
        yield page
    finally:
        page.close()


def be(page: Page, member: str) -> None:
    page.select_option("#member", member)  # waits for the member list to load


def say(page: Page, text: str) -> None:
    page.locator("#text").press_sequentially(text)
    page.locator("#text").press("Enter")


@contextlib.contextmanager
def explained(system: System) -> Iterator[None]:
    """On a failed wait, add what WeCom received and the services' warnings to the error."""
    try:
        yield
    except AssertionError as exc:
        sends = [(m["status"], m["body"].get("touser")) for m in system.sends()]
        notable = [line for line in system.logs().splitlines() if '"level":"info"' not in line]
        raise AssertionError(f"{exc}\nsends: {sends}\nlogs:\n" + "\n".join(notable[-40:])) from None


def replies(page: Page) -> list[str]:
    return page.locator(".bubble.reply .body").all_inner_texts()


def test_a_question_typed_and_entered_gets_the_reply_bubble(page: Page) -> None:
    be(page, "bob")
    say(page, "你好吗?")
    expect(page.locator("#text")).to_have_value("")
    expect(page.locator(".bubble.mine .body")).to_have_text(["你好吗?"])
    expect(page.locator(".bubble.reply .body")).to_have_text(["你好!"], timeout=WAIT_MS)
    # The member's own bubble says the ingress took the callback.
    expect(page.locator(".bubble.mine .meta")).to_contain_text("✓")


def test_events_show_as_event_bubbles_and_get_no_reply(page: Page) -> None:
    be(page, "carol")
    page.click("#enter-agent")
    page.fill("#event-key", "menu_1")
    page.click("#click")
    events = page.locator(".bubble.event")
    expect(events.locator(".body")).to_have_text(["⚡ enter_agent", "⚡ click menu_1"])
    expect(events.locator(".meta")).to_contain_text(["✓", "✓"], timeout=WAIT_MS)
    # A later question is the marker: once its answer shows, an event reply had its chance.
    say(page, "done?")
    expect(page.locator(".bubble.reply .body")).to_have_text(["done!"], timeout=WAIT_MS)
    assert replies(page) == ["done!"]


def test_help_shows_the_list_of_behaviours(page: Page) -> None:
    be(page, "user1")
    say(page, "/help")
    reply = page.locator(".bubble.reply .body")
    expect(reply).to_have_count(1, timeout=WAIT_MS)
    expect(reply).to_contain_text("/help")
    [text] = replies(page)
    # One line per described behaviour (help, echo), in members' words, no handler names.
    assert len([line for line in text.splitlines() if line.startswith("• ")]) >= 2
    assert "help.show_help" not in text


def test_a_conversation_belongs_to_its_member_and_survives_a_reload(
    page: Page, system: System
) -> None:
    be(page, "alice")
    say(page, "你好吗?")
    expect(page.locator(".bubble.reply .body")).to_have_text(["你好!"], timeout=WAIT_MS)
    page.click("#enter-agent")
    expect(page.locator(".bubble.event")).to_have_count(1)
    page.fill("#event-key", "menu_help")
    page.click("#click")
    expect(page.locator(".bubble.event")).to_have_count(2)
    say(page, "/help")
    bodies = page.locator("#log .bubble .body")
    with explained(system):  # seen once in many runs: the /help reply not shown within 20 s
        expect(bodies).to_have_count(6, timeout=WAIT_MS)
    conversation = bodies.all_inner_texts()
    assert conversation[:5] == ["你好吗?", "你好!", "⚡ enter_agent", "⚡ click menu_help", "/help"]
    assert "/help" in conversation[5]

    be(page, "user9")  # a member who said nothing sees none of alice's conversation
    expect(page.locator("#log .bubble")).to_have_count(0)
    page.reload()
    be(page, "alice")
    expect(bodies).to_have_text(conversation)
    expect(page.locator("#log .bubble.event .meta")).to_contain_text(["✓", "✓"])

    if shot := os.environ.get("WECOM_BUS_SCREENSHOT"):
        page.locator("#text").blur()  # no blinking caret in the picture
        page.screenshot(path=shot)


def test_an_image_chosen_in_the_page_is_pushed_and_kept_for_media_get(
    page: Page, system: System
) -> None:
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    be(page, "user7")
    page.set_input_files("#image", {"name": "dot.png", "mimeType": "image/png", "buffer": picture})
    bubble = page.locator(".bubble.mine", has_text="🖼 image")
    expect(bubble.locator(".meta")).to_contain_text("✓", timeout=WAIT_MS)
    kept = [m for m in system.fake("GET", "/fake/media")["media"] if m["filename"] == "dot.png"]
    assert [(m["size"], m["content_type"]) for m in kept] == [(len(picture), "image/png")]
