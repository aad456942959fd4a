"""Write the callback corpus: ``python -m tests.corpus.make_corpus`` (run once; output kept).

Hostile and malformed callbacks, each with its 4xx, and authentic callbacks of odd shape
(status 200: correctly signed and encrypted, so WeCom's, and stored whole whatever they hold).

Each case is ``cases/<name>.toml`` (description, method, path, raw query, expected status, and
optionally the body file, how often to repeat it and whether to send it chunked)
plus ``cases/<name>.body`` when it has a body. Everything is built with the test app of
``tests/helpers.py`` (Token, EncodingAESKey, CorpID, AgentID fixed there), a fixed timestamp and
fixed random prefixes, so running this again writes the same bytes. The fixed timestamp means
the corpus is replayed with ``INGRESS_MAX_CLOCK_SKEW=0``; huge bodies assume
``INGRESS_MAX_BODY=65536`` (see tests/test_corpus.py). ``control.toml`` is the same callback
done right: it must be accepted, or the refusals prove nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from urllib.parse import quote, urlencode

from Crypto.Cipher import AES

from shared.protocol.crypto import CallbackCrypto
from tests.helpers import AES_KEY, AGENT_ID, CORP_ID, TOKEN, framed, pkcs7_32, raw_encrypt

HERE = Path(__file__).parent
CASES = HERE / "cases"
TS = "1700000000"
NONCE = "1372623149"
PREFIX = b"corpus-prefix-16"
MAX_BODY = 65536  # the INGRESS_MAX_BODY the corpus test runs with

CRYPTO = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)


def text_plain(
    *, agent_id: int | str = AGENT_ID, content: str = "corpus", msg_id: int = 7000000000000000001
) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        "<FromUserName><![CDATA[alice]]></FromUserName><CreateTime>1700000000</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msg_id}</MsgId><AgentID>{agent_id}</AgentID></xml>"
    ).encode()


def encrypt(plain: bytes) -> str:
    return CRYPTO.encrypt(plain, random_prefix=PREFIX)


def envelope(encrypt_field: str) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt_field}]]></Encrypt>"
        f"<AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>"
    ).encode()


def query(encrypt_field: str, **override: str | None) -> str:
    """The signed query for ``encrypt_field``; ``override`` replaces (None: drops) a parameter."""
    params: dict[str, str | None] = {
        "msg_signature": CRYPTO.signature(TS, NONCE, encrypt_field),
        "timestamp": TS,
        "nonce": NONCE,
        **override,
    }
    return urlencode({k: v for k, v in params.items() if v is not None})


GOOD_ENC = encrypt(text_plain())
GOOD_Q = query(GOOD_ENC)
GOOD_BODY = envelope(GOOD_ENC)


class Corpus:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: set[str] = set()

    def add(
        self,
        name: str,
        description: str,
        status: int,
        *,
        q: str = GOOD_Q,
        body: bytes | None = GOOD_BODY,
        method: str = "POST",
        path: str = "/callback",
        repeat: int = 1,
        chunked: bool = False,
    ) -> None:
        assert name not in self.names, name
        self.names.add(name)
        lines = [
            f"description = {json.dumps(description)}",
            f"method = {json.dumps(method)}",
            f"path = {json.dumps(path)}",
            f"query = {json.dumps(q)}",
            f"status = {status}",
        ]
        if body is not None:
            (self.folder / f"{name}.body").write_bytes(body)
            lines.append(f"body = {json.dumps(name + '.body')}")
        if repeat != 1:
            lines.append(f"repeat = {repeat}")
        if chunked:
            lines.append("chunked = true")
        (self.folder / f"{name}.toml").write_text("\n".join(lines) + "\n")

    def signed(self, name: str, description: str, status: int, encrypt_field: str) -> None:
        """A correctly signed envelope around a hostile Encrypt."""
        self.add(name, description, status, q=query(encrypt_field), body=envelope(encrypt_field))

    def sealed(self, name: str, description: str, status: int, frame: bytes) -> None:
        """A correctly signed envelope around AES over a frame we built ourselves."""
        self.signed(name, description, status, raw_encrypt(frame))

    def plain(self, name: str, description: str, status: int, plaintext: bytes) -> None:
        """Correct crypto around a hostile decrypted message."""
        self.sealed(name, description, status, pkcs7_32(framed(plaintext)))


# One line per case where it fits: (name, description, status, what differs from the control).
# fmt: off
def query_cases(c: Corpus) -> None:
    sig, enc = CRYPTO.signature(TS, NONCE, GOOD_ENC), GOOD_ENC
    c.add("q_missing_signature", "no msg_signature", 400, q=query(enc, msg_signature=None))
    c.add("q_missing_timestamp", "no timestamp", 400, q=query(enc, timestamp=None))
    c.add("q_missing_nonce", "no nonce", 400, q=query(enc, nonce=None))
    c.add("q_no_query", "no query string at all", 400, q="")
    c.add("q_repeated_signature", "msg_signature twice", 400, q=f"{GOOD_Q}&msg_signature={sig}")
    c.add("q_repeated_timestamp", "timestamp twice", 400, q=f"{GOOD_Q}&timestamp={TS}")
    c.add("q_empty_signature", "msg_signature present but empty", 400,
          q=query(enc, msg_signature=""))
    c.add("q_timestamp_letters", "timestamp is not a number", 400, q=query(enc, timestamp="abc"))
    c.add("q_timestamp_negative", "timestamp with a minus sign", 400,
          q=query(enc, timestamp="-1700000000"))
    c.add("q_timestamp_float", "timestamp with a fraction", 400,
          q=query(enc, timestamp="1700000000.5"))
    c.add("q_timestamp_huge", "timestamp of 30 digits", 400, q=query(enc, timestamp="9" * 30))
    c.add("q_timestamp_unicode_digits", "timestamp in Arabic-Indic digits (isdigit() is True)",
          400, q=query(enc, timestamp="١٧٠٠٠٠٠٠٠٠"))
    c.add("q_bad_percent_encoding", "query with broken percent escapes and raw bytes", 400,
          q="msg_signature=%ZZ&timestamp=%&nonce=%FF%FE")
    c.add("sig_zeros", "signature of forty zeros", 403, q=query(enc, msg_signature="0" * 40))
    c.add("sig_uppercase", "the right signature in upper-case hex", 403,
          q=query(enc, msg_signature=sig.upper()))
    c.add("sig_truncated", "the right signature minus its last digit", 403,
          q=query(enc, msg_signature=sig[:-1]))
    c.add("sig_non_ascii", "signature with non-ASCII characters", 403,
          q=query(enc, msg_signature="é" * 40))
    c.add("sig_other_nonce", "nonce changed after signing (replay with a new nonce)", 403,
          q=query(enc, msg_signature=sig, nonce="1"))
    c.add("sig_nul_in_nonce", "NUL byte appended to the signed nonce", 403,
          q=query(enc, msg_signature=sig, nonce=NONCE + "\0"))
    other = CallbackCrypto("SomeOtherToken", AES_KEY, CORP_ID).signature(TS, NONCE, enc)
    c.add("sig_other_token", "signed with another app's Token", 403,
          q=query(enc, msg_signature=other))


def envelope_cases(c: Corpus) -> None:
    enc, good = GOOD_ENC, GOOD_BODY
    inner = f"<Encrypt><![CDATA[{enc}]]></Encrypt>".encode()
    c.add("body_empty", "empty body", 400, body=b"")
    c.add("body_not_xml", "plain text body", 400, body=b"hello wecom")
    c.add("body_json", "JSON instead of XML", 400, body=json.dumps({"Encrypt": enc}).encode())
    c.add("body_truncated", "valid envelope cut in half", 400, body=good[: len(good) // 2])
    c.add("body_trailing_document", "a second root element after </xml>", 400,
          body=good + b"<xml></xml>")
    c.add("body_root_not_xml", "signed Encrypt under a root that is not <xml>", 400,
          body=b"<root>" + inner + b"</root>")
    c.add("body_missing_encrypt", "envelope without <Encrypt>", 400,
          body=f"<xml><ToUserName>{CORP_ID}</ToUserName></xml>".encode())
    c.add("body_empty_encrypt", "<Encrypt/> with nothing in it", 400, q=query(""),
          body=b"<xml><Encrypt></Encrypt></xml>")
    c.add("body_duplicate_encrypt", "two <Encrypt> elements, the first one signed", 400,
          body=b"<xml>" + inner + b"<Encrypt>QUJD</Encrypt></xml>")
    c.add("body_encrypt_with_child", "<Encrypt> holding an element", 400,
          body=f"<xml><Encrypt>{enc}<b>x</b></Encrypt></xml>".encode())
    c.add("body_cdata_smuggled_element", "CDATA closed early to slip an element into <Encrypt>",
          400, body=b"<xml><Encrypt>" + inner[9:-10] + b"<Encrypt>QUJD</Encrypt></Encrypt></xml>")
    c.add("body_cdata_unterminated", "CDATA section never closed", 400,
          body=f"<xml><Encrypt><![CDATA[{enc}</Encrypt></xml>".encode())
    c.add("body_cdata_stray_end", "a stray ]]> in character data", 400,
          body=f"<xml><Encrypt>{enc}]]></Encrypt></xml>".encode())
    levels = b"".join(b'<!ENTITY a%d "%s">' % (i, b"&a%d;" % (i - 1) * 10) for i in range(1, 10))
    c.add("body_entity_bomb", "billion laughs in the envelope", 400,
          body=b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a0 "ha">' + levels
          + b"]><xml><Encrypt>&a9;</Encrypt></xml>")
    c.add("body_quadratic_blowup", "one 50 KB entity referenced many times", 400,
          body=b'<!DOCTYPE xml [<!ENTITY a "' + b"x" * 50_000 + b'">]><xml><Encrypt>'
          + b"&a;" * 300 + b"</Encrypt></xml>")
    c.add("body_xxe_file", "external entity reading /etc/passwd", 400,
          body=b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
          b"<xml><Encrypt>&e;</Encrypt></xml>")
    c.add("body_xxe_parameter_entity", "external parameter entity fetched over HTTP", 400,
          body=b'<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
          b"<xml><Encrypt>QUJD</Encrypt></xml>")
    c.add("body_external_dtd", "DOCTYPE naming an external DTD", 400,
          body=b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/x.dtd"><xml>' + inner + b"</xml>")
    c.add("body_deep_nesting", "5,000 nested elements", 400,
          body=b"<xml>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</xml>")
    c.add("body_latin1", "Latin-1 bytes that are not UTF-8", 400,
          body=b"<xml><ToUserName>caf\xe9</ToUserName>" + inner + b"</xml>")
    c.add("body_declared_latin1", "encoding=ISO-8859-1 declared, non-UTF-8 byte inside", 400,
          body=b'<?xml version="1.0" encoding="ISO-8859-1"?><xml><ToUserName>\xe9</ToUserName>'
          + inner + b"</xml>")
    c.add("body_utf16_bom", "the valid envelope in UTF-16 with a BOM", 400,
          body=good.decode().encode("utf-16"))
    c.add("body_utf16_no_bom", "the valid envelope in UTF-16-LE without a BOM", 400,
          body=good.decode().encode("utf-16-le"))
    c.add("body_nul_bytes", "NUL bytes inside the envelope", 400,
          body=good.replace(b"<Encrypt>", b"<Encrypt>\0\0"))
    c.add("body_huge", "10 MB body with a Content-Length", 413,
          body=b"<xml>" + b"A" * 1019 + b"\n", repeat=10_240)
    c.add("body_huge_chunked", "1 MB body sent chunked (no Content-Length)", 413,
          body=b"B" * 1023 + b"\n", repeat=1024, chunked=True)
    oversize = "A" * (MAX_BODY + 4)
    c.add("body_oversize_encrypt", "signed <Encrypt> larger than INGRESS_MAX_BODY", 413,
          q=query(oversize), body=envelope(oversize))


def crypto_cases(c: Corpus) -> None:
    good, enc = pkcs7_32(framed(text_plain())), GOOD_ENC
    urlsafe = enc.replace("+", "-").replace("/", "_")
    assert urlsafe != enc
    c.signed("enc_bad_base64", "Encrypt is not base64", 400, "not*base64!")
    c.signed("enc_urlsafe_base64", "URL-safe base64 alphabet (- and _)", 400, urlsafe)
    c.signed("enc_surplus_padding", "valid base64 followed by ====", 400, enc + "====")
    c.signed("enc_whitespace", "a newline in the middle of the base64", 400,
             enc[:40] + "\n" + enc[40:])
    c.signed("enc_cut", "base64 with its last character cut", 400, enc[:-1])
    c.signed("enc_not_whole_blocks", "ciphertext of 40 bytes (not AES blocks)", 400,
             base64.b64encode(bytes(40)).decode())
    c.signed("enc_short", "ciphertext of 15 bytes", 400, base64.b64encode(bytes(15)).decode())
    c.sealed("enc_pad_zero", "PKCS#7 pad byte 0", 400, framed(text_plain()).ljust(320, b"\0")[:320])
    c.sealed("enc_pad_33", "PKCS#7 pad byte 33 (over the 32-byte block)", 400,
             good[:-1] + b"\x21")
    c.sealed("enc_pad_unequal", "PKCS#7 pad bytes that differ", 400,
             good[:-2] + b"\x01" + good[-1:])
    c.sealed("enc_pad_only", "a block of padding, no header", 400, b"\x20" * 32)
    c.sealed("enc_length_too_long", "length field beyond the plaintext", 400,
             pkcs7_32(framed(text_plain(), length=10**6)))
    c.sealed("enc_length_max", "length field 0xFFFFFFFF", 400,
             pkcs7_32(framed(text_plain(), length=0xFFFFFFFF)))
    c.sealed("enc_length_too_short", "length field short: the receive-id check sees XML bytes",
             403, pkcs7_32(framed(text_plain(), length=10)))
    c.sealed("enc_wrong_corp", "receive-id of another corp", 403,
             pkcs7_32(framed(text_plain(), b"wwOTHERcorp0002")))
    c.sealed("enc_empty_receive_id", "no receive-id after the message", 403,
             pkcs7_32(framed(text_plain(), b"")))
    c.sealed("enc_corp_prefix", "receive-id with an extra character", 403,
             pkcs7_32(framed(text_plain(), CORP_ID.encode() + b"x")))
    key = base64.b64decode("Z" * 43 + "=")
    other = AES.new(key, AES.MODE_CBC, key[:16]).encrypt(good)
    c.signed("enc_other_key", "encrypted under another EncodingAESKey", 400,
             base64.b64encode(other).decode())


def plaintext_cases(c: Corpus) -> None:
    bomb = (b'<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>')
    text = text_plain()
    c.plain("plain_not_xml", "decrypts to plain text", 400, b"just some text")
    c.plain("plain_empty", "decrypts to nothing (length 0)", 400, b"")
    c.plain("plain_truncated", "decrypts to half a message", 400, text[:80])
    c.plain("plain_entity_bomb", "entity expansion inside the message", 400,
            bomb + text.replace(b"corpus", b"&c;"))
    c.plain("plain_xxe", "external entity inside the message", 400,
            b'<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + text.replace(b"<![CDATA[corpus]]>", b"&e;"))
    c.plain("plain_deep_nesting", "5,000 nested elements in the message", 400,
            b"<xml>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</xml>")
    c.plain("plain_latin1", "message content in Latin-1", 400,
            text.replace(b"corpus", "café".encode("latin-1")))
    c.plain("plain_utf16_bom", "message in UTF-16 with a BOM", 400, text.decode().encode("utf-16"))
    c.plain("plain_utf16_no_bom", "message in UTF-16-BE without a BOM", 400,
            text.decode().encode("utf-16-be"))
    c.plain("plain_nul_byte", "NUL byte inside the message", 400,
            text.replace(b"corpus", b"cor\0pus"))
    c.plain("plain_wrong_agent_id", "AgentID inside the message is another app's", 403,
            text_plain(agent_id=999))
    c.plain("plain_agent_id_text", "AgentID inside the message is not a number", 403,
            text_plain(agent_id="abc"))
    odd_cases(c)


def odd_cases(c: Corpus) -> None:
    """Authentic (signed, encrypted, for this corp) but odd: stored whole, answered 200."""
    c.plain("plain_root_not_xml", "authentic message whose root is not <xml>: stored", 200,
            text_plain(msg_id=7000000000000000002).replace(b"<xml>", b"<doc>")
            .replace(b"</xml>", b"</doc>"))
    c.plain("plain_text_root", "authentic message whose <xml> holds only text: stored", 200,
            b"<xml>hello</xml>")
    c.plain("plain_missing_fields", "authentic message without ToUserName, FromUserName, "
            "CreateTime: stored", 200, b"<xml><MsgType>text</MsgType><Content>x</Content></xml>")
    c.plain("plain_kf_event", "authentic 微信客服 event, no FromUserName nor AgentID: stored", 200,
            b"<xml><ToUserName>ww</ToUserName><CreateTime>1700000000</CreateTime>"
            b"<MsgType>event</MsgType><Event>kf_msg_or_event</Event><Token>T</Token>"
            b"<OpenKfId>wk1</OpenKfId></xml>")
    c.plain("plain_create_time_text", "authentic message whose CreateTime is not a number: "
            "stored", 200, text_plain(msg_id=7000000000000000003)
            .replace(b"1700000000", b"yesterday"))


def request_cases(c: Corpus) -> None:
    c.add("m_put", "PUT instead of POST", 405, method="PUT")
    c.add("m_delete", "DELETE", 405, method="DELETE", body=None)
    c.add("m_patch", "PATCH", 405, method="PATCH")
    c.add("path_unknown_app", "a valid callback for an app that is not configured", 404,
          path="/callback/nope")
    c.add("path_traversal", "encoded ../ in the app name", 404,
          path="/callback/..%2F..%2Fetc%2Fpasswd")
    c.add("get_no_echostr", "URL verification without echostr", 400, method="GET", body=None)

    def get(name: str, description: str, status: int, echostr: str, signed: bool = True) -> None:
        sig = CRYPTO.signature(TS, NONCE, echostr) if signed else "0" * 40
        params = {"msg_signature": sig, "timestamp": TS, "nonce": NONCE, "echostr": echostr}
        q = urlencode(params, quote_via=quote)
        c.add(name, description, status, method="GET", q=q, body=None)

    echo = CRYPTO.encrypt(b"7361002938114", random_prefix=PREFIX)
    get("get_bad_signature", "URL verification with a wrong signature", 403, echo, signed=False)
    get("get_echostr_bad_base64", "signed echostr that is not base64", 400, "%%%not-base64")
    get("get_echostr_wrong_corp", "signed echostr sealed for another corp", 403,
        raw_encrypt(pkcs7_32(framed(b"123", b"wwOTHERcorp0002"))))
    get("get_echostr_lying_length", "signed echostr with a lying length field", 400,
        raw_encrypt(pkcs7_32(framed(b"123", length=4096))))
# fmt: on


def write(root: Path = HERE) -> int:
    """(Re)write ``root/cases`` and ``root/control.*``; returns the number of cases."""
    cases = root / "cases"
    if cases.exists():
        shutil.rmtree(cases)
    cases.mkdir(parents=True)
    corpus = Corpus(cases)
    query_cases(corpus)
    envelope_cases(corpus)
    crypto_cases(corpus)
    plaintext_cases(corpus)
    request_cases(corpus)
    (root / "control.body").write_bytes(GOOD_BODY)
    (root / "control.toml").write_text(
        'description = "the corpus callback done right: must be accepted"\n'
        f'method = "POST"\npath = "/callback"\nquery = {json.dumps(GOOD_Q)}\nstatus = 200\n'
        'body = "control.body"\n'
    )
    return len(corpus.names)


if __name__ == "__main__":
    print(f"wrote {write()} cases to {CASES}")
