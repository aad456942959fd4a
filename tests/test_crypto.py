"""CallbackCrypto against Tencent's Set A vectors, every error code, and wechatpy both ways."""

from __future__ import annotations

import base64
import re
import struct

import pytest
import xmltodict
from Crypto.Cipher import AES
from hypothesis import given
from hypothesis import strategies as st
from wechatpy.enterprise.crypto import WeChatCrypto

from shared.errors import (
    AESKeyError,
    Base64Error,
    BufferError_,
    ConfigError,
    CryptoError,
    DecryptError,
    ReceiveIdError,
    SignatureError,
    XMLParseError,
)
from shared.protocol.crypto import CallbackCrypto, generate_encoding_aes_key, generate_token

# Tencent's official sample, Set A.
TOKEN = "QDG6eK"
KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP = "wx5823bf96d3bd56c7"

A1_SIGNATURE = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
A1_TIMESTAMP = "1409659589"
A1_NONCE = "263014780"
A1_ECHOSTR = (
    "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
)

A2_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
A2_TIMESTAMP = "1409659813"
A2_NONCE = "1372623149"
A2_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj"
    "911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06"
    "DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQ"
    "H03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6"
    "BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+"
    "E7Q=="
)
A2_BODY = (
    f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{A2_ENCRYPT}]]></Encrypt>"
    "<AgentID><![CDATA[218]]></AgentID></xml>"
).encode()
A2_PLAINTEXT = (
    b"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    b"<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
    b"<CreateTime>1409659813</CreateTime>\n"
    b"<MsgType><![CDATA[text]]></MsgType>\n"
    b"<Content><![CDATA[hello]]></Content>\n"
    b"<MsgId>4561255354251345929</MsgId>\n"
    b"<AgentID>218</AgentID>\n"
    b"</xml>"
)


@pytest.fixture
def crypto() -> CallbackCrypto:
    return CallbackCrypto(TOKEN, KEY, CORP)


def aes_key() -> bytes:
    return base64.b64decode(KEY + "=")


def raw_decrypt(encrypt: str) -> bytes:
    """Plain AES-CBC with pycryptodome, no unpadding: an independent look at the vectors."""
    key = aes_key()
    return AES.new(key, AES.MODE_CBC, key[:16]).decrypt(base64.b64decode(encrypt))


def raw_encrypt(frame: bytes) -> str:
    """AES-CBC over a frame we built by hand, to forge padding and length-field faults."""
    key = aes_key()
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(frame)).decode()


def frame(msg: bytes, *, length: int | None = None, receive_id: bytes = CORP.encode()) -> bytes:
    n = len(msg) if length is None else length
    return b"R" * 16 + struct.pack(">I", n) + msg + receive_id


def pad32(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


# ---------------------------------------------------------------- Tencent vectors


def test_a1_url_verification_returns_the_echo(crypto: CallbackCrypto) -> None:
    echo = crypto.verify_url(A1_SIGNATURE, A1_TIMESTAMP, A1_NONCE, A1_ECHOSTR)
    assert echo == b"1616140317555161061"


def test_a2_signature_matches_tencents(crypto: CallbackCrypto) -> None:
    assert crypto.signature(A2_TIMESTAMP, A2_NONCE, A2_ENCRYPT) == A2_SIGNATURE


def test_a2_post_decrypts_to_the_exact_284_byte_plaintext(crypto: CallbackCrypto) -> None:
    plaintext = crypto.decrypt_callback(A2_SIGNATURE, A2_TIMESTAMP, A2_NONCE, A2_BODY)
    assert plaintext == A2_PLAINTEXT
    assert len(plaintext) == 284
    # The vector pads with 30 bytes: more than AES's 16-byte block would ever add.
    raw = raw_decrypt(A2_ENCRYPT)
    assert raw[-30:] == bytes([30]) * 30


def test_a2_reencrypting_with_its_random_prefix_reproduces_tencents_ciphertext(
    crypto: CallbackCrypto,
) -> None:
    prefix = raw_decrypt(A2_ENCRYPT)[:16]
    assert crypto.encrypt(A2_PLAINTEXT, random_prefix=prefix) == A2_ENCRYPT


# ---------------------------------------------------------------- one test per error code


def test_40001_wrong_signature(crypto: CallbackCrypto) -> None:
    bad = "0" * 40
    with pytest.raises(SignatureError) as info:
        crypto.decrypt_callback(bad, A2_TIMESTAMP, A2_NONCE, A2_BODY)
    assert info.value.code == -40001
    with pytest.raises(SignatureError):
        crypto.verify_url(A1_SIGNATURE, A1_TIMESTAMP, "263014781", A1_ECHOSTR)
    with pytest.raises(SignatureError):  # non-ASCII must not crash compare_digest
        crypto.verify("签名" * 20, A2_TIMESTAMP, A2_NONCE, A2_ENCRYPT)
    with pytest.raises(SignatureError):  # upper-case hex is not what WeCom sends
        crypto.verify(A2_SIGNATURE.upper(), A2_TIMESTAMP, A2_NONCE, A2_ENCRYPT)


def test_40002_envelope_without_encrypt(crypto: CallbackCrypto) -> None:
    with pytest.raises(XMLParseError) as info:
        crypto.decrypt_callback(A2_SIGNATURE, A2_TIMESTAMP, A2_NONCE, b"<xml><A>1</A></xml>")
    assert info.value.code == -40002


@pytest.mark.parametrize(
    "key",
    [KEY[:-1], KEY + "A", KEY[:-1] + "+", KEY[:-1] + "=", "", "é" * 43],
    ids=["42-chars", "44-chars", "plus", "equals", "empty", "non-ascii"],
)
def test_40004_bad_encoding_aes_key(key: str) -> None:
    with pytest.raises(AESKeyError) as info:
        CallbackCrypto(TOKEN, key, CORP)
    assert info.value.code == -40004
    if key:
        assert key not in str(info.value)


def test_40005_other_receive_id(crypto: CallbackCrypto) -> None:
    other = CallbackCrypto(TOKEN, KEY, "wwsomeoneelse")
    with pytest.raises(ReceiveIdError) as info:
        other.decrypt(A2_ENCRYPT)
    assert info.value.code == -40005
    assert CORP not in str(info.value)


@pytest.mark.parametrize("size", [15, 20, 33])
def test_40007_ciphertext_not_whole_blocks(crypto: CallbackCrypto, size: int) -> None:
    with pytest.raises(DecryptError) as info:
        crypto.decrypt(base64.b64encode(b"x" * size).decode())
    assert info.value.code == -40007


def test_40008_pad_zero(crypto: CallbackCrypto) -> None:
    body = frame(b"<xml/>")
    forged = body + b"\x00" * (32 - len(body) % 32)
    with pytest.raises(BufferError_) as info:
        crypto.decrypt(raw_encrypt(forged))
    assert info.value.code == -40008


def test_40008_pad_33(crypto: CallbackCrypto) -> None:
    body = frame(b"<xml/>")
    forged = body + b"\x21" * (64 - len(body) % 32)
    assert len(forged) % 32 == 0 and forged.endswith(b"\x21" * 33)
    with pytest.raises(BufferError_):
        crypto.decrypt(raw_encrypt(forged))


def test_40008_unequal_pad_bytes(crypto: CallbackCrypto) -> None:
    padded = pad32(frame(b"<xml/>"))
    n = padded[-1]
    assert n >= 2
    forged = padded[:-2] + bytes([n ^ 1, n])
    with pytest.raises(BufferError_):
        crypto.decrypt(raw_encrypt(forged))


@pytest.mark.parametrize("length", [6 + len(CORP) + 1, 10**6, 2**32 - 1])
def test_40008_length_field_lies(crypto: CallbackCrypto, length: int) -> None:
    forged = pad32(frame(b"<xml/>", length=length))
    with pytest.raises(BufferError_):
        crypto.decrypt(raw_encrypt(forged))


def test_40008_body_shorter_than_header(crypto: CallbackCrypto) -> None:
    forged = b"R" * 10 + bytes([22]) * 22  # 32 bytes, valid padding, 10 bytes of body
    with pytest.raises(BufferError_):
        crypto.decrypt(raw_encrypt(forged))


@pytest.mark.parametrize(
    "encrypt",
    ["", "not base64!", "QUJD=", "QUJDRA=A", A2_ENCRYPT + "QUJD=", "é" * 8, A2_ENCRYPT[:-1]],
    ids=["empty", "alphabet", "surplus-pad", "inner-pad", "after-pad", "non-ascii", "truncated"],
)
def test_40010_bad_base64(crypto: CallbackCrypto, encrypt: str) -> None:
    with pytest.raises(Base64Error) as info:
        crypto.decrypt(encrypt)
    assert info.value.code == -40010


def test_space_for_plus_is_refused_not_patched(crypto: CallbackCrypto) -> None:
    # A framework that turned "+" into " " must fail loudly.
    mangled = A1_ECHOSTR.replace("+", " ")
    with pytest.raises(CryptoError):
        crypto.verify_url(
            crypto.signature(A1_TIMESTAMP, A1_NONCE, mangled), A1_TIMESTAMP, A1_NONCE, mangled
        )


def test_oversized_body_is_refused_before_any_crypto(crypto: CallbackCrypto) -> None:
    with pytest.raises(XMLParseError):
        crypto.decrypt_callback(A2_SIGNATURE, A2_TIMESTAMP, A2_NONCE, A2_BODY, max_bytes=100)


# ---------------------------------------------------------------- round trips


def test_round_trip_and_fresh_randomness(crypto: CallbackCrypto) -> None:
    msg = "<xml><Content>你好 ]]&gt;</Content></xml>".encode()
    first, second = crypto.encrypt(msg), crypto.encrypt(msg)
    assert first != second  # 16 fresh random bytes each time
    assert crypto.decrypt(first) == crypto.decrypt(second) == msg


def test_build_callback_is_what_decrypt_callback_accepts(crypto: CallbackCrypto) -> None:
    params, body = crypto.build_callback(
        A2_PLAINTEXT, timestamp="1700000000", nonce="n1", agent_id=218
    )
    assert set(params) == {"msg_signature", "timestamp", "nonce"}
    envelope = xmltodict.parse(body)["xml"]
    assert list(envelope) == ["ToUserName", "AgentID", "Encrypt"]
    assert envelope["ToUserName"] == CORP and envelope["AgentID"] == "218"
    assert b"<![CDATA[" in body
    got = crypto.decrypt_callback(
        params["msg_signature"], params["timestamp"], params["nonce"], body
    )
    assert got == A2_PLAINTEXT


def test_build_callback_without_agent_id(crypto: CallbackCrypto) -> None:
    _, body = crypto.build_callback(b"<xml/>", timestamp="1", nonce="n", agent_id=None)
    assert "AgentID" not in xmltodict.parse(body)["xml"]


def test_url_verification_round_trip(crypto: CallbackCrypto) -> None:
    params = crypto.build_url_verification(b"8422374619", timestamp="1700000000", nonce="n2")
    echo = crypto.verify_url(
        params["msg_signature"], params["timestamp"], params["nonce"], params["echostr"]
    )
    assert echo == b"8422374619"


@pytest.mark.parametrize("nonce", ["1372623149", "a]]>b<c&d"])
def test_encrypt_reply_is_the_passive_reply_envelope(crypto: CallbackCrypto, nonce: str) -> None:
    reply = crypto.encrypt_reply(b"<xml><Content>ok</Content></xml>", "1409659813", nonce)
    fields = xmltodict.parse(reply)["xml"]
    assert list(fields) == ["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]
    assert fields["TimeStamp"] == "1409659813" and fields["Nonce"] == nonce
    crypto.verify(fields["MsgSignature"], "1409659813", nonce, fields["Encrypt"])
    assert crypto.decrypt(fields["Encrypt"]) == b"<xml><Content>ok</Content></xml>"


# ---------------------------------------------------------------- wechatpy, both ways


@pytest.fixture
def wechatpy() -> WeChatCrypto:
    return WeChatCrypto(TOKEN, KEY, CORP)


def test_wechatpy_reads_tencents_vectors_like_we_do(wechatpy: WeChatCrypto) -> None:
    assert wechatpy.check_signature(A1_SIGNATURE, A1_TIMESTAMP, A1_NONCE, A1_ECHOSTR) == (
        "1616140317555161061"
    )
    text = wechatpy.decrypt_message(A2_BODY, A2_SIGNATURE, A2_TIMESTAMP, A2_NONCE)
    assert text.encode() == A2_PLAINTEXT


def test_we_decrypt_what_wechatpy_encrypts(crypto: CallbackCrypto, wechatpy: WeChatCrypto) -> None:
    msg = "<xml><Content><![CDATA[回复: 你好]]></Content></xml>"
    reply = wechatpy.encrypt_message(msg, "nonce42", "1700000001")
    signature = xmltodict.parse(reply)["xml"]["MsgSignature"]
    got = crypto.decrypt_callback(signature, "1700000001", "nonce42", reply.encode())
    assert got == msg.encode()


def test_wechatpy_decrypts_what_we_encrypt(crypto: CallbackCrypto, wechatpy: WeChatCrypto) -> None:
    msg = "<xml><Content><![CDATA[消息 hello]]></Content></xml>".encode()
    params, body = crypto.build_callback(msg, timestamp="1700000002", nonce="n3", agent_id=1000002)
    got = wechatpy.decrypt_message(
        body, params["msg_signature"], params["timestamp"], params["nonce"]
    )
    assert got.encode() == msg
    reply = crypto.encrypt_reply(msg, "1700000003", "n4")
    signature = xmltodict.parse(reply)["xml"]["MsgSignature"]
    assert wechatpy.decrypt_message(reply, signature, "1700000003", "n4").encode() == msg
    params = crypto.build_url_verification(b"123456789", timestamp="1700000004", nonce="n5")
    echo = wechatpy.check_signature(
        params["msg_signature"], params["timestamp"], params["nonce"], params["echostr"]
    )
    assert echo == "123456789"


# ---------------------------------------------------------------- keys and secrecy


def test_keygen_output_is_accepted_and_fresh() -> None:
    token, key = generate_token(), generate_encoding_aes_key()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", token)
    assert re.fullmatch(r"[A-Za-z0-9]{43}", key)
    assert (token, key) != (generate_token(), generate_encoding_aes_key())
    crypto = CallbackCrypto(token, key, "wwcorp")
    assert crypto.decrypt(crypto.encrypt(b"hi")) == b"hi"
    assert (
        WeChatCrypto(token, key, "wwcorp").check_signature(
            crypto.signature("1", "2", enc := crypto.encrypt(b"hey")), "1", "2", enc
        )
        == "hey"
    )


def test_repr_shows_no_secret(crypto: CallbackCrypto) -> None:
    shown = repr(crypto) + str(crypto)
    for secret in (TOKEN, KEY, aes_key().hex(), repr(aes_key()), repr(aes_key()[:16])):
        assert secret not in shown
    assert CORP in shown
    assert not hasattr(crypto, "__dict__")


def test_empty_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="token"):
        CallbackCrypto("", KEY, CORP)


# ---------------------------------------------------------------- properties


@given(msg=st.binary(max_size=4096), receive_id=st.text(max_size=64))
def test_round_trip_any_bytes_any_receive_id(msg: bytes, receive_id: str) -> None:
    crypto = CallbackCrypto(TOKEN, KEY, receive_id)
    encrypted = crypto.encrypt(msg)
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert crypto.decrypt(encrypted) == msg


@given(data=st.binary(min_size=1, max_size=512))
def test_random_ciphertext_raises_crypto_errors_only(data: bytes) -> None:
    crypto = CallbackCrypto(TOKEN, KEY, CORP)
    # Valid padding, length and an 18-byte receive-id by chance: never in practice.
    with pytest.raises(CryptoError):
        crypto.decrypt(base64.b64encode(data).decode())


@given(text=st.text(max_size=200))
def test_arbitrary_text_raises_crypto_errors_only(text: str) -> None:
    crypto = CallbackCrypto(TOKEN, KEY, CORP)
    with pytest.raises(CryptoError):
        crypto.verify(text, text, text, text)
    with pytest.raises(CryptoError):
        crypto.decrypt(text)
