"""AI-bot protocol, pure: JSON envelope, decryption, typed callbacks, encrypted replies."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.errors import Base64Error, ReceiveIdError, SchemaError, SignatureError
from shared.protocol.aibot import (
    BOT_RECEIVE_ID,
    JSONParseError,
    build_bot_callback,
    decrypt_bot_callback,
    decrypt_bot_reply,
    encrypt_bot_reply,
    parse_bot_callback,
)
from shared.protocol.aibot_reply import (
    MAX_STREAM_BYTES,
    fit_content,
    stream_image,
    stream_reply,
    stream_with_template_card_reply,
    template_card_reply,
    text_reply,
    update_template_card_reply,
)
from shared.protocol.crypto import CallbackCrypto
from shared.schemas.aibot import (
    BotCallbackType,
    BotEnterChat,
    BotEnvelope,
    BotFeedbackEvent,
    BotFile,
    BotImage,
    BotMixed,
    BotStreamRefresh,
    BotTemplateCardEvent,
    BotText,
    BotVoice,
    UnknownBotCallback,
    decode_bot_envelope,
    encode_bot_envelope,
)
from shared.schemas.envelope import decode_envelope
from shared.schemas.inbound import UnknownEvent

SAMPLES = Path(__file__).parent / "samples" / "aibot"
TOKEN = "BotToken42"
AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
MAX = 262_144


def bot_crypto(receive_id: str = BOT_RECEIVE_ID) -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, receive_id)


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def round_trip(callback: dict[str, Any]) -> BotCallbackType:
    crypto = bot_crypto()
    params, body = build_bot_callback(crypto, callback, timestamp="1700000000", nonce="n0nce")
    plaintext = decrypt_bot_callback(
        crypto, params["msg_signature"], params["timestamp"], params["nonce"], body, max_bytes=MAX
    )
    return parse_bot_callback(plaintext, max_bytes=MAX, received_at=1700000123.5)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("text_group", BotText),
        ("image", BotImage),
        ("mixed", BotMixed),
        ("voice", BotVoice),
        ("file", BotFile),
        ("stream", BotStreamRefresh),
        ("enter_chat", BotEnterChat),
        ("template_card_event", BotTemplateCardEvent),
        ("feedback_event", BotFeedbackEvent),
    ],
)
def test_documented_shapes_parse_to_their_types(name: str, cls: type) -> None:
    raw = sample(name)
    event = round_trip(raw)
    assert type(event) is cls
    assert event.msgid == raw["msgid"]
    assert event.from_.userid == raw["from"]["userid"]
    assert event.from_user == raw["from"]["userid"]
    assert event.to_user == raw["aibotid"]
    assert event.create_time == raw.get("create_time", 1700000123)


def test_fields_of_each_type_are_read() -> None:
    text = round_trip(sample("text_group"))
    assert isinstance(text, BotText)
    assert text.text.content == "@RobotA hello robot"
    assert text.quote is not None and text.quote.text is not None
    assert text.conversation == "CHATID" and text.response_url == "RESPONSEURL"
    mixed = round_trip(sample("mixed"))
    assert isinstance(mixed, BotMixed)
    assert [i.msgtype for i in mixed.mixed.msg_item] == ["text", "image"]
    assert mixed.mixed.msg_item[1].image is not None
    assert mixed.mixed.msg_item[1].image.url == "URL"
    card = round_trip(sample("template_card_event"))
    assert isinstance(card, BotTemplateCardEvent)
    action = card.event.template_card_event
    assert action is not None and action.task_id == "gW8hUPdVkQAOlHRwhDKrSpEO9ViGGOaa"
    assert action.selected_items is not None
    option_ids = action.selected_items.selected_item[0].option_ids
    assert option_ids is not None and option_ids.option_id == ["one", "two"]
    feedback = round_trip(sample("feedback_event"))
    assert isinstance(feedback, BotFeedbackEvent)
    assert feedback.event.feedback_event is not None
    assert feedback.event.feedback_event.inaccurate_reason_list == [2, 4]
    poll = round_trip(sample("stream"))
    assert isinstance(poll, BotStreamRefresh) and poll.stream.id == "STREAMID"
    voice = round_trip(sample("voice"))
    assert isinstance(voice, BotVoice) and voice.conversation == "USERID"


@pytest.mark.parametrize(
    "raw",
    [
        {"msgid": "m1", "msgtype": "sticker", "sticker": {"id": 7}, "from": {"userid": "u"}},
        {"msgid": "m2", "msgtype": "event", "event": {"eventtype": "leave_chat", "x": [1]}},
        {"msgid": "m3", "msgtype": "event", "event": "not an object"},
        {"msgid": "m4", "msgtype": "text", "text": {"content": 42}},  # known type, odd field
        {"msgid": "m5", "from": "nobody"},
        {"msgid": "m6", "aibotid": 5, "chattype": ["x"], "from": {"userid": 7}, "create_time": "1"},
        {"msgid": "m7", "msgtype": "event", "event": {"eventtype": 3}},
    ],
)
def test_unknown_or_odd_callbacks_are_kept_whole(raw: dict[str, Any]) -> None:
    event = round_trip(raw)
    assert isinstance(event, UnknownBotCallback)
    assert event.fields == raw
    assert event.msgid == raw["msgid"]


def test_unknown_event_keeps_its_eventtype() -> None:
    event = round_trip({"msgid": "m", "msgtype": "event", "event": {"eventtype": "leave_chat"}})
    assert isinstance(event, UnknownBotCallback) and event.eventtype == "leave_chat"


@pytest.mark.parametrize(
    ("plaintext", "problem"),
    [
        (b"", "empty"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"msgid": ', "not valid JSON"),
        (b'{"msgtype": "text"}', "no msgid"),
        (b'{"msgid": 5}', "no msgid"),
        (b'{"msgid": "m", "a": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper than 32"),
        (b'{"msgid": "m", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nest"),
        (b'{"msgid": "' + b"x" * MAX + b'"}', "larger than"),
    ],
)
def test_bad_plaintext_is_refused(plaintext: bytes, problem: str) -> None:
    with pytest.raises(JSONParseError, match=problem) as info:
        parse_bot_callback(plaintext, max_bytes=MAX)
    assert info.value.code == -40002


def test_a_bad_signature_is_refused_before_decryption() -> None:
    crypto = bot_crypto()
    params, body = build_bot_callback(crypto, sample("image"), timestamp="1", nonce="n")
    with pytest.raises(SignatureError):
        decrypt_bot_callback(crypto, "0" * 40, "1", "n", body, max_bytes=MAX)
    with pytest.raises(SignatureError):
        decrypt_bot_callback(crypto, params["msg_signature"], "2", "n", body, max_bytes=MAX)


def test_a_callback_for_another_receive_id_is_refused() -> None:
    params, body = build_bot_callback(
        bot_crypto("wwcorp"), sample("image"), timestamp="1", nonce="n"
    )
    with pytest.raises(ReceiveIdError):
        decrypt_bot_callback(bot_crypto(), params["msg_signature"], "1", "n", body, max_bytes=MAX)


@pytest.mark.parametrize(
    "body",
    [b"", b"<xml/>", b'{"encrypt": 5}', b"{}", b'["encrypt"]', b"[" * 50_000, b"x" * (MAX + 1)],
)
def test_bad_envelopes_are_refused(body: bytes) -> None:
    with pytest.raises(JSONParseError):
        decrypt_bot_callback(bot_crypto(), "sig", "1", "n", body, max_bytes=MAX)


def test_bad_base64_is_refused_once_signed() -> None:
    crypto = bot_crypto()
    encrypt = "not*base64"
    body = json.dumps({"encrypt": encrypt}).encode()
    signature = crypto.signature("1", "n", encrypt)
    with pytest.raises(Base64Error):
        decrypt_bot_callback(crypto, signature, "1", "n", body, max_bytes=MAX)


def test_reply_envelope_uses_the_callback_nonce_and_timestamp() -> None:
    crypto = bot_crypto()
    body = encrypt_bot_reply(crypto, stream_reply("s1", "hi", finish=False), "1700000000", "abc")
    envelope = json.loads(body)
    assert set(envelope) == {"encrypt", "msgsignature", "timestamp", "nonce"}
    assert envelope["nonce"] == "abc" and envelope["timestamp"] == "1700000000"
    expected = hashlib.sha1(
        "".join(sorted((TOKEN, "1700000000", "abc", envelope["encrypt"]))).encode()
    ).hexdigest()
    assert envelope["msgsignature"] == expected
    assert decrypt_bot_reply(crypto, body, nonce="abc") == {
        "msgtype": "stream",
        "stream": {"id": "s1", "finish": False, "content": "hi"},
    }
    with pytest.raises(SignatureError):
        decrypt_bot_reply(crypto, body, nonce="other")
    assert decrypt_bot_reply(crypto, b"", nonce="abc") is None


def test_stream_content_is_cut_at_a_character_boundary() -> None:
    text = "流" * 10_000  # 30000 bytes
    cut = fit_content(text)
    assert len(cut.encode()) <= MAX_STREAM_BYTES and text.startswith(cut)
    assert len(cut) == MAX_STREAM_BYTES // 3
    reply = json.loads(stream_reply("s", text, finish=True))
    assert reply["stream"]["content"] == cut


def test_stream_images_only_when_finished() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    reply = json.loads(stream_reply("s", "done", finish=True, images=[png], feedback_id="fb1"))
    item = reply["stream"]["msg_item"][0]
    assert base64.b64decode(item["image"]["base64"]) == png
    assert item["image"]["md5"] == hashlib.md5(png).hexdigest()
    assert reply["stream"]["feedback"] == {"id": "fb1"}
    with pytest.raises(SchemaError, match="finish"):
        stream_reply("s", "x", finish=False, images=[png])
    with pytest.raises(SchemaError, match="at most 10"):
        stream_reply("s", "x", finish=True, images=[png] * 11)
    with pytest.raises(SchemaError, match="JPG or PNG"):
        stream_image(b"GIF89a")
    with pytest.raises(SchemaError):
        stream_reply("", "x", finish=True)


def test_text_and_card_replies() -> None:
    assert json.loads(text_reply("welcome")) == {"msgtype": "text", "text": {"content": "welcome"}}
    card = {"card_type": "button_interaction", "task_id": "task_1", "main_title": {"title": "t"}}
    assert json.loads(template_card_reply(card))["template_card"] == card
    both = json.loads(stream_with_template_card_reply("s", "x", card, finish=False))
    assert both["msgtype"] == "stream_with_template_card" and both["template_card"] == card
    update = json.loads(update_template_card_reply(card, userids=["u1"]))
    assert update == {
        "response_type": "update_template_card",
        "template_card": card,
        "userids": ["u1"],
    }
    with pytest.raises(SchemaError, match="task_id"):
        template_card_reply({"card_type": "text_notice", "task_id": "bad id!"})
    with pytest.raises(SchemaError, match="task_id"):
        update_template_card_reply({"card_type": "text_notice"})
    with pytest.raises(SchemaError, match="card_type"):
        template_card_reply({"task_id": "t"})


def test_bot_envelope_round_trips_and_reads_as_unknown_event_to_older_consumers() -> None:
    event = round_trip(sample("text_group"))
    assert isinstance(event, BotText)
    envelope = BotEnvelope(
        app="bot:helper",
        received_at=1.5,
        trace_id="t",
        dedup_key="bot:m",
        event=event,
        bot="helper",
        stream_id="abc",
    )
    data = encode_bot_envelope(envelope)
    assert decode_bot_envelope(data) == envelope
    older = decode_envelope(data)
    assert isinstance(older.event, UnknownEvent)
    assert older.event.from_user == "USERID" and older.app == "bot:helper"
    with pytest.raises(msgspec.ValidationError):
        decode_bot_envelope(b'{"app": "default"}')
