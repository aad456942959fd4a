"""WeCom template cards: ``template_card`` of message/send, and the update_template_card body.

The parts teams build often (title, buttons, action menu, jump list) are Structs; the rarer,
nested ones (quote_area, image_text_area, button_selection, checkbox, select_list) stay plain
dicts, passed to WeCom as given. ``check_template_card`` holds the rules that span fields
(card_type, task_id, which parts a card type needs); per-field limits live in the table in
``shared.schemas.outbound``.
"""

from __future__ import annotations

import re
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
    "VerticalContent",
    "check_template_card",
    "check_update",
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


def check_template_card(card: TemplateCard, path: str) -> None:
    """Raise SchemaError for a card WeCom would refuse; ``path`` is where the card sits."""
    if card.card_type not in CARD_TYPES:
        raise SchemaError(f"{path}.card_type", f"must be one of {', '.join(CARD_TYPES)}")
    if card.task_id is not None and _TASK_ID.fullmatch(card.task_id) is None:
        raise SchemaError(
            f"{path}.task_id", "must be 1 to 128 characters from 0-9, A-Z, a-z, '_', '-' and '@'"
        )
    if card.action_menu is not None and card.task_id is None:
        raise SchemaError(f"{path}.task_id", "is required when action_menu is set")
    if card.card_type == "text_notice" and not (
        (card.main_title is not None and card.main_title.title) or card.sub_title_text
    ):
        problem = "a text_notice card needs main_title.title or sub_title_text"
        raise SchemaError(f"{path}.main_title.title", problem)
    if card.card_type == "news_notice" and card.card_image is None and not card.image_text_area:
        raise SchemaError(
            f"{path}.card_image", "a news_notice card needs card_image or image_text_area"
        )
    if card.card_type == "multiple_interaction" and not card.select_list:
        raise SchemaError(f"{path}.select_list", "a multiple_interaction card needs select_list")


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
    template_card: TemplateCard | None = None


def check_update(req: UpdateTemplateCardRequest) -> None:
    if (req.button is None) == (req.template_card is None):
        raise SchemaError("$.button", "give exactly one of button and template_card")
    if req.atall not in (0, 1):
        raise SchemaError("$.atall", "must be 0 or 1")
    if req.agentid is not None and req.agentid <= 0:
        raise SchemaError("$.agentid", "must be a positive integer")
