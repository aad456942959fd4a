"""A callback crypto class written the way Tencent's Python sample (WXBizMsgCrypt) is written.

This is the baseline "usual receiver" crypto, deliberately NOT our ``CallbackCrypto``: it keeps
the sample's habits that cost time on every request — a new AES cipher object per call, a PKCS7
helper class padding with ``chr``-built strings, an ElementTree parse of the envelope, a
``random.sample`` nonce prefix, ``struct``/``socket`` byte-order juggling, string concatenation
and ``(ret, value)`` tuples instead of exceptions. Written for this benchmark from the protocol
description (WeCom's callback encryption scheme, 加解密方案), not copied.
"""

from __future__ import annotations

import base64
import hashlib
import random
import socket
import string
import struct
import time
import xml.etree.ElementTree as ET

from Crypto.Cipher import AES

__all__ = ["WXBizMsgCryptLike"]

OK = 0
VALIDATE_SIGNATURE_ERROR = -40001
PARSE_XML_ERROR = -40002
COMPUTE_SIGNATURE_ERROR = -40003
ILLEGAL_AES_KEY = -40004
VALIDATE_CORPID_ERROR = -40005
ENCRYPT_AES_ERROR = -40006
DECRYPT_AES_ERROR = -40007
ILLEGAL_BUFFER = -40008

REPLY_TEMPLATE = (
    "<xml>\n<Encrypt><![CDATA[%(msg_encrypt)s]]></Encrypt>\n"
    "<MsgSignature><![CDATA[%(msg_signaturet)s]]></MsgSignature>\n"
    "<TimeStamp>%(timestamp)s</TimeStamp>\n<Nonce><![CDATA[%(nonce)s]]></Nonce>\n</xml>"
)


class FormatError(Exception):
    pass


class SHA1:
    """Signature over the sorted token, timestamp, nonce and ciphertext."""

    def get_sha1(self, token: str, timestamp: str, nonce: str, encrypt: str) -> tuple[int, str]:
        try:
            parts = [token, timestamp, nonce, encrypt]
            parts.sort()
            sha = hashlib.sha1()
            sha.update("".join(parts).encode())
            return OK, sha.hexdigest()
        except Exception:
            return COMPUTE_SIGNATURE_ERROR, ""


class XMLParse:
    """ElementTree in, %-template out, as the sample does."""

    def extract(self, xmltext: str) -> tuple[int, str, str]:
        try:
            root = ET.fromstring(xmltext)
            encrypt = root.find("Encrypt")
            to_user = root.find("ToUserName")
            if encrypt is None or encrypt.text is None:
                return PARSE_XML_ERROR, "", ""
            return OK, encrypt.text, to_user.text if to_user is not None and to_user.text else ""
        except Exception:
            return PARSE_XML_ERROR, "", ""

    def generate(self, encrypt: str, signature: str, timestamp: str, nonce: str) -> str:
        return REPLY_TEMPLATE % {
            "msg_encrypt": encrypt,
            "msg_signaturet": signature,
            "timestamp": timestamp,
            "nonce": nonce,
        }


class PKCS7Encoder:
    """PKCS#7 to WeCom's 32-byte blocks."""

    block_size = 32

    def encode(self, text: bytes) -> bytes:
        text_length = len(text)
        amount_to_pad = self.block_size - (text_length % self.block_size)
        if amount_to_pad == 0:
            amount_to_pad = self.block_size
        pad = chr(amount_to_pad)
        return text + (pad * amount_to_pad).encode()

    def decode(self, decrypted: bytes) -> bytes:
        pad = decrypted[-1]
        if pad < 1 or pad > 32:
            pad = 0
        return decrypted[:-pad]


class Prpcrypt:
    """AES-CBC with the key's first 16 bytes as IV; a new cipher object on every call."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.mode = AES.MODE_CBC

    def encrypt(self, text: str, receiveid: str) -> tuple[int, bytes]:
        raw = text.encode()
        raw = (
            self.get_random_str()
            + struct.pack("I", socket.htonl(len(raw)))
            + raw
            + receiveid.encode()
        )
        pkcs7 = PKCS7Encoder()
        raw = pkcs7.encode(raw)
        try:
            cryptor = AES.new(self.key, self.mode, self.key[:16])
            ciphertext = cryptor.encrypt(raw)
            return OK, base64.b64encode(ciphertext)
        except Exception:
            return ENCRYPT_AES_ERROR, b""

    def decrypt(self, text: str, receiveid: str) -> tuple[int, bytes]:
        try:
            cryptor = AES.new(self.key, self.mode, self.key[:16])
            plain_text = cryptor.decrypt(base64.b64decode(text))
        except Exception:
            return DECRYPT_AES_ERROR, b""
        try:
            pad = plain_text[-1]
            content = plain_text[16:-pad]
            xml_len = socket.ntohl(struct.unpack("I", content[:4])[0])
            xml_content = content[4 : xml_len + 4]
            from_receiveid = content[xml_len + 4 :]
        except Exception:
            return ILLEGAL_BUFFER, b""
        if from_receiveid.decode("utf8") != receiveid:
            return VALIDATE_CORPID_ERROR, b""
        return OK, xml_content

    def get_random_str(self) -> bytes:
        rule = string.ascii_letters + string.digits
        return "".join(random.sample(rule, 16)).encode()


class WXBizMsgCryptLike:
    """VerifyURL, EncryptMsg and DecryptMsg with the sample's names, arguments and returns."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        try:
            self.key = base64.b64decode(encoding_aes_key + "=")
            assert len(self.key) == 32
        except Exception:
            raise FormatError("[error]: EncodingAESKey invalid !") from None
        self.m_sToken = token
        self.m_sReceiveId = receive_id

    def VerifyURL(
        self,
        sMsgSignature: str,
        sTimeStamp: str,
        sNonce: str,
        sEchoStr: str,
    ) -> tuple[int, bytes]:
        sha1 = SHA1()
        ret, signature = sha1.get_sha1(self.m_sToken, sTimeStamp, sNonce, sEchoStr)
        if ret != 0:
            return ret, b""
        if signature != sMsgSignature:
            return VALIDATE_SIGNATURE_ERROR, b""
        pc = Prpcrypt(self.key)
        return pc.decrypt(sEchoStr, self.m_sReceiveId)

    def EncryptMsg(
        self,
        sReplyMsg: str,
        sNonce: str,
        timestamp: str | None = None,
    ) -> tuple[int, str]:
        pc = Prpcrypt(self.key)
        ret, encrypt = pc.encrypt(sReplyMsg, self.m_sReceiveId)
        encrypt_text = encrypt.decode("utf8")
        if ret != 0:
            return ret, ""
        if timestamp is None:
            timestamp = str(int(time.time()))
        sha1 = SHA1()
        ret, signature = sha1.get_sha1(self.m_sToken, timestamp, sNonce, encrypt_text)
        if ret != 0:
            return ret, ""
        xml_parse = XMLParse()
        return ret, xml_parse.generate(encrypt_text, signature, timestamp, sNonce)

    def DecryptMsg(
        self,
        sPostData: str,
        sMsgSignature: str,
        sTimeStamp: str,
        sNonce: str,
    ) -> tuple[int, bytes]:
        xml_parse = XMLParse()
        ret, encrypt, _to_user = xml_parse.extract(sPostData)
        if ret != 0:
            return ret, b""
        sha1 = SHA1()
        ret, signature = sha1.get_sha1(self.m_sToken, sTimeStamp, sNonce, encrypt)
        if ret != 0:
            return ret, b""
        if signature != sMsgSignature:
            return VALIDATE_SIGNATURE_ERROR, b""
        pc = Prpcrypt(self.key)
        return pc.decrypt(encrypt, self.m_sReceiveId)
