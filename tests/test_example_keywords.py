"""examples.keywords on a real Redis (through shared.bus.testing), and as a real process."""

from __future__ import annotations

import contextlib
import http.server
import inspect
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from examples.keywords import router as keywords
from examples.keywords.router import DEFAULT_FILE, build_router, load_rules, rules_file
from services.cli import build_parser
from shared.bus import Context, Retry, Router
from shared.bus.testing import (
    DeadLettered,
    click_event,
    publish_events,
    read_outbox,
    run_events,
    text_message,
    texts,
)
from shared.errors import ConfigError
from shared.schemas.inbound import EnterAgentEvent, ImageMessage, TextMessage
from shared.schemas.outbound import MarkdownSend, TextSend

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "consumers.md"
README = ROOT / "examples" / "keywords" / "README.md"
WECOM_BUS = Path(sys.executable).with_name("wecom-bus")

RULES = """
[[rule]]
match = "报销"
reply = "报销流程见 https://wiki.example.com/expenses"

[[rule]]
match = '(?i)^\\s*wi-?fi\\s*$'
regex = true
reply = "wifi: guest"

[[rule]]
match = "VPN"
reply = "vpn guide"

[[rule]]
match = "年假"
apps = ["hr"]
reply = "hr: leave"

[[rule]]
match = "发布"
users = ["zhangsan", "lisi"]
reply = "release checklist"

[[rule]]
match = "值班"
markdown = true
reply = "**on call**: zhangsan"

[[rule]]
match = "报销单"
reply = "never: the 报销 rule above comes first"
"""


def rules_router(tmp_path: Path, content: str = RULES) -> Router:
    path = tmp_path / "keywords.toml"
    path.write_text(content, encoding="utf-8")
    return build_router(load_rules(path))


@pytest.fixture
def router(tmp_path: Path) -> Router:
    return rules_router(tmp_path)


async def replies(
    redis: Redis, router: Router, content: str, *, from_user: str = "alice", app: str = "default"
) -> list[str]:
    """The texts the router answers one message with."""
    entries = await run_events(redis, router, [text_message(content, from_user)], app=app)
    return texts(entries)


# ------------------------------------------------------------------ matching


async def test_a_plain_keyword_matches_anywhere_in_any_case(redis: Redis, router: Router) -> None:
    assert await replies(redis, router, "我想报销出差费用") == [
        "报销流程见 https://wiki.example.com/expenses"
    ]
    assert await replies(redis, router, "how do I connect the vpn?") == ["vpn guide"]


async def test_a_plain_keyword_is_not_a_pattern(redis: Redis, tmp_path: Path) -> None:
    router = rules_router(tmp_path, '[[rule]]\nmatch = "a.b"\nreply = "dot"\n')
    assert await replies(redis, router, "axb") == []
    assert await replies(redis, router, "see a.b") == ["dot"]


async def test_a_regex_rule_uses_the_pattern(redis: Redis, router: Router) -> None:
    assert await replies(redis, router, "WiFi") == ["wifi: guest"]
    assert await replies(redis, router, " wi-fi ") == ["wifi: guest"]
    assert await replies(redis, router, "the wifi is slow") == []


async def test_an_apps_rule_answers_only_those_apps(redis: Redis, router: Router) -> None:
    assert await replies(redis, router, "年假还有几天", app="hr") == ["hr: leave"]
    assert await replies(redis, router, "年假还有几天") == []


async def test_a_users_rule_answers_only_those_members(redis: Redis, router: Router) -> None:
    assert await replies(redis, router, "今天发布吗", from_user="lisi") == ["release checklist"]
    assert await replies(redis, router, "今天发布吗", from_user="alice") == []


async def test_a_markdown_rule_replies_in_markdown(redis: Redis, router: Router) -> None:
    (entry,) = await run_events(redis, router, [text_message("谁值班", from_user="bob")])
    assert entry.request == MarkdownSend.to("bob", "**on call**: zhangsan")


async def test_the_first_matching_rule_answers_alone(redis: Redis, router: Router) -> None:
    (entry,) = await run_events(redis, router, [text_message("报销单 VPN 值班", from_user="bob")])
    assert entry.request == TextSend.to("bob", "报销流程见 https://wiki.example.com/expenses")
    assert entry.origin == "handler:keywords.reply"


async def test_no_match_and_events_get_no_reply(redis: Redis, router: Router) -> None:
    image = ImageMessage(to_user="wwtestcorp", from_user="alice", create_time=1, msg_id=7)
    events = [text_message("hello"), click_event("报销"), image]
    assert await run_events(redis, router, events) == []


async def test_unmatched_texts_fall_through_to_later_routes(redis: Redis, router: Router) -> None:
    fallback = Router("fallback")

    @fallback.on(TextMessage)
    async def echo(msg: TextMessage, ctx: Context) -> TextSend:
        return TextSend.reply_to(msg, f"echo {msg.content}")

    top = Router("top").include(router, fallback)
    events = [text_message("hello"), text_message("vpn")]
    assert texts(await run_events(redis, top, events)) == ["echo hello", "vpn guide"]


def test_the_file_comes_from_keywords_file_or_the_package() -> None:
    assert rules_file({"KEYWORDS_FILE": "/etc/rules.toml"}) == Path("/etc/rules.toml")
    assert rules_file({"KEYWORDS_FILE": ""}) == DEFAULT_FILE
    assert rules_file({}) == DEFAULT_FILE


async def test_the_packaged_rules_answer(redis: Redis) -> None:
    packaged = load_rules(DEFAULT_FILE)
    assert len(packaged) >= 3
    out = await run_events(redis, keywords.router, [text_message("报销"), text_message("wifi?")])
    assert texts(out) == [packaged[0].reply, packaged[1].reply]


async def test_the_file_is_read_at_start_from_the_services_environment(
    redis: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[[rule]]\nmatch = "hello"\nreply = "from my file"\n', encoding="utf-8")
    environ = {"KEYWORDS_FILE": str(path)}
    out = await run_events(redis, keywords.router, [text_message("hello")], environ=environ)
    assert texts(out) == ["from my file"]
    path.write_text('[[rule]]\nmatch = "hello"\n', encoding="utf-8")  # now broken
    with pytest.raises(ConfigError, match="rule #1, key 'reply': is required"):
        await run_events(redis, keywords.router, [text_message("hello")], environ=environ)


# ------------------------------------------------------------------ bad files


GOOD = '[[rule]]\nmatch = "a"\nreply = "b"\n\n'


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        (GOOD + '[[rule]]\nmatch = "x"\n', "rule #2, key 'reply'", "is required"),
        (GOOD + '[[rule]]\nreply = "x"\n', "rule #2, key 'match'", "is required"),
        (GOOD + '[[rule]]\nmatch = "x"\nreply = "y"\nreplay = "z"\n', "key 'replay'", "unknown"),
        (GOOD + '[[rule]]\nmatch = 1\nreply = "y"\n', "rule #2, key 'match'", "string"),
        (GOOD + '[[rule]]\nmatch = " "\nreply = "y"\n', "rule #2, key 'match'", "non-empty"),
        (GOOD + '[[rule]]\nmatch = "x"\nreply = "y"\nregex = "yes"\n', "key 'regex'", "true or"),
        (GOOD + '[[rule]]\nmatch = "x"\nreply = "y"\napps = "hr"\n', "key 'apps'", "list"),
        (GOOD + '[[rule]]\nmatch = "x"\nreply = "y"\nusers = [1]\n', "key 'users'", "list"),
        (GOOD + '[[rule]]\nmatch = "(x"\nreply = "y"\nregex = true\n', "key 'match'", "regular"),
        (GOOD + f'[[rule]]\nmatch = "x"\nreply = "{"长" * 700}"\n', "key 'reply'", "2048"),
        ("rule = [1]\n", "rule #1", "must be a table"),
        ('[[rules]]\nmatch = "x"\n', "'rules'", "unknown top-level key"),
        ("# nothing yet\n", "", "has no rules"),
        ('[[rule]]\nmatch = "x\n', "", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_file_rule_and_key(
    tmp_path: Path, content: str, where: str, problem: str
) -> None:
    path = tmp_path / "keywords.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert where in message and problem in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot be read"):
        load_rules(missing)


# ------------------------------------------------------------------ the test helpers


async def test_each_run_handles_only_its_own_events(redis: Redis, router: Router) -> None:
    assert texts(await run_events(redis, router, [text_message("vpn")])) == ["vpn guide"]
    assert texts(await run_events(redis, router, [text_message("wifi")])) == ["wifi: guest"]
    assert texts(await read_outbox(redis)) == ["vpn guide", "wifi: guest"]
    assert await redis.xinfo_groups("test:events") == []  # the throwaway groups are gone


async def test_a_failing_handler_surfaces_as_dead_letter(redis: Redis) -> None:
    broken = Router("broken")

    @broken.on(TextMessage)
    async def fail(msg: TextMessage, ctx: Context) -> TextSend:
        if msg.content == "boom":
            raise RuntimeError("handler bug")
        return TextSend.reply_to(msg, "fine")

    with pytest.raises(DeadLettered) as info:
        await run_events(redis, broken, [text_message("boom"), text_message("ok")])
    assert info.value.errors == ["RuntimeError: handler bug"]
    assert texts(info.value.outbox) == ["fine"]


async def test_retry_is_delivered_again_with_the_same_reply_id(redis: Redis) -> None:
    flaky = Router("flaky")
    seen: list[int] = []

    @flaky.on(TextMessage)
    async def once_more(msg: TextMessage, ctx: Context) -> TextSend:
        seen.append(ctx.delivery)
        if ctx.delivery == 1:
            raise Retry(defer=0)
        return TextSend.reply_to(msg, "second time")

    (entry,) = await run_events(redis, flaky, [text_message("x")], max_deliveries=2)
    assert seen == [1, 2] and texts([entry]) == ["second time"]


# ------------------------------------------------------------------ as a real process


def responder(
    redis_url: str, prefix: str, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """``wecom-bus responder --group keywords`` in burst mode, as a team would run it."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WECOM_", "BUS_", "SENDER_", "KEYWORDS_"))
    }
    # examples/ is not an installed package: it is found on the checkout's path.
    path = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    argv = [str(WECOM_BUS), "responder", "--group", "keywords"]
    argv += ["--handlers", "examples.keywords.router:router", "--start", "backlog", "--burst"]
    return subprocess.run(
        argv,
        env={**base, "REDIS_URL": redis_url, "BUS_PREFIX": prefix, "PYTHONPATH": path, **env},
        cwd=cwd,  # no .env of a developer's checkout is read
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
async def test_the_example_runs_as_its_own_group(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"kw{os.getpid()}"
    events = [
        text_message("报销怎么走", from_user="alice"),
        click_event("报销"),
        text_message("nothing to see", from_user="bob"),
        text_message("Wi-Fi 密码", from_user="bob"),
    ]
    await publish_events(redis, events, prefix=prefix)

    done = responder(redis_url, prefix, tmp_path)
    assert done.returncode == 0, done.stderr
    out = await read_outbox(redis, prefix=prefix)
    # The responder handles events concurrently: the replies may come in either order.
    got = sorted(
        (e.request.touser, text, e.origin) for e, text in zip(out, texts(out), strict=True)
    )
    assert got == [
        ("alice", load_rules(DEFAULT_FILE)[0].reply, "handler:keywords.reply"),
        ("bob", load_rules(DEFAULT_FILE)[1].reply, "handler:keywords.reply"),
    ]
    (group,) = await redis.xinfo_groups(f"{prefix}:events")
    assert group["name"] == b"keywords" and group["pending"] == 0

    again = responder(redis_url, prefix, tmp_path)  # the group has read everything: no resend
    assert again.returncode == 0, again.stderr
    assert len(await read_outbox(redis, prefix=prefix)) == 2


@pytest.mark.slow
def test_a_bad_rules_file_stops_the_start(redis_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nmatch = "x"\n', encoding="utf-8")
    done = responder(redis_url, "kwbad", tmp_path, KEYWORDS_FILE=str(bad))
    assert done.returncode == 2
    assert f"{bad}: rule #1, key 'reply': is required" in done.stderr


# ------------------------------------------------------------------ the guide's snippets


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


async def test_the_guides_python_runs(redis: Redis) -> None:
    code = blocks(GUIDE, "python")
    assert len(code) == 4
    # The first edits the default responder: only compiled, so the real one stays untouched.
    compile(code[0], "consumers.md#1", "exec")
    namespace: dict[str, Any] = {}
    exec(code[1], namespace)  # the Router API tour
    exec(code[3], namespace)  # the tests of section 7, run here against that router
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        assert inspect.iscoroutinefunction(test)
        await test(redis)
    router: Router = namespace["router"]
    events = [click_event("helpdesk_status", "bob"), text_message("报修", from_user="robot")]
    enter = EnterAgentEvent(
        to_user="wwtestcorp", from_user="carol", create_time=1, event="enter_agent"
    )
    out = await run_events(redis, router, [*events, enter])
    assert texts(out) == ["查询中…", "**0** open tickets", "欢迎使用服务台 / welcome"]


async def test_the_guides_lifecycle_example_answers_through_the_client_it_opened(
    redis: Redis,
) -> None:
    (lifecycle,) = [c for c in blocks(GUIDE, "python") if "on_startup" in c]
    namespace: dict[str, Any] = {}
    exec(lifecycle, namespace)
    router: Router = namespace["router"]
    with weather_server("晴 25°C") as url:
        out = await run_events(
            redis, router, [text_message("天气 上海")], environ={"WEATHER_URL": url}
        )
    assert texts(out) == ["晴 25°C"]
    assert [r.description for r in router.routes] == ["天气：今天的天气 / today's weather"]


@contextlib.contextmanager
def weather_server(answer: str) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering GET /today with ``answer``."""

    class Today(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer.encode() if self.path == "/today" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Today)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("path", [GUIDE, README], ids=lambda p: p.name)
def test_the_rules_shown_are_valid(path: Path, tmp_path: Path) -> None:
    shown = blocks(path, "toml")
    assert shown
    for n, content in enumerate(shown):
        (tmp_path / f"{n}.toml").write_text(content, encoding="utf-8")
        assert load_rules(tmp_path / f"{n}.toml")


@pytest.mark.parametrize("path", [GUIDE, README], ids=lambda p: p.name)
def test_the_commands_shown_are_accepted(path: Path) -> None:
    commands = []
    for block in blocks(path, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if (at := line.find("wecom-bus ")) >= 0:
                commands.append(shlex.split(line[at:].split("#")[0])[1:])
    assert any(argv[:1] == ["responder"] for argv in commands)
    for argv in commands:
        args = build_parser().parse_args(argv)
        if args.command == "responder":
            assert args.handlers == "examples.keywords.router:router"
