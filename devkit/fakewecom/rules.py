"""WeCom's documented rules for what message/send and update_template_card accept, as a table.

Written from WeCom's own pages (发送应用消息 path/90236, 更新模版卡片消息 path/94888, 全局错误码
path/90455; see docs/dev.md), deliberately NOT by calling the project's validators
(shared/schemas): the fake is the referee the project's rules are tested against, so a wrong
limit in the project must not be wrong here too. Each refusal carries the errcode WeCom answers.
Where the documentation does not say which errcode a refusal gets, the code is marked UNCONFIRMED
and is the generic 40035 (不合法的参数) unless noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MSGTYPES", "Refusal", "check_send", "check_update"]


class Refusal(Exception):
    """A request WeCom refuses: its errcode and what was wrong (shown after errmsg)."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Rule:
    """One string field: whether it is required, its documented size, the errcodes."""

    name: str
    required: bool = True
    max_bytes: int | None = None  # UTF-8 bytes
    max_chars: int | None = None
    missing: int = 40035  # UNCONFIRMED where not 41016/41033/44004/40007 (documented names)
    too_long: int = 45002  # 消息内容大小超过限制


def _text(limit: int) -> tuple[Rule, ...]:
    # 44004 文本消息content参数为空; 2048 bytes documented for text and markdown. Whether WeCom
    # truncates or refuses longer text is not stated consistently; the fake refuses (45002) so
    # an over-long send is visible.
    return (Rule("content", max_bytes=limit, missing=44004),)


_MEDIA = (Rule("media_id", missing=40007),)
_ARTICLE = (
    Rule("title", max_bytes=128, missing=41016),
    Rule("description", required=False, max_bytes=512),
    Rule("url", required=False, max_bytes=2048),
    Rule("picurl", required=False, max_bytes=2048),
)
_MPNEWS_ARTICLE = (
    Rule("title", max_bytes=128, missing=41016),
    Rule("thumb_media_id", missing=40007),
    Rule("author", required=False, max_bytes=64),
    Rule("content", max_bytes=666 * 1024, missing=44004),
    Rule("digest", required=False, max_bytes=512),
)

# msgtype → the rules of its body object (``body[msgtype]``).
FIELDS: Mapping[str, tuple[Rule, ...]] = {
    "text": _text(2048),
    "markdown": _text(2048),
    "image": _MEDIA,
    "voice": _MEDIA,
    "file": _MEDIA,
    "video": (
        *_MEDIA,
        Rule("title", required=False, max_bytes=128),
        Rule("description", required=False, max_bytes=512),
    ),
    "textcard": (
        Rule("title", max_bytes=128, missing=41016),
        Rule("description", max_bytes=512, missing=41033),
        Rule("url", max_bytes=2048),
        Rule("btntxt", required=False, max_chars=4),
    ),
    "miniprogram_notice": (Rule("appid"), Rule("title")),
    "news": (),
    "mpnews": (),
    "template_card": (),
}
MSGTYPES = frozenset(FIELDS)
# news and mpnews: 1 to 8 articles (45008 图文消息的文章数量不符合系统限制; 8 documented for news,
# assumed for mpnews).
ARTICLES: Mapping[str, tuple[Rule, ...]] = {"news": _ARTICLE, "mpnews": _MPNEWS_ARTICLE}
MAX_ARTICLES = 8
# Recipients: touser ≤ 1000 ids, toparty ≤ 100, totag ≤ 100 (40032 不合法的UserID列表长度; the code
# for too many parties or tags is UNCONFIRMED, the fake answers 40032 too).
RECIPIENT_LIMITS = {"touser": 1000, "toparty": 100, "totag": 100}
MAX_DUPLICATE_INTERVAL = 4 * 3600  # duplicate_check_interval: default 1800 s, at most 4 hours
CARD_TYPES = frozenset(
    {"text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"}
)
# Per card type, the parts it must carry (WeCom's template card pages; errcode UNCONFIRMED: 40035).
CARD_NEEDS: Mapping[str, tuple[str, ...]] = {
    "text_notice": ("card_action",),
    "news_notice": ("card_action",),
    "button_interaction": ("task_id", "button_list"),
    "vote_interaction": ("task_id", "checkbox", "submit_button"),
    "multiple_interaction": ("task_id", "submit_button"),
}
MAX_BUTTONS = 6
MAX_TASK_ID_BYTES = 128


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refusal(40035, f"{where} must be an object")  # UNCONFIRMED errcode
    return value


def _check_fields(obj: Mapping[str, Any], rules: tuple[Rule, ...], where: str) -> None:
    for rule in rules:
        value = obj.get(rule.name)
        # Blank text counts as empty (UNCONFIRMED: whether WeCom strips whitespace first).
        if value is None or (isinstance(value, str) and not value.strip()):
            if rule.required:
                raise Refusal(rule.missing, f"{where}.{rule.name} missing")
            continue
        if not isinstance(value, str):
            raise Refusal(40035, f"{where}.{rule.name} must be a string")  # UNCONFIRMED errcode
        if rule.max_bytes is not None and len(value.encode()) > rule.max_bytes:
            raise Refusal(rule.too_long, f"{where}.{rule.name} over {rule.max_bytes} bytes")
        if rule.max_chars is not None and len(value) > rule.max_chars:
            raise Refusal(rule.too_long, f"{where}.{rule.name} over {rule.max_chars} characters")


def _check_recipients(body: Mapping[str, Any]) -> None:
    present = False
    for name, limit in RECIPIENT_LIMITS.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Refusal(40035, f"{name} must be ids joined by |")  # UNCONFIRMED errcode
        ids = [part for part in value.split("|") if part.strip()]
        if len(ids) > limit:
            raise Refusal(40032, f"{name} has {len(ids)} ids, at most {limit}")
        present = present or bool(ids)
    if not present:  # 82001 指定的成员/部门/标签全部为空
        raise Refusal(82001)


def _check_options(body: Mapping[str, Any], msgtype: str) -> None:
    # Option errcodes are UNCONFIRMED: the fake answers 40035.
    for name in ("enable_id_trans", "enable_duplicate_check"):
        if body.get(name, 0) not in (0, 1) or isinstance(body.get(name), bool):
            raise Refusal(40035, f"{name} must be 0 or 1")
    if body.get("safe", 0) not in (0, 1, 2) or (body.get("safe") == 2 and msgtype != "mpnews"):
        raise Refusal(40035, "safe must be 0 or 1 (2 only for mpnews)")
    interval = body.get("duplicate_check_interval", 1800)
    if not isinstance(interval, int) or not 0 < interval <= MAX_DUPLICATE_INTERVAL:
        raise Refusal(40035, f"duplicate_check_interval must be 1 to {MAX_DUPLICATE_INTERVAL}")


def _check_articles(part: Mapping[str, Any], msgtype: str) -> None:
    articles = part.get("articles")
    if not isinstance(articles, list) or not articles:
        raise Refusal(40035, f"{msgtype}.articles needs 1 to {MAX_ARTICLES}")  # UNCONFIRMED
    if len(articles) > MAX_ARTICLES:
        raise Refusal(45008, f"{len(articles)} articles, at most {MAX_ARTICLES}")
    for i, article in enumerate(articles):
        where = f"{msgtype}.articles[{i}]"
        _check_fields(_object(article, where), ARTICLES[msgtype], where)


def _check_card(card: Mapping[str, Any]) -> None:
    kind = card.get("card_type")
    if kind not in CARD_TYPES:
        raise Refusal(40035, f"card_type {kind!r} is not one WeCom knows")  # UNCONFIRMED
    for part in CARD_NEEDS[str(kind)]:
        if card.get(part) in (None, "", [], {}):
            raise Refusal(40035, f"a {kind} card needs {part}")  # UNCONFIRMED errcode
    task_id = card.get("task_id")
    if task_id is not None and (
        not isinstance(task_id, str) or len(task_id.encode()) > MAX_TASK_ID_BYTES
    ):
        raise Refusal(40035, f"task_id must be text of at most {MAX_TASK_ID_BYTES} bytes")
    buttons = card.get("button_list")
    if isinstance(buttons, list) and len(buttons) > MAX_BUTTONS:
        raise Refusal(40035, f"button_list has {len(buttons)} buttons, at most {MAX_BUTTONS}")


def check_send(body: Any) -> str:
    """Refuse a message/send body as WeCom would; returns its msgtype when it passes.

    agentid and media ids need the fake's state and are checked by the endpoint.
    """
    if not isinstance(body, dict):
        raise Refusal(47001)  # 47001 data format error: not a JSON object
    msgtype = body.get("msgtype")
    if msgtype not in MSGTYPES:
        raise Refusal(40008, f"msgtype {msgtype!r}")  # 40008 不合法的msgtype
    part = _object(body.get(msgtype), str(msgtype))
    _check_fields(part, FIELDS[msgtype], msgtype)
    if msgtype in ARTICLES:
        _check_articles(part, msgtype)
    if msgtype == "template_card":
        _check_card(part)
    _check_recipients(body)
    _check_options(body, msgtype)
    return str(msgtype)


def check_update(body: Mapping[str, Any]) -> None:
    """update_template_card: recipients within the documented sizes, a response_code, and
    either a new button name or a whole card (errcodes UNCONFIRMED: 40035)."""
    for name, limit in (("userids", 1000), ("partyids", 100), ("tagids", 100)):
        ids = body.get(name, [])
        if not isinstance(ids, list) or len(ids) > limit:
            raise Refusal(40035, f"{name} must be a list of at most {limit}")
    if not isinstance(body.get("response_code"), str) or not body["response_code"]:
        raise Refusal(40035, "response_code missing")
    button, card = body.get("button"), body.get("template_card")
    if (button is None) == (card is None):
        raise Refusal(40035, "give either button or template_card")
    if button is not None:
        replace = _object(button, "button").get("replace_name")
        if not isinstance(replace, str) or not replace:
            raise Refusal(40035, "button.replace_name missing")
    else:
        _check_card(_object(card, "template_card"))
