"""Outbound bodies: message/send (a union tagged by ``msgtype``), recall, update_template_card.

A request encodes straight into WeCom's JSON, e.g. ``TextSend.to(["a", "b"], "hi")`` gives
``{"msgtype":"text","touser":"a|b","text":{"content":"hi"}}``. Options left at WeCom's documented
default (safe 0, enable_id_trans 0, enable_duplicate_check 0, duplicate_check_interval 1800) and
unset optional fields are left out, which WeCom reads as those same defaults. ``agentid`` may stay
unset until the sender fills in the app's.

``validate`` refuses, with a ``SchemaError`` naming a JSON path like ``$.text.content``, what WeCom
would refuse or silently truncate. Text and markdown content over WeCom's 2048 bytes is the
exception: it is accepted up to 20 parts and ``split_request`` turns it into ordered messages WeCom
accepts (the sender sends them one after the other). Per-field limits are the ``_RULES`` table;
rules spanning several fields are small functions. Unknown JSON keys are ignored, as msgspec does
by default, so a field added later does not break an older sender during a rolling deploy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, NamedTuple, Protocol, Self, TypeAlias, TypeVar, get_args

import msgspec

from shared.errors import SchemaError
from shared.schemas import cards
from shared.schemas.cards import TemplateCard, UpdateButton, UpdateTemplateCardRequest
from shared.schemas.split import MAX_PARTS, PART_BYTES, split_text

__all__ = [
    "INLINE_MAX",
    "MSGTYPES",
    "UPLOAD_PLACEHOLDER",
    "Article",
    "Attachment",
    "FileSend",
    "HasSender",
    "ImageSend",
    "Markdown",
    "MarkdownSend",
    "Media",
    "MediaUpload",
    "MiniprogramNotice",
    "MiniprogramNoticeSend",
    "MpArticle",
    "MpNews",
    "MpNewsSend",
    "News",
    "NewsSend",
    "NoticeItem",
    "RecallRequest",
    "SendRequest",
    "SendRequestType",
    "TemplateCardSend",
    "Text",
    "TextCard",
    "TextCardSend",
    "TextSend",
    "Video",
    "VideoSend",
    "VoiceSend",
    "decode_request",
    "decode_send_request",
    "encode_send_request",
    "split_request",
    "validate",
    "with_media_id",
]


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of the nested objects; optional fields left at None are not sent."""


class Text(_Body, frozen=True, kw_only=True):
    content: str  # ≤ 2048 bytes per message (longer: sent in parts); "\n" and <a href> allowed


class Markdown(_Body, frozen=True, kw_only=True):
    content: str  # ≤ 2048 bytes per message (longer: sent in parts), WeCom's markdown subset


class Media(_Body, frozen=True, kw_only=True):
    """Body of image, voice and file: a temporary media id (valid 3 days)."""

    media_id: str


class Video(_Body, frozen=True, kw_only=True):
    media_id: str
    title: str | None = None
    description: str | None = None


class TextCard(_Body, frozen=True, kw_only=True):
    title: str
    description: str
    url: str
    btntxt: str | None = None  # WeCom shows 详情 when unset


class Article(_Body, frozen=True, kw_only=True):
    """A news article; a tap opens ``url``, or the mini program page when appid+pagepath are set."""

    title: str
    description: str | None = None
    url: str | None = None
    picurl: str | None = None
    appid: str | None = None
    pagepath: str | None = None


class News(_Body, frozen=True, kw_only=True):
    articles: tuple[Article, ...]


class MpArticle(_Body, frozen=True, kw_only=True):
    """An mpnews article, stored by WeCom; ``content`` is HTML."""

    title: str
    thumb_media_id: str
    content: str
    author: str | None = None
    content_source_url: str | None = None
    digest: str | None = None


class MpNews(_Body, frozen=True, kw_only=True):
    articles: tuple[MpArticle, ...]


class NoticeItem(_Body, frozen=True, kw_only=True):
    key: str
    value: str


class MiniprogramNotice(_Body, frozen=True, kw_only=True):
    appid: str
    title: str
    page: str | None = None
    description: str | None = None
    emphasis_first_item: bool | None = None
    content_item: tuple[NoticeItem, ...] | None = None


class HasSender(Protocol):
    """What ``reply_to`` needs of an inbound event: the member who sent it."""

    @property
    def from_user(self) -> str: ...


Ids: TypeAlias = str | int | Sequence[str | int]


def _join(ids: Ids | None, field: str) -> str | None:
    """Recipients as WeCom wants them: one string of ids joined by "|"."""
    if ids is None or isinstance(ids, str):
        return ids or None
    if isinstance(ids, int):
        return str(ids)
    parts = [str(i) for i in ids]
    if any("|" in p or not p.strip() for p in parts):
        raise SchemaError(field, "each id must be non-empty and must not contain '|'")
    return "|".join(parts) or None


def _addressed(cls: type[S], users: Ids, body: dict[str, Any], opts: dict[str, Any]) -> S:
    """Build and validate ``cls``; recipients may be given as lists (toparty, totag too)."""
    for name in ("toparty", "totag"):
        if name in opts:
            opts[name] = _join(opts[name], f"$.{name}")
    return validate(cls(touser=_join(users, "$.touser"), **body, **opts))


_WECOM_INTERVAL: Final = 1800  # seconds; WeCom's default duplicate_check_interval
S = TypeVar("S", bound="SendRequest")
R = TypeVar("R", bound="SendRequest | RecallRequest | UpdateTemplateCardRequest")


class SendRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="msgtype", omit_defaults=True
):
    """One message/send body; use a subclass. Recipient fields are "|"-joined id strings."""

    touser: str | None = None
    toparty: str | None = None
    totag: str | None = None
    agentid: int | None = None
    safe: int = 0  # 0 shareable, 1 no sharing + watermark, 2 inside the corp (mpnews only)
    enable_id_trans: int = 0
    enable_duplicate_check: int = 0
    duplicate_check_interval: int = _WECOM_INTERVAL

    def __post_init__(self) -> None:
        # omit_defaults compares by identity, and a decoded 1800 is a new int object: swap in
        # the default object so an explicit 1800 is left out like the other defaults.
        if self.duplicate_check_interval == _WECOM_INTERVAL:
            msgspec.structs.force_setattr(self, "duplicate_check_interval", _WECOM_INTERVAL)


class _ContentSend(SendRequest, frozen=True, kw_only=True):
    """A message whose body is one ``content`` string (text, markdown): ``to``, ``reply_to``."""

    _body: ClassVar[tuple[str, type[Text] | type[Markdown]]]

    @classmethod
    def to(cls, users: str | Sequence[str], content: str, **opts: Any) -> Self:
        """A validated message to one user, "a|b", a list of users, or "@all"."""
        key, body = cls._body
        return _addressed(cls, users, {key: body(content=content)}, opts)

    @classmethod
    def reply_to(cls, event: HasSender, content: str, **opts: Any) -> Self:
        """A validated message back to the member who sent ``event``."""
        return cls.to(event.from_user, content, **opts)


class TextSend(_ContentSend, tag="text", frozen=True, kw_only=True):
    _body = ("text", Text)
    text: Text


INLINE_MAX: Final = 2 << 20  # bytes of an attachment carried in an outbox entry
UPLOAD_PLACEHOLDER: Final = "@upload"  # the media_id until the sender has uploaded the file


class MediaUpload(msgspec.Struct, frozen=True, kw_only=True):
    """A file the sender uploads (media/upload) right before sending the request it is in."""

    kind: str
    filename: str
    content_type: str
    content: bytes

    def __repr__(self) -> str:  # the bytes are not for logs
        return f"MediaUpload({self.kind}, {self.filename!r}, {len(self.content)} bytes)"


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    """A media message and the file to upload for it; publish it like a SendRequest."""

    request: SendRequest
    upload: MediaUpload


class _Uploadable(SendRequest, frozen=True, kw_only=True):
    _kind: ClassVar[str]

    @classmethod
    def upload(
        cls,
        users: Ids,
        content: bytes,
        *,
        filename: str,
        content_type: str = "application/octet-stream",
        **opts: Any,
    ) -> Attachment:
        """A message carrying ``content``, uploaded by the sender (at most INLINE_MAX bytes)."""
        from shared.wecom.media import check_media  # the sender's own check, before the bus

        check_media(cls._kind, content)
        if len(content) > INLINE_MAX:
            raise SchemaError("media", f"is {len(content)} bytes; attachments carry {INLINE_MAX}")
        body = Media(media_id=UPLOAD_PLACEHOLDER)
        media = Video(media_id=UPLOAD_PLACEHOLDER) if cls._kind == "video" else body
        request = _addressed(cls, users, {cls._kind: media}, opts)
        upload = MediaUpload(
            kind=cls._kind, filename=filename, content_type=content_type, content=content
        )
        return Attachment(request=request, upload=upload)

    @classmethod
    def upload_reply(cls, event: HasSender, content: bytes, **kw: Any) -> Attachment:
        """The same, back to the member who sent ``event``."""
        return cls.upload(event.from_user, content, **kw)


class ImageSend(_Uploadable, tag="image", frozen=True, kw_only=True):
    _kind = "image"
    image: Media


class VoiceSend(_Uploadable, tag="voice", frozen=True, kw_only=True):
    _kind = "voice"
    voice: Media


class VideoSend(_Uploadable, tag="video", frozen=True, kw_only=True):
    _kind = "video"
    video: Video


class FileSend(_Uploadable, tag="file", frozen=True, kw_only=True):
    _kind = "file"
    file: Media


def with_media_id(request: S, media_id: str) -> S:
    """``request`` with its placeholder media_id replaced by the uploaded file's."""
    for key in ("image", "voice", "video", "file"):
        body = getattr(request, key, None)
        if isinstance(body, Media | Video):
            return msgspec.structs.replace(
                request, **{key: msgspec.structs.replace(body, media_id=media_id)}
            )
    return request


class TextCardSend(SendRequest, tag="textcard", frozen=True, kw_only=True):
    textcard: TextCard


class NewsSend(SendRequest, tag="news", frozen=True, kw_only=True):
    news: News


class MpNewsSend(SendRequest, tag="mpnews", frozen=True, kw_only=True):
    mpnews: MpNews


class MarkdownSend(_ContentSend, tag="markdown", frozen=True, kw_only=True):
    _body = ("markdown", Markdown)
    markdown: Markdown


class MiniprogramNoticeSend(SendRequest, tag="miniprogram_notice", frozen=True, kw_only=True):
    """Sent with the token of the app bound to the mini program; WeCom takes no agentid here."""

    miniprogram_notice: MiniprogramNotice


class TemplateCardSend(SendRequest, tag="template_card", frozen=True, kw_only=True):
    template_card: TemplateCard


SendRequestType: TypeAlias = (
    TextSend
    | ImageSend
    | VoiceSend
    | VideoSend
    | FileSend
    | TextCardSend
    | NewsSend
    | MpNewsSend
    | MarkdownSend
    | MiniprogramNoticeSend
    | TemplateCardSend
)
_SEND_TYPES: Final = get_args(SendRequestType)
MSGTYPES: Final[tuple[str, ...]] = tuple(str(t.__struct_config__.tag) for t in _SEND_TYPES)


class RecallRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of message/recall: a msgid from a send response less than 24 h old."""

    msgid: str


class _Rule(NamedTuple):
    """One field limit. Byte limits count UTF-8 bytes, as WeCom does; chars count characters."""

    attr: str
    max_bytes: int = 0
    max_chars: int = 0
    required: bool = False  # present, and not empty or blank
    url: bool = False  # must carry the http(s):// scheme
    items: tuple[int, int] | None = None  # a list: (min, max) entries


_MEDIA_ID = _Rule("media_id", required=True)
_CARD_RULES = (
    _Rule("horizontal_content_list", items=(0, 6)),
    _Rule("jump_list", items=(0, 3)),
    _Rule("vertical_content_list", items=(0, 4)),
    _Rule("button_list", items=(0, 6)),
    _Rule("select_list", items=(0, 3)),
)
_RULES: Final[dict[type[msgspec.Struct], tuple[_Rule, ...]]] = {
    Text: (_Rule("content", required=True),),  # length: _long_content
    Markdown: (_Rule("content", required=True),),
    Media: (_MEDIA_ID,),
    Video: (_MEDIA_ID, _Rule("title", 128), _Rule("description", 512)),
    TextCard: (
        _Rule("title", 128, required=True),
        _Rule("description", 512, required=True),
        _Rule("url", 2048, required=True, url=True),
        _Rule("btntxt", max_chars=4),
    ),
    News: (_Rule("articles", items=(1, 8)),),
    Article: (_Rule("title", 128, required=True), _Rule("description", 512), _Rule("url", 2048)),
    MpNews: (_Rule("articles", items=(1, 8)),),
    MpArticle: (
        _Rule("title", 128, required=True),
        _Rule("thumb_media_id", required=True),
        _Rule("content", 666 * 1024, required=True),
        _Rule("author", 64),
        _Rule("digest", 512),
    ),
    MiniprogramNotice: (
        _Rule("appid", required=True),
        _Rule("title", max_chars=12, required=True),
        _Rule("description", max_chars=12),
        _Rule("content_item", items=(0, 10)),
    ),
    NoticeItem: (_Rule("key", max_chars=10, required=True), _Rule("value", max_chars=30)),
    TemplateCard: _CARD_RULES,
    cards.UpdatedCard: _CARD_RULES,
    cards.ActionMenu: (_Rule("action_list", items=(1, 3)),),
    cards.ActionItem: (_Rule("text", required=True), _Rule("key", 1024, required=True)),
    cards.Button: (_Rule("key", 1024),),
    cards.SubmitButton: (_Rule("key", 1024, required=True),),
    RecallRequest: (_Rule("msgid", required=True),),
    UpdateButton: (_Rule("replace_name", required=True),),
    UpdateTemplateCardRequest: (
        _Rule("response_code", required=True),
        _Rule("userids", items=(0, 1000)),
        _Rule("partyids", items=(0, 100)),
        _Rule("tagids", items=(0, 100)),
    ),
}


def _apply(rule: _Rule, value: Any, where: str) -> None:
    if rule.items is not None:
        low, high = rule.items
        if not low <= (n := len(value or ())) <= high:
            raise SchemaError(where, f"has {n} entries; WeCom accepts {low} to {high}")
        return
    if value is None or not value.strip():
        if rule.required:
            raise SchemaError(where, "is required" if value is None else "must not be blank")
        return
    if rule.max_bytes and (n := len(value.encode())) > rule.max_bytes:
        raise SchemaError(where, f"is {n} bytes in UTF-8; WeCom accepts {rule.max_bytes}")
    if rule.max_chars and (n := len(value)) > rule.max_chars:
        raise SchemaError(where, f"is {n} characters; WeCom accepts {rule.max_chars}")
    if rule.url and not value.lower().startswith(("http://", "https://")):
        raise SchemaError(where, "must start with http:// or https://")


def _article_target(article: Article, path: str) -> None:
    # "小程序或者url必须填写一个"; "appid和pagepath必须同时填写".
    if bool(article.appid) != bool(article.pagepath):
        missing = "pagepath" if article.appid else "appid"
        raise SchemaError(f"{path}.{missing}", "appid and pagepath go together")
    if not article.appid:
        if not article.url:
            raise SchemaError(f"{path}.url", "is required unless appid and pagepath are set")
        _apply(_Rule("url", url=True), article.url, f"{path}.url")


def _long_content(body: Text | Markdown, path: str) -> None:
    """Content over 2048 bytes is sent as ordered parts (the sender splits it), up to a cap."""
    if len(body.content.encode()) > PART_BYTES and (n := len(split_text(body.content))) > MAX_PARTS:
        raise SchemaError(
            f"{path}.content",
            f"needs {n} messages of at most {PART_BYTES} bytes; wecom-bus sends at most "
            f"{MAX_PARTS} for one request: shorten it or send it as several requests",
        )


def split_request(req: S) -> list[S]:
    """``req`` as the messages WeCom accepts: a long text or markdown one as ordered parts."""
    body = getattr(req, "text", None) or getattr(req, "markdown", None)
    if not isinstance(body, Text | Markdown) or len(body.content.encode()) <= PART_BYTES:
        return [req]
    key = "text" if isinstance(body, Text) else "markdown"
    return [
        msgspec.structs.replace(req, **{key: type(body)(content=part)})
        for part in split_text(body.content)
    ]


_CROSS: Final[dict[type[msgspec.Struct], Callable[[Any, str], None]]] = {
    Text: _long_content,
    Markdown: _long_content,
    Article: _article_target,
    TemplateCard: cards.check_template_card,
    cards.UpdatedCard: cards.check_updated_card,
}


def _walk(obj: msgspec.Struct, path: str) -> None:
    """Apply the table to ``obj`` and, depth first, to every Struct inside it."""
    for rule in _RULES.get(type(obj), ()):
        _apply(rule, getattr(obj, rule.attr), f"{path}.{rule.attr}")
    if (cross := _CROSS.get(type(obj))) is not None:
        cross(obj, path)
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if isinstance(value, msgspec.Struct):
            _walk(value, f"{path}.{name}")
        elif isinstance(value, tuple | list):
            for i, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    _walk(item, f"{path}.{name}[{i}]")


def _ids(joined: str | None) -> list[str]:
    if not joined:
        return []
    return [part for part in joined.split("|") if part.strip()]


def _check_send(req: SendRequest) -> None:
    if not isinstance(req, _SEND_TYPES):
        raise SchemaError("$.msgtype", f"must be one of {', '.join(MSGTYPES)}")
    users, parties, tags = _ids(req.touser), _ids(req.toparty), _ids(req.totag)
    for field, ids, limit in (
        ("touser", users, 1000),
        ("toparty", parties, 100),
        ("totag", tags, 100),
    ):
        if (n := len(ids)) > limit:
            raise SchemaError(f"$.{field}", f"names {n} ids; WeCom accepts {limit}")
    if not (users or parties or tags):
        raise SchemaError("$.touser", "no recipient: touser, toparty and totag are all empty")
    if "@all" in users and (len(users) > 1 or isinstance(req, MiniprogramNoticeSend)):
        problem = "is not allowed for miniprogram_notice" if len(users) == 1 else "must stand alone"
        raise SchemaError("$.touser", f"@all {problem}")
    if req.agentid is not None and isinstance(req, MiniprogramNoticeSend):
        raise SchemaError("$.agentid", "is not part of a miniprogram_notice; leave it out")
    if req.agentid is not None and req.agentid <= 0:
        raise SchemaError("$.agentid", "must be a positive integer")
    if req.safe not in (0, 1, 2):
        raise SchemaError("$.safe", "must be 0, 1 or 2")
    if req.safe == 2 and not isinstance(req, MpNewsSend):
        raise SchemaError("$.safe", "2 (share inside the corp only) is for mpnews only")
    for flag in ("enable_id_trans", "enable_duplicate_check"):
        if getattr(req, flag) not in (0, 1):
            raise SchemaError(f"$.{flag}", "must be 0 or 1")
    if not 1 <= req.duplicate_check_interval <= 14400:
        raise SchemaError("$.duplicate_check_interval", "must be 1 to 14400 seconds (4 h)")


def validate(req: R) -> R:
    """Return ``req`` unchanged, or raise SchemaError naming the first field WeCom would refuse."""
    if isinstance(req, SendRequest):
        _check_send(req)
        if isinstance(req, _ContentSend):  # its body is its only Struct: no walk of the rest
            key = req._body[0]
            _walk(getattr(req, key), f"$.{key}")
            return req
    elif isinstance(req, UpdateTemplateCardRequest):
        cards.check_update(req)
    _walk(req, "$")
    return req


_send_decoder: Final = msgspec.json.Decoder(SendRequestType)
_encoder: Final = msgspec.json.Encoder()
_AT = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `([^`]+)`")


def _schema_error(exc: msgspec.ValidationError) -> SchemaError:
    """Turn msgspec's message into (JSON path, problem), leaving out any value the caller sent."""
    problem, path = str(exc), "$"
    if (at := _AT.search(problem)) is not None:
        problem, path = problem[: at.start()], at.group(1)
    if (missing := _MISSING.fullmatch(problem)) is not None:
        problem, path = "is required", f"{path}.{missing.group(1)}"
    if path == "$.msgtype":
        problem = f"{'is required' if missing else 'is unknown'}; one of {', '.join(MSGTYPES)}"
    elif path.endswith(".card_type"):
        problem = f"must be one of {', '.join(cards.CARD_TYPES)}"
    elif problem.startswith("Invalid"):
        problem = "is not one of the accepted values"
    return SchemaError(path, problem)


def decode_send_request(
    data: bytes | str | Mapping[str, Any], *, default_agentid: int | None = None
) -> SendRequest:
    """Parse and validate a message/send body from JSON bytes or an already parsed dict.

    ``default_agentid`` fills a missing ``agentid`` (never on miniprogram_notice, which has
    none). ``agentid`` must be a JSON integer: WeCom takes nothing else.
    """
    try:
        if isinstance(data, bytes | str):
            req: SendRequest = _send_decoder.decode(data)
        else:
            req = msgspec.convert(data, SendRequestType)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    except msgspec.DecodeError:
        raise SchemaError("$", "is not valid JSON") from None
    if (
        req.agentid is None
        and default_agentid is not None
        and not isinstance(req, MiniprogramNoticeSend)
    ):
        req = msgspec.structs.replace(req, agentid=default_agentid)
    return validate(req)


_other_decoders: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    RecallRequest: msgspec.json.Decoder(RecallRequest),
    UpdateTemplateCardRequest: msgspec.json.Decoder(UpdateTemplateCardRequest),
}
D = TypeVar("D", RecallRequest, UpdateTemplateCardRequest)


def decode_request(data: bytes, kind: type[D]) -> D:
    """Parse and validate a message/recall or update_template_card body (JSON bytes).

    Unknown keys (the send API's ``app``) are ignored; types are strict, so ``agentid`` must
    be a JSON integer and ``userids`` a list of strings, as WeCom takes them.
    """
    try:
        req: D = _other_decoders[kind].decode(data)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    except msgspec.DecodeError:
        raise SchemaError("$", "is not valid JSON") from None
    return validate(req)


def encode_send_request(req: SendRequest | RecallRequest | UpdateTemplateCardRequest) -> bytes:
    """WeCom's JSON for a message/send (or recall, update_template_card) body, UTF-8, unescaped."""
    return _encoder.encode(req)
