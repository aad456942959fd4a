"""The ingress reads a callback's query string exactly as ``urllib.parse.parse_qsl`` does."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from services.ingress.callback import _query

_PIECES = [
    "msg_signature",
    "timestamp",
    "nonce",
    "=",
    "&",
    "&&",
    ";",
    "%41",
    "%",
    "+",
    "a",
    "1",
    "é",
    " ",
    "%E4%BD%A0",
    "x=y=z",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_query_pairs_equal_parse_qsl(query: str) -> None:
    raw = query.encode("utf-8").decode("latin-1").encode("latin-1")  # bytes as ASGI gives them
    assert _query(raw) == parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


def test_a_wecom_query_string() -> None:
    raw = (
        b"msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
        b"&timestamp=1409659589&nonce=263014780"
    )
    assert _query(raw) == [
        ("msg_signature", "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"),
        ("timestamp", "1409659589"),
        ("nonce", "263014780"),
    ]
