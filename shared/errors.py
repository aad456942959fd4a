"""The one exception tree of wecom-bus.

Our exception hierarchy::

    WeComBusError
    ├── ConfigError                 bad or missing configuration (names the variable)
    ├── CryptoError                 a callback failed verification; carries WeCom's code
    │   ├── SignatureError          -40001  msg_signature does not match
    │   ├── XMLParseError           -40002  envelope or plaintext is not acceptable XML
    │   ├── AESKeyError             -40004  EncodingAESKey is not 43 base64 characters
    │   ├── ReceiveIdError          -40005  decrypted receive-id is not our CorpID
    │   ├── EncryptError            -40006
    │   ├── DecryptError            -40007  ciphertext is not a whole number of AES blocks
    │   ├── BufferError_            -40008  bad PKCS#7 padding or lying length field
    │   └── Base64Error             -40010  Encrypt / echostr is not valid base64
    ├── SchemaError                 a send request WeCom would refuse (names the field)
    └── WeComAPIError               WeCom answered errcode != 0 (see shared.wecom.errors)

WeCom's library codes are kept as the ``code`` attribute, never as return values.
Messages never contain secrets or message plaintext.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AESKeyError",
    "Base64Error",
    "BufferError_",
    "ConfigError",
    "CryptoError",
    "DecryptError",
    "EncryptError",
    "ReceiveIdError",
    "SchemaError",
    "SignatureError",
    "WeComBusError",
    "XMLParseError",
]


class WeComBusError(Exception):
    """Root of every error wecom-bus raises on purpose."""


class ConfigError(WeComBusError):
    """A configuration variable is missing or wrong."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class CryptoError(WeComBusError):
    """A callback could not be verified or decrypted."""

    code: ClassVar[int] = -40000
    reason: ClassVar[str] = "crypto"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"[{self.code}] {detail or self.reason}")


class SignatureError(CryptoError):
    code = -40001
    reason = "bad_signature"


class XMLParseError(CryptoError):
    code = -40002
    reason = "bad_xml"


class AESKeyError(CryptoError):
    code = -40004
    reason = "bad_aes_key"


class ReceiveIdError(CryptoError):
    code = -40005
    reason = "bad_receive_id"


class EncryptError(CryptoError):
    code = -40006
    reason = "encrypt_failed"


class DecryptError(CryptoError):
    code = -40007
    reason = "decrypt_failed"


class BufferError_(CryptoError):  # trailing _: keeps the builtin visible
    code = -40008
    reason = "bad_buffer"


class Base64Error(CryptoError):
    code = -40010
    reason = "bad_base64"


class SchemaError(WeComBusError):
    """A send request that WeCom would refuse; ``field`` is a JSON path like ``$.text.content``."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
