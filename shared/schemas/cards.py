"""WeCom template cards: ``template_card`` of message/send, and the update_template_card body.

The parts teams build often (title, buttons, action menu, jump list) are Structs; the rarer,
nested ones (quote_area, image_text_area, button_selection, checkbox, select_list) stay plain
dicts, passed to WeCom as given. ``check_template_card`` holds the rules that span fields
(card_type, task_id, which parts a card type needs: text_notice and news_notice a
``card_action``; the interactive types a ``task_id``; button_interaction a ``button_list``;
vote_interaction a ``checkbox`` and a ``submit_button``; multiple_interaction a ``select_list``
and a ``submit_button``); per-field limits live in the table in ``shared.schemas.outbound``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, Literal, get_args

import msgspec

from shared.errors import SchemaError

__all__ = [
    "CARD_TYPES",
    "ActionItem",
    "ActionMenu",
    "Button",
    "CardAction",
    "CardImage",
    "CardType",
    "EmphasisContent",
    "HorizontalContent",
    "JumpItem",
    "MainTitle",
    "Source",
    "SubmitButton",
    "TemplateCard",
    "UpdateButton",
    "UpdateTemplateCardRequest",
    "UpdatedCard",
    "VerticalContent",
    "check_template_card",
    "check_update",
    "check_updated_card",
]

CardType = Literal[
    "text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"
]
CARD_TYPES: Final[tuple[str, ...]] = get_args(CardType)

# "只能由数字、字母和“_-@”组成，最长128字节" (ASCII only, so characters are bytes).
_TASK_ID = re.compile(r"[0-9A-Za-z_\-@]{1,128}")


class Part(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of the card parts; fields left at None are not sent."""


class Source(Part, frozen=True, kw_only=True):
    icon_url: str | None = None
    desc: str | None = None
    desc_color: int | None = None  # 0 grey (WeCom's default), 1 black, 2 red, 3 green


class ActionItem(Part, frozen=True, kw_only=True):
    text: str
    key: str  # comes back as EventKey of template_card_menu_event


class ActionMenu(Part, frozen=True, kw_only=True):
    """The "…" menu at the top right; setting it makes task_id mandatory."""

    desc: str | None = None
    action_list: tuple[ActionItem, ...]


class MainTitle(Part, frozen=True, kw_only=True):
    title: str | None = None
    desc: str | None = None


class EmphasisContent(Part, frozen=True, kw_only=True):
    title: str | None = None
    desc: str | None = None


class CardAction(Part, frozen=True, kw_only=True):
    """What a tap on the card does: type 1 opens ``url``, type 2 a mini program page."""

    type: int | None = None
    url: str | None = None
    appid: str | None = None
    pagepath: str | None = None


class CardImage(Part, frozen=True, kw_only=True):
    url: str
    aspect_ratio: float | None = None


class VerticalContent(Part, frozen=True, kw_only=True):
    title: str
    desc: str | None = None


class HorizontalContent(Part, frozen=True, kw_only=True):
    keyname: str
    value: str | None = None
    type: int | None = None  # 1 url, 2 attachment (media_id), 3 member (userid)
    url: str | None = None
    media_id: str | None = None
    userid: str | None = None


class JumpItem(Part, frozen=True, kw_only=True):
    title: str
    type: int | None = None  # 1 url, 2 mini program
    url: str | None = None
    appid: str | None = None
    pagepath: str | None = None


class Button(Part, frozen=True, kw_only=True):
    text: str
    type: int | None = None  # 0 callback (key required), 1 open url
    style: int | None = None
    key: str | None = None
    url: str | None = None


class SubmitButton(Part, frozen=True, kw_only=True):
    text: str
    key: str


class TemplateCard(Part, frozen=True, kw_only=True):
    """The ``template_card`` object; every documented top-level key has a field."""

    card_type: CardType
    source: Source | None = None
    action_menu: ActionMenu | None = None
    task_id: str | None = None
    main_title: MainTitle | None = None
    quote_area: dict[str, Any] | None = None
    emphasis_content: EmphasisContent | None = None
    sub_title_text: str | None = None
    horizontal_content_list: tuple[HorizontalContent, ...] | None = None
    jump_list: tuple[JumpItem, ...] | None = None
    card_action: CardAction | None = None
    card_image: CardImage | None = None
    image_text_area: dict[str, Any] | None = None
    vertical_content_list: tuple[VerticalContent, ...] | None = None
    button_selection: dict[str, Any] | None = None
    button_list: tuple[Button, ...] | None = None
    checkbox: dict[str, Any] | None = None
    select_list: tuple[dict[str, Any], ...] | None = None
    submit_button: SubmitButton | None = None
    replace_text: str | None = None  # update_template_card: grey text replacing the buttons


_INTERACTIVE: Final = frozenset({"button_interaction", "vote_interaction", "multiple_interaction"})


class UpdatedCard(TemplateCard, frozen=True, kw_only=True):
    """The card of an update_template_card call: it replaces a card WeCom already holds (often
    with only ``replace_text`` and disabled parts), so the per-type parts a new card needs are
    not demanded; the field limits still apply."""


def check_updated_card(card: TemplateCard, path: str) -> None:
    """The rules every card meets, sent or updated: a known card_type, a well-formed task_id."""
    if card.card_type not in CARD_TYPES:
        raise SchemaError(f"{path}.card_type", f"must be one of {', '.join(CARD_TYPES)}")
    if card.task_id is not None and _TASK_ID.fullmatch(card.task_id) is None:
        raise SchemaError(
            f"{path}.task_id", "must be 1 to 128 characters from 0-9, A-Z, a-z, '_', '-' and '@'"
        )


def check_template_card(card: TemplateCard, path: str) -> None:
    """Raise SchemaError for a card WeCom would refuse; ``path`` is where the card sits."""
    check_updated_card(card, path)
    if card.task_id is None and card.card_type in _INTERACTIVE:
        raise SchemaError(f"{path}.task_id", f"is required for a {card.card_type} card")
    if card.task_id is None and card.action_menu is not None:
        raise SchemaError(f"{path}.task_id", "is required when action_menu is set")
    _TYPE_RULES[card.card_type](card, path)
    for i, item in enumerate(card.horizontal_content_list or ()):
        _check_horizontal(item, f"{path}.horizontal_content_list[{i}]")


def _check_card_action(card: TemplateCard, path: str) -> None:
    """text_notice and news_notice: a tap must lead somewhere (type 1 a url, type 2 an appid)."""
    action = card.card_action
    if action is None:
        raise SchemaError(f"{path}.card_action", f"is required for a {card.card_type} card")
    if action.type == 1 and not action.url:
        raise SchemaError(f"{path}.card_action.url", "is required when card_action.type is 1")
    if action.type == 2 and not action.appid:
        raise SchemaError(f"{path}.card_action.appid", "is required when card_action.type is 2")
    if action.type not in (1, 2):
        raise SchemaError(f"{path}.card_action.type", "must be 1 (url) or 2 (mini program)")


def _check_text_notice(card: TemplateCard, path: str) -> None:
    if not ((card.main_title is not None and card.main_title.title) or card.sub_title_text):
        problem = "a text_notice card needs main_title.title or sub_title_text"
        raise SchemaError(f"{path}.main_title.title", problem)
    _check_card_action(card, path)


def _check_news_notice(card: TemplateCard, path: str) -> None:
    if card.card_image is None and not card.image_text_area:
        raise SchemaError(
            f"{path}.card_image", "a news_notice card needs card_image or image_text_area"
        )
    _check_card_action(card, path)


def _check_button(card: TemplateCard, path: str) -> None:
    if not card.button_list:
        raise SchemaError(f"{path}.button_list", "a button_interaction card needs 1 to 6 buttons")
    for i, button in enumerate(card.button_list):
        if button.type == 1 and not button.url:
            raise SchemaError(f"{path}.button_list[{i}].url", "is required when type is 1")
        if button.type in (None, 0) and not button.key:
            raise SchemaError(f"{path}.button_list[{i}].key", "is required for a callback button")


def _options(part: dict[str, Any] | None, where: str, low: int, high: int) -> None:
    options = (part or {}).get("option_list")
    n = len(options) if isinstance(options, list) else 0
    if not low <= n <= high:
        raise SchemaError(where, f"has {n} options; WeCom accepts {low} to {high}")


def _check_vote(card: TemplateCard, path: str) -> None:
    if not card.checkbox:
        raise SchemaError(f"{path}.checkbox", "a vote_interaction card needs checkbox")
    _options(card.checkbox, f"{path}.checkbox.option_list", 1, 20)
    if card.submit_button is None:
        raise SchemaError(f"{path}.submit_button", "a vote_interaction card needs submit_button")


def _check_multiple(card: TemplateCard, path: str) -> None:
    if not card.select_list:
        raise SchemaError(f"{path}.select_list", "a multiple_interaction card needs select_list")
    for i, select in enumerate(card.select_list):
        _options(select, f"{path}.select_list[{i}].option_list", 1, 10)
    if card.submit_button is None:
        raise SchemaError(
            f"{path}.submit_button", "a multiple_interaction card needs submit_button"
        )


_TYPE_RULES: Final[dict[str, Callable[[TemplateCard, str], None]]] = {
    "text_notice": _check_text_notice,
    "news_notice": _check_news_notice,
    "button_interaction": _check_button,
    "vote_interaction": _check_vote,
    "multiple_interaction": _check_multiple,
}
_HORIZONTAL_NEEDS: Final = {1: "url", 2: "media_id", 3: "userid"}


def _check_horizontal(item: HorizontalContent, path: str) -> None:
    needed = _HORIZONTAL_NEEDS.get(item.type or 0)
    if needed is not None and not getattr(item, needed):
        raise SchemaError(f"{path}.{needed}", f"is required when type is {item.type}")


class UpdateButton(Part, frozen=True, kw_only=True):
    replace_name: str  # the buttons become unclickable and show this text


class UpdateTemplateCardRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Body of message/update_template_card: exactly one of ``button`` and ``template_card``."""

    response_code: str
    userids: tuple[str, ...] | None = None
    partyids: tuple[int, ...] | None = None
    tagids: tuple[int, ...] | None = None
    atall: int = 0
    agentid: int | None = None
    button: UpdateButton | None = None
    template_card: UpdatedCard | None = None


def check_update(req: UpdateTemplateCardRequest) -> None:
    if (req.button is None) == (req.template_card is None):
        raise SchemaError("$.button", "give exactly one of button and template_card")
    if req.atall not in (0, 1):
        raise SchemaError("$.atall", "must be 0 or 1")
    if req.agentid is not None and req.agentid <= 0:
        raise SchemaError("$.agentid", "must be a positive integer")
