"""Outbound bodies: WeCom's exact message/send JSON, every documented limit, decoding errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import SchemaError
from shared.schemas.cards import (
    ActionItem,
    ActionMenu,
    Button,
    CardAction,
    CardImage,
    HorizontalContent,
    MainTitle,
    SubmitButton,
    TemplateCard,
    UpdateButton,
    UpdatedCard,
    UpdateTemplateCardRequest,
)
from shared.schemas.outbound import (
    MSGTYPES,
    Article,
    FileSend,
    ImageSend,
    Markdown,
    MarkdownSend,
    Media,
    MiniprogramNotice,
    MiniprogramNoticeSend,
    MpArticle,
    MpNews,
    MpNewsSend,
    News,
    NewsSend,
    NoticeItem,
    RecallRequest,
    SendRequest,
    TemplateCardSend,
    Text,
    TextCard,
    TextCardSend,
    TextSend,
    Video,
    VideoSend,
    VoiceSend,
    decode_send_request,
    encode_send_request,
    split_request,
    validate,
)

HAN = "汉"  # 3 bytes in UTF-8
TO: dict[str, Any] = {"touser": "zhangsan"}


def wire(req: Any) -> dict[str, Any]:
    """What WeCom receives, as a dict."""
    result: dict[str, Any] = json.loads(encode_send_request(req))
    return result


def rejected(req: Any, field: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        validate(req)
    assert info.value.field == field
    return info.value


def decode_rejected(data: bytes | dict[str, Any], field: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        decode_send_request(data)
    assert info.value.field == field
    return info.value


# --- Every msgtype as WeCom documents it (发送应用消息); defaults left out --------------------

DOC_EXAMPLES: dict[str, dict[str, Any]] = {
    "text": {
        "touser": "UserID1|UserID2|UserID3",
        "toparty": "PartyID1|PartyID2",
        "totag": "TagID1 | TagID2",
        "msgtype": "text",
        "agentid": 1,
        "text": {
            "content": '你的快递已到，请携带工卡前往邮件中心领取。\n出发前可查看<a href="https://'
            'work.weixin.qq.com">邮件中心视频实况</a>，聪明避开排队。'
        },
        "safe": 1,
        "enable_id_trans": 1,
        "enable_duplicate_check": 1,
        "duplicate_check_interval": 600,
    },
    "image": {"touser": "a", "msgtype": "image", "agentid": 1, "image": {"media_id": "MEDIA_ID"}},
    "voice": {"touser": "a", "msgtype": "voice", "agentid": 1, "voice": {"media_id": "MEDIA_ID"}},
    "video": {
        "touser": "a",
        "msgtype": "video",
        "agentid": 1,
        "video": {"media_id": "MEDIA_ID", "title": "Title", "description": "Description"},
    },
    "file": {"touser": "a", "msgtype": "file", "agentid": 1, "file": {"media_id": "1Yv-zXfHjSjU"}},
    "textcard": {
        "touser": "a",
        "msgtype": "textcard",
        "agentid": 1,
        "textcard": {
            "title": "领奖通知",
            "description": '<div class="gray">2016年9月26日</div> <div class="normal">恭喜</div>',
            "url": "https://work.weixin.qq.com/",
            "btntxt": "更多",
        },
    },
    "news": {
        "touser": "a",
        "msgtype": "news",
        "agentid": 1,
        "news": {
            "articles": [
                {
                    "title": "中秋节礼品领取",
                    "description": "今年中秋节公司有豪礼相送",
                    "url": "https://work.weixin.qq.com/",
                    "picurl": "http://res.mail.qq.com/node/ww/wwopenmng/images/doc/test.png",
                },
                {"title": "小程序", "appid": "wx123123123123123", "pagepath": "pages/index"},
            ]
        },
    },
    "mpnews": {
        "touser": "a",
        "msgtype": "mpnews",
        "agentid": 1,
        "safe": 2,
        "mpnews": {
            "articles": [
                {
                    "title": "Title",
                    "thumb_media_id": "MEDIA_ID",
                    "author": "Author",
                    "content_source_url": "https://work.weixin.qq.com",
                    "content": "<p>Content</p>",
                    "digest": "Digest description",
                }
            ]
        },
    },
    "markdown": {
        "touser": "a",
        "msgtype": "markdown",
        "agentid": 1,
        "markdown": {"content": '您的会议室已经预定\n>**事项详情**\n><font color="info">A</font>'},
    },
    "miniprogram_notice": {
        "touser": "zhangsan|lisi",
        "toparty": "1|2",
        "msgtype": "miniprogram_notice",
        "miniprogram_notice": {
            "appid": "wx123123123123123",
            "page": "pages/index?userid=zhangsan&orderid=123123123",
            "title": "会议室预订成功通知",
            "description": "4月27日 16:16",
            "emphasis_first_item": True,
            "content_item": [
                {"key": "会议室", "value": "402"},
                {"key": "会议地点", "value": "广州TIT-402会议室"},
            ],
        },
        "enable_id_trans": 1,
    },
    "template_card": {
        "touser": "a",
        "msgtype": "template_card",
        "agentid": 1,
        "template_card": {
            "card_type": "text_notice",
            "source": {"icon_url": "https://x/icon.png", "desc": "企业微信", "desc_color": 1},
            "action_menu": {
                "desc": "卡片副交互辅助文本说明",
                "action_list": [{"text": "接收推送", "key": "A"}, {"text": "不再推送", "key": "B"}],
            },
            "task_id": "task_id-1@x",
            "main_title": {"title": "欢迎使用企业微信", "desc": "您的好友正在邀请您加入企业微信"},
            "quote_area": {"type": 1, "url": "https://work.weixin.qq.com", "quote_text": "引用"},
            "emphasis_content": {"title": "100", "desc": "核心数据"},
            "sub_title_text": "下载企业微信还能抢红包！",
            "horizontal_content_list": [
                {"keyname": "邀请人", "value": "张三"},
                {"type": 1, "keyname": "官网", "value": "点击访问", "url": "https://x"},
                {"type": 2, "keyname": "下载", "value": "企业微信.apk", "media_id": "M"},
                {"type": 3, "keyname": "员工信息", "value": "点击查看", "userid": "zhangsan"},
            ],
            "jump_list": [
                {"type": 1, "title": "企业微信官网", "url": "https://work.weixin.qq.com"},
                {"type": 2, "title": "跳转小程序", "appid": "APPID", "pagepath": "PAGEPATH"},
            ],
            "card_action": {"type": 1, "url": "https://work.weixin.qq.com"},
        },
    },
}


def test_every_msgtype_has_an_example() -> None:
    assert sorted(DOC_EXAMPLES) == sorted(MSGTYPES)


@pytest.mark.parametrize("msgtype", sorted(DOC_EXAMPLES))
def test_documented_body_round_trips_exactly(msgtype: str) -> None:
    body = DOC_EXAMPLES[msgtype]
    req = decode_send_request(json.dumps(body, ensure_ascii=False).encode())
    assert type(req).__struct_config__.tag == msgtype
    assert wire(req) == body
    assert decode_send_request(body) == req  # a parsed dict gives the same request


def test_python_built_requests_encode_to_the_documented_json() -> None:
    cases: list[tuple[SendRequest, str]] = [
        (ImageSend(touser="a", agentid=1, image=Media(media_id="MEDIA_ID")), "image"),
        (VoiceSend(touser="a", agentid=1, voice=Media(media_id="MEDIA_ID")), "voice"),
        (FileSend(touser="a", agentid=1, file=Media(media_id="1Yv-zXfHjSjU")), "file"),
        (
            VideoSend(
                touser="a",
                agentid=1,
                video=Video(media_id="MEDIA_ID", title="Title", description="Description"),
            ),
            "video",
        ),
        (
            MarkdownSend(
                touser="a",
                agentid=1,
                markdown=Markdown(content=DOC_EXAMPLES["markdown"]["markdown"]["content"]),
            ),
            "markdown",
        ),
        (
            TextCardSend(
                touser="a", agentid=1, textcard=TextCard(**DOC_EXAMPLES["textcard"]["textcard"])
            ),
            "textcard",
        ),
        (
            NewsSend(
                touser="a",
                agentid=1,
                news=News(
                    articles=tuple(Article(**a) for a in DOC_EXAMPLES["news"]["news"]["articles"])
                ),
            ),
            "news",
        ),
        (
            MpNewsSend(
                touser="a",
                agentid=1,
                safe=2,
                mpnews=MpNews(
                    articles=(MpArticle(**DOC_EXAMPLES["mpnews"]["mpnews"]["articles"][0]),)
                ),
            ),
            "mpnews",
        ),
    ]
    for req, msgtype in cases:
        assert wire(validate(req)) == DOC_EXAMPLES[msgtype]


def test_text_encodes_utf8_without_escaping_html_or_chinese() -> None:
    req = TextSend(touser="a|b", agentid=1000002, text=Text(content='hi <a href="x">链接</a>'))
    raw = encode_send_request(req)
    assert '<a href=\\"x\\">链接</a>'.encode() in raw
    assert json.loads(raw) == {
        "touser": "a|b",
        "msgtype": "text",
        "agentid": 1000002,
        "text": {"content": 'hi <a href="x">链接</a>'},
    }


def test_options_at_wecom_defaults_are_left_out() -> None:
    explicit = {
        **DOC_EXAMPLES["image"],
        "safe": 0,
        "enable_id_trans": 0,
        "enable_duplicate_check": 0,
        "duplicate_check_interval": 1800,
    }
    assert wire(decode_send_request(explicit)) == DOC_EXAMPLES["image"]
    built = ImageSend(
        touser="a",
        agentid=1,
        image=Media(media_id="MEDIA_ID"),
        safe=int("0"),
        duplicate_check_interval=int("1800"),
    )
    assert wire(built) == DOC_EXAMPLES["image"]
    sent = wire(TextSend(touser="a", text=Text(content="x"), enable_duplicate_check=1))
    assert sent == {
        "touser": "a",
        "msgtype": "text",
        "text": {"content": "x"},
        "enable_duplicate_check": 1,
    }


def test_button_interaction_card_encodes() -> None:
    card = TemplateCard(
        card_type="button_interaction",
        task_id="approve-42",
        main_title=MainTitle(title="报销审批"),
        button_selection={"question_key": "q", "option_list": [{"id": "1", "text": "通过"}]},
        button_list=(Button(text="同意", style=1, key="yes"), Button(text="驳回", key="no")),
        card_action=CardAction(type=1, url="https://example.com"),
    )
    assert wire(validate(TemplateCardSend(touser="a", agentid=1, template_card=card))) == {
        "touser": "a",
        "msgtype": "template_card",
        "agentid": 1,
        "template_card": {
            "card_type": "button_interaction",
            "task_id": "approve-42",
            "main_title": {"title": "报销审批"},
            "button_selection": {"question_key": "q", "option_list": [{"id": "1", "text": "通过"}]},
            "button_list": [
                {"text": "同意", "style": 1, "key": "yes"},
                {"text": "驳回", "key": "no"},
            ],
            "card_action": {"type": 1, "url": "https://example.com"},
        },
    }


def test_recall_and_update_template_card_bodies() -> None:
    assert wire(validate(RecallRequest(msgid="vcT8gGc-7dFb4bxT35ONjBDz"))) == {
        "msgid": "vcT8gGc-7dFb4bxT35ONjBDz"
    }
    update = UpdateTemplateCardRequest(
        userids=("userid1", "userid2"),
        partyids=(2, 3),
        tagids=(44, 55),
        atall=1,
        agentid=1,
        response_code="REsPoNsEcOdE",
        button=UpdateButton(replace_name="已处理"),
    )
    assert wire(validate(update)) == {
        "userids": ["userid1", "userid2"],
        "partyids": [2, 3],
        "tagids": [44, 55],
        "atall": 1,
        "agentid": 1,
        "response_code": "REsPoNsEcOdE",
        "button": {"replace_name": "已处理"},
    }
    card = UpdatedCard(card_type="vote_interaction", replace_text="已投票", task_id="t1")
    whole = UpdateTemplateCardRequest(response_code="c", atall=1, template_card=card)
    assert wire(validate(whole))["template_card"] == {
        "card_type": "vote_interaction",
        "task_id": "t1",
        "replace_text": "已投票",
    }


def test_requests_are_frozen() -> None:
    req = TextSend.to("a", "hi")
    with pytest.raises(AttributeError):
        req.touser = "b"  # type: ignore[misc]


# --- Constructors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeEvent:
    from_user: str
    content: str = "?"


def test_to_joins_a_list_of_users() -> None:
    req = TextSend.to(["zhangsan", "lisi"], "会议改到三点", agentid=1000002)
    assert isinstance(req, TextSend)
    assert wire(req) == {
        "touser": "zhangsan|lisi",
        "msgtype": "text",
        "agentid": 1000002,
        "text": {"content": "会议改到三点"},
    }


def test_to_takes_a_joined_string_options_and_party_lists() -> None:
    req = TextSend.to("a|b", "x", toparty=[1, 2], totag="7", safe=1)
    assert (req.touser, req.toparty, req.totag, req.safe) == ("a|b", "1|2", "7", 1)


def test_to_validates_at_once() -> None:
    with pytest.raises(SchemaError) as info:
        TextSend.to("a", "   \n")
    assert info.value.field == "$.text.content"
    with pytest.raises(SchemaError) as info:
        TextSend.to([], "x")
    assert info.value.field == "$.touser"
    with pytest.raises(SchemaError) as info:
        TextSend.to(["a|b"], "x")
    assert info.value.field == "$.touser"


def test_reply_to_answers_the_sender() -> None:
    req = TextSend.reply_to(FakeEvent(from_user="lisi"), "收到！")
    assert wire(req) == {"touser": "lisi", "msgtype": "text", "text": {"content": "收到！"}}
    md = MarkdownSend.reply_to(FakeEvent(from_user="lisi"), "**ok**", agentid=5)
    assert wire(md) == {
        "touser": "lisi",
        "msgtype": "markdown",
        "agentid": 5,
        "markdown": {"content": "**ok**"},
    }


def test_markdown_to() -> None:
    assert MarkdownSend.to(["a", "b"], "# t").touser == "a|b"
    assert MarkdownSend.to("a", "x" * 2049).markdown.content == "x" * 2049  # sent in 2 parts
    with pytest.raises(SchemaError) as info:
        MarkdownSend.to("a", "x" * (20 * 2048 + 1))
    assert info.value.field == "$.markdown.content"


# --- Recipients and common options -----------------------------------------------------------


def text(content: str = "hi", **opts: Any) -> TextSend:
    return TextSend(text=Text(content=content), **{**TO, **opts})


@pytest.mark.parametrize("blank", [{}, {"touser": ""}, {"touser": " | "}, {"toparty": ""}])
def test_no_recipient_rejected(blank: dict[str, Any]) -> None:
    rejected(TextSend(text=Text(content="hi"), **blank), "$.touser")


def test_party_or_tag_alone_is_a_recipient() -> None:
    validate(TextSend(toparty="1", text=Text(content="hi")))
    validate(TextSend(totag="1", text=Text(content="hi")))


@pytest.mark.parametrize(("field", "limit"), [("touser", 1000), ("toparty", 100), ("totag", 100)])
def test_recipient_limits(field: str, limit: int) -> None:
    ids = [str(i) for i in range(limit + 1)]
    validate(text(**{field: "|".join(ids[:limit])}))
    rejected(text(**{field: "|".join(ids)}), f"$.{field}")


def test_at_all() -> None:
    validate(text(touser="@all"))
    rejected(text(touser="a|@all"), "$.touser")
    notice = MiniprogramNotice(appid="wx1", title="会议室预订成功通知")
    validate(MiniprogramNoticeSend(touser="a", miniprogram_notice=notice))
    rejected(MiniprogramNoticeSend(touser="@all", miniprogram_notice=notice), "$.touser")


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"safe": 3}, "$.safe"),
        ({"safe": -1}, "$.safe"),
        ({"safe": 2}, "$.safe"),  # 2 is for mpnews only
        ({"enable_id_trans": 2}, "$.enable_id_trans"),
        ({"enable_duplicate_check": 2}, "$.enable_duplicate_check"),
        ({"duplicate_check_interval": 0}, "$.duplicate_check_interval"),
        ({"duplicate_check_interval": 14401}, "$.duplicate_check_interval"),
        ({"agentid": 0}, "$.agentid"),
    ],
)
def test_bad_options_rejected(opts: dict[str, Any], field: str) -> None:
    rejected(text(**opts), field)


def test_option_edges_accepted() -> None:
    edges: list[dict[str, Any]] = [
        {"duplicate_check_interval": 1},
        {"duplicate_check_interval": 14400},
        {"safe": 1},
    ]
    for opts in edges:
        validate(text(enable_duplicate_check=1, **opts))
    article = MpArticle(title="t", thumb_media_id="m", content="c")
    validate(MpNewsSend(touser="a", safe=2, mpnews=MpNews(articles=(article,))))


# --- Body limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [text, lambda c: MarkdownSend(markdown=Markdown(content=c), **TO)])
def test_content_over_one_message_is_split_up_to_twenty_parts(make: Any) -> None:
    field = "$.text.content" if make is text else "$.markdown.content"
    one = validate(make(HAN * 682 + "ab"))  # 2046 + 2 bytes: one message
    assert split_request(one) == [one]
    two = split_request(validate(make(HAN * 683)))  # 2049 bytes: two
    assert [len(encode_send_request(p)) < 2048 + 200 for p in two] == [True, True]
    validate(make("a" * 20 * 2048))  # 20 full parts
    error = rejected(make(HAN * (20 * 2048 // 3 + 1)), field)  # 21 parts
    assert "21 messages" in error.problem
    assert HAN not in str(error)  # no message text in errors
    rejected(make(""), field)
    rejected(make(" \n\t"), field)


def card(**fields: str) -> TextCardSend:
    base: dict[str, Any] = {"title": "t", "description": "d", "url": "https://x.cn/"}
    return TextCardSend(textcard=TextCard(**{**base, **fields}), **TO)


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [
        ("title", "a" * 128, "a" * 129),
        ("title", HAN * 42 + "ab", HAN * 43),
        ("description", "a" * 512, "a" * 513),
        ("url", "https://x.cn/" + "a" * 2035, "https://x.cn/" + "a" * 2036),
        ("url", "HTTP://x.cn", "x.cn/path"),
        ("url", "http://x.cn", "ftp://x.cn"),
        ("btntxt", "更多详情", "查看更多详情"),
        ("title", "t", " "),
        ("description", "d", ""),
    ],
)
def test_textcard_limits(field: str, ok: str, bad: str) -> None:
    validate(card(**{field: ok}))
    rejected(card(**{field: bad}), f"$.textcard.{field}")


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [("title", "a" * 128, "a" * 129), ("description", HAN * 170 + "ab", HAN * 171)],
)
def test_video_limits(field: str, ok: str, bad: str) -> None:
    def video(**fields: str) -> VideoSend:
        return VideoSend(video=Video(media_id="m", **fields), **TO)

    validate(video(**{field: ok}))
    rejected(video(**{field: bad}), f"$.video.{field}")


@pytest.mark.parametrize(
    "req",
    [
        ImageSend(image=Media(media_id=""), **TO),
        VoiceSend(voice=Media(media_id=" "), **TO),
        FileSend(file=Media(media_id=""), **TO),
        VideoSend(video=Video(media_id=""), **TO),
    ],
)
def test_empty_media_id_rejected(req: SendRequest) -> None:
    body = next(name for name in req.__struct_fields__ if name in MSGTYPES)
    rejected(req, f"$.{body}.media_id")


def news(*articles: Article) -> NewsSend:
    return NewsSend(news=News(articles=articles), **TO)


ARTICLE = Article(title="t", url="https://x.cn")


def test_news_article_count() -> None:
    validate(news(ARTICLE))
    validate(news(*[ARTICLE] * 8))
    rejected(news(*[ARTICLE] * 9), "$.news.articles")
    rejected(news(), "$.news.articles")


@pytest.mark.parametrize(
    ("article", "field"),
    [
        (Article(title="a" * 129, url="https://x"), "title"),
        (Article(title="", url="https://x"), "title"),
        (Article(title="t", description="a" * 513, url="https://x"), "description"),
        (Article(title="t", url="https://x/" + "a" * 2039), "url"),
        (Article(title="t", url="www.example.com"), "url"),
        (Article(title="t"), "url"),
        (Article(title="t", appid="wx1"), "pagepath"),
        (Article(title="t", pagepath="p", url="https://x"), "appid"),
    ],
)
def test_news_article_limits(article: Article, field: str) -> None:
    rejected(news(ARTICLE, article), f"$.news.articles[1].{field}")


def test_news_article_edges_accepted() -> None:
    validate(news(Article(title="a" * 128, description="d" * 512, url="https://x/" + "a" * 2038)))
    validate(news(Article(title="t", appid="wx1", pagepath="pages/index")))  # no url needed


def mpnews(*articles: MpArticle) -> MpNewsSend:
    return MpNewsSend(mpnews=MpNews(articles=articles), **TO)


MP = MpArticle(title="t", thumb_media_id="m", content="<p>c</p>")


def test_mpnews_limits() -> None:
    validate(mpnews(*[MP] * 8))
    rejected(mpnews(*[MP] * 9), "$.mpnews.articles")
    rejected(mpnews(), "$.mpnews.articles")
    for field, bad in [
        ("thumb_media_id", ""),
        ("content", " "),
        ("content", "a" * (666 * 1024 + 1)),
        ("title", "a" * 129),
        ("author", "a" * 65),
        ("digest", "a" * 513),
    ]:
        rejected(
            mpnews(MP, msgspec.structs.replace(MP, **{field: bad})), f"$.mpnews.articles[1].{field}"
        )
    validate(mpnews(msgspec.structs.replace(MP, author="a" * 64, content="a" * 666 * 1024)))


def test_miniprogram_notice_limits() -> None:
    def notice(**fields: Any) -> MiniprogramNoticeSend:
        body = {"appid": "wx1", "title": "会议室预订成功通知", **fields}
        return MiniprogramNoticeSend(miniprogram_notice=MiniprogramNotice(**body), **TO)

    item = NoticeItem(key="会议室", value="402")
    validate(notice(content_item=(item,) * 10))
    rejected(notice(content_item=(item,) * 11), "$.miniprogram_notice.content_item")
    rejected(notice(appid=""), "$.miniprogram_notice.appid")
    rejected(notice(title=HAN * 13), "$.miniprogram_notice.title")
    bad_key = NoticeItem(key=HAN * 11, value="v")
    rejected(notice(content_item=(item, bad_key)), "$.miniprogram_notice.content_item[1].key")


# --- Template cards --------------------------------------------------------------------------


TAP = CardAction(type=1, url="https://work.weixin.qq.com")
OPTIONS = {"question_key": "q", "option_list": [{"id": "1", "text": "一"}]}
SUBMIT = SubmitButton(text="提交", key="submit")


def tcard(**fields: Any) -> TemplateCardSend:
    base: dict[str, Any] = {
        "card_type": "text_notice",
        "main_title": MainTitle(title="标题"),
        "card_action": TAP,
    }
    return TemplateCardSend(template_card=TemplateCard(**{**base, **fields}), **TO)


def interactive(card_type: str, **fields: Any) -> TemplateCardSend:
    """A card of an interactive type with every part its type needs, overridable."""
    needs: dict[str, dict[str, Any]] = {
        "button_interaction": {"button_list": (Button(text="同意", key="yes"),)},
        "vote_interaction": {"checkbox": OPTIONS, "submit_button": SUBMIT},
        "multiple_interaction": {"select_list": (OPTIONS,), "submit_button": SUBMIT},
    }
    parts = needs[card_type]
    base = {"card_type": card_type, "task_id": "t1", "card_action": None, **parts}
    return tcard(**{**base, **fields})


def test_card_type_must_be_one_of_five() -> None:
    validate(tcard(card_type="text_notice"))
    validate(tcard(card_type="news_notice", card_image=CardImage(url="https://x/a.png")))
    validate(tcard(card_type="news_notice", image_text_area={"url": "https://x", "title": "t"}))
    validate(interactive("button_interaction"))
    validate(interactive("vote_interaction"))
    validate(interactive("multiple_interaction"))
    rejected(tcard(card_type="fancy_notice"), "$.template_card.card_type")
    body = {**DOC_EXAMPLES["template_card"]}
    body["template_card"] = {**body["template_card"], "card_type": "fancy_notice"}
    error = decode_rejected(body, "$.template_card.card_type")
    assert "fancy" not in str(error)


@pytest.mark.parametrize(
    "task_id", ["a" * 129, "", "has space", "任务", "semi;colon", "new\nline", "a" * 128 + "\n"]
)
def test_bad_task_id_rejected(task_id: str) -> None:
    rejected(tcard(task_id=task_id), "$.template_card.task_id")


def test_task_id_charset_and_length_accepted() -> None:
    validate(tcard(task_id="a" * 128))
    validate(tcard(task_id="AZaz09_-@"))


def test_task_id_required_with_action_menu() -> None:
    menu = ActionMenu(action_list=(ActionItem(text="不再推送", key="stop"),))
    rejected(tcard(action_menu=menu), "$.template_card.task_id")
    validate(tcard(action_menu=menu, task_id="t1"))
    rejected(
        tcard(action_menu=ActionMenu(action_list=()), task_id="t"),
        "$.template_card.action_menu.action_list",
    )


def test_card_type_needs_its_parts() -> None:
    rejected(tcard(main_title=None), "$.template_card.main_title.title")
    validate(tcard(main_title=None, sub_title_text="正文"))
    rejected(tcard(card_type="news_notice"), "$.template_card.card_image")
    rejected(interactive("multiple_interaction", select_list=None), "$.template_card.select_list")
    rejected(tcard(button_list=(Button(text="b", key="k"),) * 7), "$.template_card.button_list")


@pytest.mark.parametrize(
    ("card", "field"),
    [
        # text_notice and news_notice need card_action, and a usable one
        (tcard(card_action=None), "card_action"),
        (tcard(card_action=CardAction(type=1)), "card_action.url"),
        (tcard(card_action=CardAction(type=2)), "card_action.appid"),
        (tcard(card_action=CardAction(url="https://x")), "card_action.type"),
        (
            tcard(
                card_type="news_notice",
                card_image=CardImage(url="https://x/a.png"),
                card_action=None,
            ),
            "card_action",
        ),
        # button, vote and multiple need task_id
        (interactive("button_interaction", task_id=None), "task_id"),
        (interactive("vote_interaction", task_id=None), "task_id"),
        (interactive("multiple_interaction", task_id=None), "task_id"),
        # button needs button_list, each button its key (callback) or url (type 1)
        (interactive("button_interaction", button_list=None), "button_list"),
        (interactive("button_interaction", button_list=()), "button_list"),
        (
            interactive("button_interaction", button_list=(Button(text="b", type=1),)),
            "button_list[0].url",
        ),
        (
            interactive("button_interaction", button_list=(Button(text="b"),)),
            "button_list[0].key",
        ),
        # vote needs checkbox (1-20 options) and submit_button
        (interactive("vote_interaction", checkbox=None), "checkbox"),
        (
            interactive("vote_interaction", checkbox={"question_key": "q", "option_list": []}),
            "checkbox.option_list",
        ),
        (interactive("vote_interaction", submit_button=None), "submit_button"),
        # multiple needs submit_button, and 1-10 options per select list
        (interactive("multiple_interaction", submit_button=None), "submit_button"),
        (
            interactive(
                "multiple_interaction",
                select_list=(
                    {"question_key": "q", "option_list": [OPTIONS["option_list"][0]] * 11},
                ),
            ),
            "select_list[0].option_list",
        ),
        # horizontal items of type 1/2/3 need url/media_id/userid
        (
            tcard(horizontal_content_list=(HorizontalContent(keyname="k", type=3),)),
            "horizontal_content_list[0].userid",
        ),
    ],
)
def test_per_type_card_rules(card: TemplateCardSend, field: str) -> None:
    rejected(card, f"$.template_card.{field}")


def test_an_updated_card_needs_only_what_every_card_needs() -> None:
    card = UpdatedCard(card_type="button_interaction", replace_text="已处理")
    validate(UpdateTemplateCardRequest(response_code="c", template_card=card))


def test_update_template_card_limits() -> None:
    button = UpdateButton(replace_name="已处理")
    validate(UpdateTemplateCardRequest(response_code="c", userids=("u",) * 1000, button=button))
    too_many: tuple[tuple[str, Any], ...] = (
        ("userids", ("u",) * 1001),
        ("partyids", (1,) * 101),
        ("tagids", (1,) * 101),
    )
    for field, many in too_many:
        req = UpdateTemplateCardRequest(response_code="c", button=button, **{field: many})
        rejected(req, f"$.{field}")
    rejected(UpdateTemplateCardRequest(response_code="c", atall=1), "$.button")
    card = UpdatedCard(card_type="button_interaction")
    both = UpdateTemplateCardRequest(response_code="c", button=button, template_card=card)
    rejected(both, "$.button")
    rejected(UpdateTemplateCardRequest(response_code=" ", button=button), "$.response_code")
    rejected(
        UpdateTemplateCardRequest(response_code="c", button=UpdateButton(replace_name="")),
        "$.button.replace_name",
    )
    bad_card = UpdatedCard(card_type="vote_interaction", task_id="bad id")
    rejected(
        UpdateTemplateCardRequest(response_code="c", template_card=bad_card),
        "$.template_card.task_id",
    )


def test_recall_needs_msgid() -> None:
    rejected(RecallRequest(msgid=""), "$.msgid")


# --- decode_send_request ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"{bad", "$"),
        (b"", "$"),
        (b"[1, 2]", "$"),
        (b'"text"', "$"),
        (b'{"touser": "a", "text": {"content": "x"}}', "$.msgtype"),
        (b'{"msgtype": "sms", "touser": "a"}', "$.msgtype"),
        (b'{"msgtype": 1, "touser": "a"}', "$.msgtype"),
        (b'{"msgtype": "text", "touser": "a"}', "$.text"),
        (b'{"msgtype": "text", "touser": "a", "text": {}}', "$.text.content"),
        (b'{"msgtype": "text", "touser": "a", "text": {"content": 5}}', "$.text.content"),
        (b'{"msgtype": "text", "touser": "a", "text": "hi"}', "$.text"),
        (b'{"msgtype": "text", "touser": ["a", "b"], "text": {"content": "x"}}', "$.touser"),
        (
            b'{"msgtype": "text", "touser": "a", "agentid": "1000002", "text": {"content": "x"}}',
            "$.agentid",
        ),
        (
            b'{"msgtype": "text", "touser": "a", "agentid": true, "text": {"content": "x"}}',
            "$.agentid",
        ),
        (
            b'{"msgtype": "text", "touser": "a", "agentid": 1.5, "text": {"content": "x"}}',
            "$.agentid",
        ),
        (b'{"msgtype": "text", "touser": "a", "safe": "1", "text": {"content": "x"}}', "$.safe"),
        (b'{"msgtype": "news", "touser": "a", "news": {"articles": {}}}', "$.news.articles"),
        (
            b'{"msgtype": "news", "touser": "a", "news": {"articles": '
            b'[{"title": "t", "url": "http://x"}, {"url": "http://x"}]}}',
            "$.news.articles[1].title",
        ),
        (b'{"msgtype": "text", "touser": "a", "text": {"content": ""}}', "$.text.content"),
        (b'{"msgtype": "text", "text": {"content": "x"}}', "$.touser"),
    ],
)
def test_decode_errors_name_the_field(data: bytes, field: str) -> None:
    decode_rejected(data, field)


def test_decode_error_does_not_echo_values() -> None:
    error = decode_rejected(b'{"msgtype": "secret-ish", "touser": "a"}', "$.msgtype")
    assert "secret-ish" not in str(error)
    assert "text" in error.problem  # lists what is accepted


def test_decode_accepts_dict_and_str() -> None:
    body = {"msgtype": "text", "touser": "a", "text": {"content": "x"}}
    assert decode_send_request(body) == decode_send_request(json.dumps(body))
    decode_rejected({**body, "agentid": "1"}, "$.agentid")


def test_default_agentid_fills_only_a_missing_agentid() -> None:
    body = {"msgtype": "text", "touser": "a", "text": {"content": "x"}}
    assert decode_send_request(body).agentid is None
    assert decode_send_request(body, default_agentid=1000002).agentid == 1000002
    assert decode_send_request({**body, "agentid": 7}, default_agentid=1000002).agentid == 7
    notice = DOC_EXAMPLES["miniprogram_notice"]
    assert "agentid" not in wire(decode_send_request(notice, default_agentid=1000002))


def test_unknown_keys_are_not_sent() -> None:
    # "app" belongs to the sender API, not to WeCom; unknown keys are ignored, not forwarded.
    body = {"msgtype": "text", "touser": "a", "text": {"content": "x"}, "app": "hr"}
    assert wire(decode_send_request(body)) == {
        "msgtype": "text",
        "touser": "a",
        "text": {"content": "x"},
    }


# --- Properties ------------------------------------------------------------------------------


@given(st.text(max_size=800))
def test_any_text_is_accepted_iff_wecom_would(content: str) -> None:
    req = TextSend(touser="a", text=Text(content=content))
    ok = bool(content.strip()) and len(content.encode()) <= 2048
    if not ok:
        rejected(req, "$.text.content")
        return
    validate(req)
    raw = encode_send_request(req)
    assert decode_send_request(raw) == req
    assert json.loads(raw)["text"]["content"] == content


@given(st.integers(min_value=0, max_value=1100))
def test_user_count_accepted_iff_1_to_1000(n: int) -> None:
    users = [f"u{i}" for i in range(n)]
    if 1 <= n <= 1000:
        assert TextSend.to(users, "x").touser == "|".join(users)
    else:
        with pytest.raises(SchemaError) as info:
            TextSend.to(users, "x")
        assert info.value.field == "$.touser"


def test_miniprogram_notice_carries_no_agentid() -> None:
    body = {
        "touser": "a",
        "msgtype": "miniprogram_notice",
        "miniprogram_notice": {"appid": "wx1", "title": "会议提醒"},
    }
    filled = decode_send_request(json.dumps(body), default_agentid=1000002)
    assert "agentid" not in json.loads(encode_send_request(filled))
    with pytest.raises(SchemaError) as info:
        decode_send_request(json.dumps({**body, "agentid": 1000002}))
    assert info.value.field == "$.agentid"
