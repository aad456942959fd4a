"""Splitting long text into WeCom-sized parts: properties, and where the cuts fall."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.schemas.split import PART_BYTES, split_text

# Characters of every UTF-8 width (1-4 bytes), sentence ends, line breaks, joiners and marks.
ALPHABET = st.sampled_from(
    [*"ab c.。！？!?\n\n", "汉", "字", "é", "\u0301", "\u200d", "\ufe0f", "😀", "👍", "\U0001f3fd"]
)


def utf8(text: str) -> int:
    return len(text.encode())


@settings(max_examples=300, deadline=None)
@given(st.text(ALPHABET, max_size=3000), st.integers(min_value=4, max_value=300))
def test_parts_concatenate_to_the_whole_and_fit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(utf8(p) <= limit for p in parts)
    assert all(p for p in parts) or parts == [""]
    for part in parts:  # each part is valid UTF-8 on its own (a str always encodes)
        assert part.encode().decode() == part


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=9000))
def test_any_unicode_at_wecoms_limit(text: str) -> None:
    parts = split_text(text)
    assert "".join(parts) == text
    assert all(utf8(p) <= PART_BYTES for p in parts)


def test_short_text_is_one_part() -> None:
    assert split_text("hi") == ["hi"]
    assert split_text("") == [""]
    assert split_text("a" * PART_BYTES) == ["a" * PART_BYTES]


def test_cuts_after_a_paragraph_before_a_sentence() -> None:
    first = "第一段。" * 120 + "\n\n"  # 1442 bytes
    second = "第二段的句子。" * 100
    parts = split_text(first + second)
    assert parts[0] == first


def test_cuts_after_a_sentence_when_no_paragraph_fits() -> None:
    sentence = "这是一个完整的句子！"  # 30 bytes
    text = sentence * 100  # 3000 bytes, no line breaks
    parts = split_text(text)
    assert all(p.endswith("！") for p in parts[:-1])
    assert "".join(parts) == text


def test_ascii_sentence_ends_need_a_space_after_the_period() -> None:
    text = ("Version 1.2.3 is out. " * 120).strip()
    parts = split_text(text)
    assert parts[0].endswith("out. ")
    assert "".join(parts) == text


def test_four_byte_emoji_are_never_cut() -> None:
    text = "😀" * 1000  # 4000 bytes, nothing but emoji
    parts = split_text(text)
    assert [utf8(p) for p in parts] == [2048, 1952]
    assert "".join(parts) == text


def test_an_emoji_keeps_its_skin_tone_and_joiners_where_possible() -> None:
    family = "👨\u200d👩\u200d👧"  # joined by ZWJ
    text = "x" * 2040 + family + "y" * 10
    parts = split_text(text)
    assert "".join(parts) == text
    assert family in parts[1]  # moved whole into the next part rather than torn apart


def test_a_limit_too_small_for_any_character_is_refused() -> None:
    with pytest.raises(ValueError):
        split_text("abc", 3)
