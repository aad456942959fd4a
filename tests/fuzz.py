"""Fuzzing the callback path (``make fuzz`` = ``python -m tests.fuzz [--seconds 60]``).

Hypothesis drives four targets, each a stage of what the ingress does with a callback, and each
feeding whatever survives into the rest of the path:

- ``envelope``: hostile POST bodies (mutated real envelopes, corpus bodies, random bytes),
  signed over whatever <Encrypt> they carry, through ``decrypt_callback``;
- ``ciphertext``: hostile <Encrypt> text (mutated base64, random text), correctly signed;
- ``frame``: hostile decrypted frames (random prefix, length field, message, receive-id and
  padding), AES-encrypted with the app's key, through ``decrypt``;
- ``message``: hostile decrypted XML (the 35 samples of tests/samples/inbound with leaf values
  replaced by nasty values, elements dropped or repeated, bytes flipped; generated trees).

The invariant everywhere: a ``CryptoError`` subclass is the only exception, and whatever parses
goes through the rest of the ingress (AgentID check, ``dedup_key``, ``encode_envelope``) and is
read back by a consumer (``decode_envelope``) unchanged, typed view and whole message alike.
A finding is shrunk by Hypothesis, printed with a reproduction, saved under ``--out``, and the
run exits 1. tests/test_properties.py runs the same targets with a bounded number of examples
on every ``make test``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from Crypto.Cipher import AES
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from services.ingress.callback import foreign_agent_id
from shared.errors import CryptoError
from shared.protocol.crypto import CallbackCrypto
from shared.protocol.parser import parse_envelope, read_message
from shared.schemas.envelope import EventEnvelope, decode_envelope, encode_envelope
from shared.schemas.inbound import InboundEvent, dedup_key
from tests.helpers import AES_KEY, AGENT_ID, CORP_ID, TOKEN

__all__ = [
    "KNOWN_FINDINGS",
    "TARGETS",
    "Finding",
    "Outcome",
    "Target",
    "check_plaintext",
    "known_finding",
    "main",
    "run",
]

HERE = Path(__file__).parent
SAMPLES = sorted((HERE / "samples" / "inbound").glob("*.xml"))
CORPUS = sorted((HERE / "corpus" / "cases").glob("*.body"))
CRYPTO = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)
TS, NONCE = "1700000000", "1372623149"
_KEY = base64.b64decode(AES_KEY + "=")
_NUMBER = re.compile(rb"-?[0-9]+(\.[0-9]+)?")
# A leaf element: text or CDATA, no child elements (so <xml> itself never matches).
_LEAF = re.compile(rb"(<(\w+)>)((?:<!\[CDATA\[.*?\]\]>|[^<])*)(</\2>)", re.S)


class Finding(AssertionError):
    """An invariant of the callback path broke."""


# Findings reported and not fixed yet, by a fragment of their message; each would have an
# xfail(strict=True) case in tests/test_fuzz_regressions.py. Every finding so far is fixed
# (UTF-16 without a BOM; NaN/Infinity coordinates): their cases there pass.
KNOWN_FINDINGS: dict[str, str] = {}


def known_finding(exc: BaseException) -> str | None:
    """The reason a finding is already known, or None."""
    return next((why for frag, why in KNOWN_FINDINGS.items() if frag in str(exc)), None)


# ---------------------------------------------------------------- the invariant


def _same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to itself (a float field may hold one)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _utf8_only(data: bytes, what: str) -> None:
    # Non-UTF-8 input is refused; expat must not have guessed another encoding.
    # XML in UTF-8 never holds a NUL byte; UTF-16 of any tag does.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise Finding(f"a {what} that is not UTF-8 was accepted") from None
    if b"\0" in data:
        raise Finding(f"a {what} that is not UTF-8 was accepted (NUL bytes: UTF-16?)")


def check_plaintext(plaintext: bytes) -> None:
    """What the ingress does after decrypting, then what a consumer does with the entry."""
    try:
        event, raw = read_message(plaintext, max_bytes=262_144)
    except CryptoError:
        return
    assert isinstance(event, InboundEvent) and isinstance(raw, dict)
    _utf8_only(plaintext, "message")
    foreign_agent_id(raw.get("AgentID"), AGENT_ID)  # the ingress's AgentID check
    key = dedup_key(event, raw)
    if not (isinstance(key, str) and 0 < len(key) < 200 and key.isprintable()):
        raise Finding(f"dedup_key {key!r} is not a short key")
    envelope = EventEnvelope(
        app="default",
        received_at=1.0,
        trace_id="0" * 16,
        dedup_key=key,
        event=event,  # type: ignore[arg-type]
        raw=raw,
    )
    data = encode_envelope(envelope)
    try:
        stored = decode_envelope(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Finding(f"stored event cannot be read back by a consumer: {exc}") from None
    back = stored.event
    if type(back) is not type(event):
        raise Finding(f"stored {type(event).__name__} reads back as {type(back).__name__}")
    for info in msgspec.structs.fields(event):
        if not _same(getattr(event, info.name), getattr(back, info.name)):
            raise Finding(f"field {info.name} changes on the bus")
    if stored.raw != raw:
        raise Finding("the whole message (raw) changes on the bus")
    if dedup_key(back, stored.raw) != key:
        raise Finding("dedup_key differs once the event has been through the bus")


def check_body(body: bytes) -> None:
    try:
        encrypt = parse_envelope(body).encrypt
        _utf8_only(body, "body")
        signature = CRYPTO.signature(TS, NONCE, encrypt)
    except CryptoError:
        return
    except UnicodeEncodeError:
        signature = "0" * 40  # unencodable text cannot have been signed: verify must refuse
    try:
        plaintext = CRYPTO.decrypt_callback(signature, TS, NONCE, body)
    except CryptoError:
        return
    check_plaintext(plaintext)


def check_encrypt(encrypt: str) -> None:
    """Inside a body (``check_body`` signs it), and straight into ``decrypt``."""
    body = f"<xml><Encrypt><![CDATA[{encrypt.replace(']]>', '')}]]></Encrypt></xml>"
    check_body(body.encode("utf-8", "surrogatepass"))
    try:
        plaintext = CRYPTO.decrypt(encrypt)
    except CryptoError:
        return
    check_plaintext(plaintext)


def check_frame(frame: bytes) -> None:
    frame += b"\0" * (-len(frame) % 16)
    encrypted = base64.b64encode(AES.new(_KEY, AES.MODE_CBC, _KEY[:16]).encrypt(frame)).decode()
    try:
        plaintext = CRYPTO.decrypt(encrypted)
    except CryptoError:
        return
    check_plaintext(plaintext)


# ---------------------------------------------------------------- strategies

# Values aimed at typed fields (int, float): what msgspec.convert(strict=False) must cope with.
NASTY_NUMBERS = [
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e-400", "-0", "0x10",
    " 1 ", "1_000", "9" * 30, "18446744073709551616", "-9223372036854775809", "１２３", "١٢٣",
]  # fmt: skip
NASTY_VALUES = [
    "", " ", "\t\n", "0", "-1", "1.5", "true", "null", "[]", "{}", "<![CDATA[]]>", "]]>",
    "&amp;", "&#0;", "&#xD800;", "&#x1F600;", "a" * 5000, "event", "text", "change_contact",
    ":", "a:b", "\u202e", "\ufeff", "😀", "%s%n", "<x/>", "<x>1</x><x>2</x>",
    "<item><A>a</A></item>",
]  # fmt: skip

_xml_char = st.characters(codec="utf-8").filter(
    lambda c: c in "\t\n" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
)
xml_text = st.text(_xml_char, max_size=40)
_seeds = [p.read_bytes() for p in SAMPLES]


def _escape(text: str) -> bytes:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode()


leaf_values = st.one_of(
    st.sampled_from(NASTY_NUMBERS).map(str.encode),
    st.sampled_from(NASTY_VALUES).map(str.encode),
    xml_text.map(_escape),
    st.integers().map(lambda n: str(n).encode()),
    st.floats().map(lambda f: repr(f).encode()),
    st.binary(max_size=12),
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A real sample with some leaves replaced, elements dropped or doubled, bytes flipped.

    Half the replacements aim at a leaf that holds a number now (a typed field) with a value
    that is not quite one: that is where conversion into the Structs can go wrong.
    """
    doc = draw(st.sampled_from(_seeds))
    for _ in range(draw(st.integers(1, 4))):
        leaves = list(_LEAF.finditer(doc))
        numeric = [m for m in leaves if _NUMBER.fullmatch(m.group(3))]
        if draw(st.booleans()) and numeric:
            m = draw(st.sampled_from(numeric))
            value = draw(st.sampled_from(NASTY_NUMBERS)).encode()
        elif leaves:
            m = draw(st.sampled_from(leaves))
            value = draw(leaf_values)
        else:
            break
        if draw(st.booleans()):
            value = b"<![CDATA[" + value.replace(b"]]>", b"") + b"]]>"
        doc = doc.replace(m.group(0), m.group(1) + value + m.group(4), 1)
    if draw(st.integers(0, 3)) == 0 and (leaves := list(_LEAF.finditer(doc))):
        m = draw(st.sampled_from(leaves))
        doc = doc.replace(m.group(0), draw(st.sampled_from([b"", m.group(0) * 2])), 1)
    return _flip(draw, doc)


def _flip(draw: st.DrawFn, data: bytes) -> bytes:
    """Now and then, a few bytes inserted, removed or replaced."""
    if draw(st.integers(0, 3)):
        return data
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 3))
        data = data[:at] + draw(st.binary(max_size=3)) + data[at + cut :]
    return data


_names = st.sampled_from(
    ["ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId", "AgentID", "Content",
     "Event", "EventKey", "ChangeType", "Location_X", "Latitude", "PicList", "item", "Items",
     "Item", "ScanCodeInfo", "ApprovalInfo", "SendPicsInfo", "Count", "TaskId", "UserID"]
)  # fmt: skip


def _tree(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    element = st.tuples(_names, children).map(
        lambda t: b"<%s>%s</%s>" % (t[0].encode(), t[1], t[0].encode())
    )
    return st.lists(element, max_size=4).map(b"".join)


generated_messages = st.recursive(leaf_values, _tree, max_leaves=20).map(
    lambda inner: b"<xml>" + inner + b"</xml>"
)
messages = st.one_of(mutated_messages(), generated_messages, st.binary(max_size=200))


def _envelope(encrypt: bytes) -> bytes:
    parts = (CORP_ID.encode(), encrypt)
    return b"<xml><ToUserName>%s</ToUserName><Encrypt><![CDATA[%s]]></Encrypt></xml>" % parts


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["sealed", "corpus", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "corpus" and CORPUS:
        return _flip(draw, draw(st.sampled_from(CORPUS)).read_bytes()[:4096])
    return _flip(draw, _envelope(CRYPTO.encrypt(draw(messages)).encode()))


@st.composite
def ciphertexts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=120))
    good = CRYPTO.encrypt(draw(messages))
    at = draw(st.integers(0, len(good)))
    extra = draw(st.text(st.sampled_from("AZaz09+/=-_ \n\r\t.%"), max_size=4))
    return good[:at] + extra + good[at + draw(st.integers(0, 4)) :]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    msg = draw(messages)
    declared = draw(st.one_of(st.just(len(msg)), st.integers(0, 2**32 - 1)))
    receive_id = draw(st.sampled_from([CORP_ID.encode(), b"", CORP_ID.encode()[:-1], b"x" * 40]))
    body = (
        draw(st.binary(min_size=16, max_size=16)) + declared.to_bytes(4, "big") + msg + receive_id
    )
    pad = draw(st.integers(0, 40))
    return body + bytes([pad % 256]) * draw(st.integers(0, 33))


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


TARGETS = {
    t.name: t
    for t in (
        Target("envelope", envelopes(), check_body),
        Target("ciphertext", ciphertexts(), check_encrypt),
        Target("frame", frames(), check_frame),
        Target("message", messages, check_plaintext),
    )
}


# ---------------------------------------------------------------- the runner


@dataclass
class Outcome:
    tried: int = 0
    found: Any = None  # the shrunk input of a new finding
    known: dict[str, Any] = field(default_factory=dict)  # known reason -> first input seen


def run(target: Target, examples: int) -> Outcome:
    """Try ``examples`` inputs; a new finding stops the run, a known one is noted and passed."""
    outcome = Outcome()
    failing: list[Any] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.data())
    def probe(data: st.DataObject) -> None:
        value = data.draw(target.strategy)
        outcome.tried += 1
        try:
            target.check(value)
        except CryptoError:
            pass
        except Finding as exc:
            if why := known_finding(exc):
                outcome.known.setdefault(why, value)
                return
            failing.append(value)
            raise
        except BaseException:
            failing.append(value)
            raise

    try:
        probe()
    except (Exception, HypothesisException):
        outcome.found = failing[-1] if failing else None
    return outcome


def _save(out: Path, target: str, value: Any) -> Path:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{target}-{hashlib.sha256(raw).hexdigest()[:12]}.bin"
    path.write_bytes(raw)
    return path


def main(argv: list[str] | None = None) -> int:
    """Fuzz until the time is up; exit 1 if anything (known or new) was found."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description="fuzz decrypt+parse")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--target", choices=sorted(TARGETS), action="append", help="only these")
    parser.add_argument("--out", type=Path, default=Path(".hypothesis/fuzz-findings"))
    args = parser.parse_args(argv)
    active = [TARGETS[n] for n in (args.target or TARGETS)]
    deadline = time.monotonic() + args.seconds
    totals = dict.fromkeys((t.name for t in active), 0)
    new: list[str] = []
    known: dict[str, str] = {}
    while active and time.monotonic() < deadline:
        for target in list(active):
            outcome = run(target, examples=300)
            totals[target.name] += outcome.tried
            for why, value in outcome.known.items():
                if why not in known:
                    known[why] = (
                        f"{target.name}: {value!r:.300} ({_save(args.out, target.name, value)})"
                    )
            if outcome.found is not None:
                path = _save(args.out, target.name, outcome.found)
                new.append(f"{target.name}: {outcome.found!r:.400} (saved to {path})")
                active.remove(target)  # shrunk and saved: fix it, then fuzz this target again
            if time.monotonic() >= deadline:
                break
    print(f"fuzzed for {args.seconds:g}s: " + ", ".join(f"{n} {c}" for n, c in totals.items()))
    for finding in new:
        print(f"NEW FINDING {finding}")
        print(f"  reproduce: tests.fuzz.TARGETS[{finding.split(':')[0]!r}].check(<saved input>)")
    for why, finding in known.items():
        print(f"KNOWN FINDING, NOT FIXED YET ({why}): {finding}")
    return 1 if new or known else 0


if __name__ == "__main__":
    sys.exit(main())
