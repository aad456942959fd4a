"""The page frame (header, navigation, language switch) and the console's labels in two languages.

The language is ``?lang=en`` or ``?lang=zh`` (remembered in a cookie), else the browser's
Accept-Language (``zh…`` → Chinese), else English.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from services.console.html import Html, html, join

__all__ = ["LABELS", "Lang", "View", "language", "page"]

Lang = Literal["en", "zh"]

LABELS: dict[str, tuple[str, str]] = {
    "title": ("wecom-bus console", "wecom-bus 控制台"),
    "overview": ("Overview", "概览"),
    "deadletters": ("Dead letters", "死信"),
    "sends": ("Sends", "发送"),
    "token": ("Token", "令牌"),
    "logout": ("Log out", "退出"),
    "login": ("Log in", "登录"),
    "key": ("Console key (CONSOLE_API_KEY)", "控制台密钥 (CONSOLE_API_KEY)"),
    "wrong_key": ("Wrong key.", "密钥错误。"),
    "app": ("App", "应用"),
    "callbacks_min": ("Callbacks per minute", "每分钟回调"),
    "sends_min": ("Sends per minute", "每分钟发送"),
    "last_hour": ("last hour", "最近一小时共"),
    "now": ("now", "现在"),
    "failed": ("failed", "失败"),
    "ack": ("Ack latency", "应答延迟"),
    "mean": ("mean", "平均"),
    "p99": ("p99 (estimate)", "p99（估计）"),
    "groups": ("Consumer groups", "消费组"),
    "stream": ("Stream", "流"),
    "group": ("Group", "组"),
    "lag": ("Lag", "积压"),
    "pending": ("Pending", "待确认"),
    "consumers": ("Consumers", "消费者"),
    "idle": ("idle", "空闲"),
    "oldest": ("Oldest pending", "最早待确认"),
    "none": ("none", "无"),
    "time": ("Time", "时间"),
    "reason": ("Reason", "原因"),
    "errcode": ("Errcode and advice", "错误码与建议"),
    "attempts": ("Attempts", "尝试次数"),
    "filter": ("Filter", "筛选"),
    "replay": ("Replay", "重放"),
    "drop": ("Drop", "丢弃"),
    "replay_selected": ("Replay selected", "重放所选"),
    "drop_selected": ("Drop selected", "丢弃所选"),
    "replay_all": ("Replay all the filter matches", "重放所有符合筛选的"),
    "drop_all": ("Drop all the filter matches", "丢弃所有符合筛选的"),
    "no_deadletters": ("No dead letters.", "没有死信。"),
    "shown_of": ("shown of", "条，共"),
    "entry": ("Entry", "条目"),
    "consumer": ("Consumer", "消费者"),
    "payload": ("Payload (decoded)", "内容（已解码）"),
    "confirm_replay": ("Replay to the group that failed it?", "重放给失败的消费组？"),
    "confirm_drop": ("Drop for good?", "永久丢弃？"),
    "done": ("Done", "完成"),
    "delayed": ("Delayed queue", "延迟队列"),
    "request": ("Request", "请求"),
    "to": ("To", "接收人"),
    "until": ("Until", "直到"),
    "circuits": ("Circuits", "熔断"),
    "state": ("State", "状态"),
    "since": ("Since", "开始于"),
    "by_errcode": ("Sends by errcode, last hour", "最近一小时按错误码的发送"),
    "count": ("Count", "次数"),
    "lookup": ("Look up a request id", "查询请求 ID"),
    "look": ("Look up", "查询"),
    "not_found": (
        "No request with this id (or older than 7 days).",
        "没有此 ID 的请求（或已超过 7 天）。",
    ),
    "cached": ("Cached", "已缓存"),
    "left": ("Time left", "剩余时间"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "token_note": (
        "The token itself is never shown.",
        "令牌本身从不显示。",
    ),
    "empty": ("Nothing waiting.", "没有等待的请求。"),
    "ids": ("CorpID / AgentId", "企业ID / AgentId"),
    "code": ("Errcode", "错误码"),
    "advice": ("Advice", "建议"),
}


def language(request: Request) -> Lang:
    asked = request.query_params.get("lang") or request.cookies.get("lang") or ""
    if asked in ("en", "zh"):
        return "zh" if asked == "zh" else "en"
    accept = request.headers.get("accept-language", "").lower()
    return "zh" if accept.startswith("zh") else "en"


@dataclass(frozen=True, slots=True)
class View:
    """What every page needs besides its data: the language and the session's CSRF token."""

    lang: Lang
    csrf: str
    path: str
    logout: bool = True  # there is a login to end (the console has a key)

    def t(self, key: str) -> str:
        en, zh = LABELS[key]
        return zh if self.lang == "zh" else en

    def csrf_field(self) -> Html:
        return html('<input type="hidden" name="csrf" value="{v}">', v=self.csrf)


_NAV = (
    ("/", "overview"),
    ("/deadletters", "deadletters"),
    ("/sends", "sends"),
    ("/token", "token"),
)


def page(view: View, title: str, body: Html, *, refresh: int = 0) -> Html:
    """A whole document; ``refresh`` > 0 makes console.js reload ``<main>`` every so often."""
    links = join(
        html(
            '<a href="{href}"{cur}>{label}</a>',
            href=href,
            cur=Html(' aria-current="page"') if view.path == href else Html(""),
            label=view.t(key),
        )
        for href, key in _NAV
    )
    logout = html(
        '<form method="post" action="/logout" class="logout">{csrf}'
        '<button type="submit">{label}</button></form>',
        csrf=view.csrf_field(),
        label=view.t("logout"),
    )
    if not view.logout:
        logout = Html("")
    return html(
        '<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} · {brand}</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        '<header><strong>{brand}</strong><nav>{links}</nav><span class="langs">'
        '<a href="?lang=en">EN</a> · <a href="?lang=zh">中文</a></span>{logout}</header>'
        '<main id="main" data-refresh="{refresh}"><h1>{title}</h1>{body}</main></body></html>',
        lang="zh-CN" if view.lang == "zh" else "en",
        title=title,
        brand=view.t("title"),
        links=links,
        logout=logout,
        refresh=refresh,
        body=body,
    )
