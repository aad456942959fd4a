"""WeCom callback crypto: SHA1 signatures, AES-256-CBC with 32-byte PKCS#7, receive-id check.

WeCom's callback encryption scheme (加解密方案), its passive reply envelope, checked against the
vectors of Tencent's official sample (tests/test_crypto.py). Pure: no I/O, no
logging. ``CallbackCrypto`` is built once per app and is safe to share between threads and
tasks. Every failure raises the ``CryptoError`` subclass carrying WeCom's library code; messages
never contain the token, the key or any plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import string
from xml.sax.saxutils import escape

from Crypto.Cipher import AES
from Crypto.Util.strxor import strxor

from shared.errors import (
    AESKeyError,
    Base64Error,
    BufferError_,
    ConfigError,
    DecryptError,
    EncryptError,
    ReceiveIdError,
    SignatureError,
)
from shared.protocol.parser import DEFAULT_MAX_BYTES, parse_envelope

__all__ = ["CallbackCrypto", "generate_encoding_aes_key", "generate_token"]

_BLOCK = 32  # WeCom pads to 32-byte blocks, not AES's 16
_PADS = [bytes((n,)) * n for n in range(_BLOCK + 1)]
_KEY_RE = re.compile(r"[A-Za-z0-9]{43}")
_ALNUM = string.ascii_letters + string.digits


def _b64decode(data: str) -> bytes:
    # strict_mode refuses characters outside the alphabet and data after the padding; the
    # length test also refuses surplus "=" that strict_mode lets through ("QUJD=").
    if not data or len(data) % 4:
        raise Base64Error("not base64 of a whole number of quads")
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise Base64Error("not valid base64") from None


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA: close the section and open a new one around it.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


class CallbackCrypto:
    """Signs, verifies, encrypts and decrypts the callbacks of one WeCom app.

    ``receive_id`` is the CorpID for a self-built app.
    """

    __slots__ = ("_ecb", "_iv", "_key", "_receive_id", "_receive_id_bytes", "_token")

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not token:
            raise ConfigError("token", "must not be empty")
        if not isinstance(encoding_aes_key, str) or not _KEY_RE.fullmatch(encoding_aes_key):
            raise AESKeyError("EncodingAESKey must be 43 characters of A-Z, a-z, 0-9")
        key = base64.b64decode(encoding_aes_key + "=")
        if len(key) != 32:  # cannot happen for 43 base64 characters; kept as the spec's rule
            raise AESKeyError("EncodingAESKey does not decode to 32 bytes")
        self._token = token
        self._key = key
        self._iv = key[:16]
        # CBC decryption is ECB decryption XOR the previous ciphertext block; a reusable,
        # stateless ECB object saves the key schedule on every call (timed: ~2x faster).
        self._ecb = AES.new(key, AES.MODE_ECB)
        self._receive_id = receive_id
        self._receive_id_bytes = receive_id.encode()

    def __repr__(self) -> str:
        return f"CallbackCrypto(receive_id={self._receive_id!r})"

    @property
    def receive_id(self) -> str:
        return self._receive_id

    # ------------------------------------------------------------ signature

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """SHA1 over the sorted concatenation of token, timestamp, nonce and encrypt."""
        joined = "".join(sorted((self._token, timestamp, nonce, encrypt)))
        return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324 - WeCom mandates SHA1

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        try:
            expected = self.signature(timestamp, nonce, encrypt)
        except UnicodeEncodeError:
            raise SignatureError("parameters are not valid text") from None
        if not (msg_signature.isascii() and hmac.compare_digest(expected, msg_signature)):
            raise SignatureError("msg_signature does not match")

    # ------------------------------------------------------------ AES

    def decrypt(self, encrypt_b64: str) -> bytes:
        """Base64 ciphertext → the msg bytes, after padding, length and receive-id checks.

        Verify the signature first (``verify_url``/``decrypt_callback`` do): the padding check
        is not constant-time, so unauthenticated input must not reach it.
        """
        ciphertext = _b64decode(encrypt_b64)
        if not ciphertext or len(ciphertext) % 16:
            raise DecryptError("ciphertext is not a whole number of AES blocks")
        raw = strxor(self._ecb.decrypt(ciphertext), self._iv + ciphertext[:-16])
        pad = raw[-1]
        if not 1 <= pad <= _BLOCK or not raw.endswith(_PADS[pad]):
            raise BufferError_("bad PKCS#7 padding")
        end = len(raw) - pad
        if end < 20:
            raise BufferError_("plaintext shorter than its header")
        msg_end = 20 + int.from_bytes(raw[16:20], "big")
        if msg_end > end:
            raise BufferError_("length field exceeds the plaintext")
        if not hmac.compare_digest(raw[msg_end:end], self._receive_id_bytes):
            raise ReceiveIdError("receive-id does not match")
        return raw[20:msg_end]

    def encrypt(self, msg: bytes, *, random_prefix: bytes | None = None) -> str:
        """msg → base64 ciphertext; ``random_prefix`` (16 bytes) only for reproducible tests."""
        prefix = os.urandom(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise EncryptError("random prefix must be 16 bytes")
        if len(msg) >= 1 << 32:
            raise EncryptError("message too long for the 4-byte length field")
        body = b"".join((prefix, len(msg).to_bytes(4, "big"), msg, self._receive_id_bytes))
        padded = body + _PADS[_BLOCK - len(body) % _BLOCK]
        ciphertext = AES.new(self._key, AES.MODE_CBC, self._iv).encrypt(padded)
        return base64.b64encode(ciphertext).decode("ascii")

    # ------------------------------------------------------------ callbacks

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> bytes:
        """GET URL verification: ``echostr`` already URL-decoded; returns the body to answer."""
        self.verify(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_callback(
        self,
        msg_signature: str,
        timestamp: str,
        nonce: str,
        body: bytes,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> bytes:
        """POST callback: envelope → signature over <Encrypt> → plaintext XML bytes.

        The envelope's AgentID is not signed; check the AgentID inside the plaintext instead.
        """
        envelope = parse_envelope(body, max_bytes=max_bytes)
        self.verify(msg_signature, timestamp, nonce, envelope.encrypt)
        return self.decrypt(envelope.encrypt)

    def encrypt_reply(self, plaintext: bytes, timestamp: str, nonce: str) -> bytes:
        """The encrypted passive-reply envelope (Encrypt, MsgSignature, TimeStamp, Nonce)."""
        encrypted = self.encrypt(plaintext)
        signature = self.signature(timestamp, nonce, encrypted)
        return (
            f"<xml>\n<Encrypt>{_cdata(encrypted)}</Encrypt>\n"
            f"<MsgSignature>{_cdata(signature)}</MsgSignature>\n"
            f"<TimeStamp>{escape(timestamp)}</TimeStamp>\n"
            f"<Nonce>{_cdata(nonce)}</Nonce>\n</xml>"
        ).encode()

    # ------------------------------------------------------------ WeCom's side (tests, fake)

    def build_callback(
        self, plaintext: bytes, *, timestamp: str, nonce: str, agent_id: int | None
    ) -> tuple[dict[str, str], bytes]:
        """What WeCom sends for ``plaintext``: the query parameters and the envelope body."""
        encrypted = self.encrypt(plaintext)
        params = {
            "msg_signature": self.signature(timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        agent = "" if agent_id is None else f"<AgentID>{_cdata(str(agent_id))}</AgentID>"
        body = (
            f"<xml><ToUserName>{_cdata(self._receive_id)}</ToUserName>{agent}"
            f"<Encrypt>{_cdata(encrypted)}</Encrypt></xml>"
        )
        return params, body.encode()

    def build_url_verification(self, echo: bytes, *, timestamp: str, nonce: str) -> dict[str, str]:
        """Query parameters of WeCom's GET handshake whose expected answer is ``echo``."""
        encrypted = self.encrypt(echo)
        return {
            "msg_signature": self.signature(timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": encrypted,
        }


def generate_token() -> str:
    """A fresh callback Token: 32 random letters and digits (WeCom allows at most 32)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(32))


def generate_encoding_aes_key() -> str:
    """A fresh EncodingAESKey: 43 random letters and digits, as the WeCom console makes them."""
    return "".join(secrets.choice(_ALNUM) for _ in range(43))
