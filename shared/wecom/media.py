"""Temporary media (media/upload): the kinds, their size limits and formats, checked before
a byte leaves for WeCom."""

from __future__ import annotations

from typing import Literal

from shared.errors import SchemaError

__all__ = ["MEDIA_MAX", "MediaKind", "check_media"]

MediaKind = Literal["image", "voice", "video", "file"]
# media/upload: every file must be larger than 5 bytes; upper bounds and formats per type
# (image JPG/PNG, voice AMR, video MP4, file anything).
MEDIA_MAX: dict[str, int] = {
    "image": 10 << 20,
    "voice": 2 << 20,
    "video": 10 << 20,
    "file": 20 << 20,
}
_MEDIA_FORMAT = {"image": "a JPG or PNG image", "voice": "AMR audio", "video": "an MP4 video"}
# (offset, bytes) signatures a file of the type starts with; "file" may be anything.
_SIGNATURES: dict[str, tuple[tuple[int, bytes], ...]] = {
    "image": ((0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n")),
    "voice": ((0, b"#!AMR"),),
    "video": ((4, b"ftyp"),),
}


def _looks_like(kind: str, content: bytes) -> bool:
    signs = _SIGNATURES.get(kind)
    return signs is None or any(content[at : at + len(sign)] == sign for at, sign in signs)


def check_media(kind: str, content: bytes) -> None:
    """Raise SchemaError for a temporary-media upload WeCom would refuse (type, size, format)."""
    if kind not in MEDIA_MAX:
        raise SchemaError("type", f"must be one of {', '.join(MEDIA_MAX)}")
    if not 5 < len(content) <= MEDIA_MAX[kind]:
        raise SchemaError(
            "media", f"is {len(content)} bytes; a {kind} must be 6 to {MEDIA_MAX[kind]} bytes"
        )
    if not _looks_like(kind, content):
        raise SchemaError("media", f"is not {_MEDIA_FORMAT[kind]}, which WeCom requires")
