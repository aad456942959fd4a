"""WeCom callback protocol: crypto (signature, AES, receive-id) and XML parsing."""

from __future__ import annotations

from shared.protocol.crypto import CallbackCrypto, generate_encoding_aes_key, generate_token
from shared.protocol.parser import DEFAULT_MAX_BYTES, Envelope, parse_envelope, parse_message

__all__ = [
    "DEFAULT_MAX_BYTES",
    "CallbackCrypto",
    "Envelope",
    "generate_encoding_aes_key",
    "generate_token",
    "parse_envelope",
    "parse_message",
]
