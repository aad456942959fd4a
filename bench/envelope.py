"""What keeping the whole message costs the ingress: ``python -m bench.envelope``.

A microbenchmark of the CPU the ingress spends on one callback once its body is read: decrypt,
parse, AgentID check, dedup key, envelope JSON. It runs each of a few real samples of
tests/samples/inbound two ways in one process: as the ingress does it (the envelope carries
``raw``, the whole message, and events are keyed by a digest of it), and without the whole
message (``raw`` left empty, events keyed by a digest of the typed view only). The difference
is the cost of ``raw``. Figures are the best of 25 rounds of CPU time (``process_time``), so
other load on the machine inflates them less than it would wall time.
"""

from __future__ import annotations

import functools
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import cast

from services.ingress.callback import foreign_agent_id
from shared.protocol.crypto import CallbackCrypto
from shared.protocol.parser import read_message
from shared.schemas.envelope import EventEnvelope, encode_envelope
from shared.schemas.inbound import InboundEventType, dedup_key

__all__ = ["main", "measure"]

SAMPLES = Path(__file__).parent.parent / "tests" / "samples" / "inbound"
STEMS = ("text", "event.click", "event.change_contact.update_tag", "event.open_approval_change")
CRYPTO = CallbackCrypto("Token", "a" * 43, "wwcorp")
TS, NONCE, AGENT = "1700000000", "n", 1000002


def _store(whole: bool) -> Callable[[str, bytes], bytes]:
    def run(signature: str, body: bytes) -> bytes:
        plaintext = CRYPTO.decrypt_callback(signature, TS, NONCE, body)
        event, raw = read_message(plaintext)
        foreign_agent_id(raw.get("AgentID"), AGENT)
        typed = cast("InboundEventType", event)
        key = dedup_key(event, raw if whole else None)
        envelope = EventEnvelope(
            app="default",
            received_at=1.0,
            trace_id="0" * 16,
            dedup_key=key,
            event=typed,
            raw=raw if whole else {},
        )
        return encode_envelope(envelope)

    return run


def measure(stem: str, rounds: int = 25, number: int = 1000) -> dict[str, float]:
    """µs per callback and entry bytes, with and without the whole message."""
    plaintext = (SAMPLES / f"{stem}.xml").read_bytes()
    params, body = CRYPTO.build_callback(plaintext, timestamp=TS, nonce=NONCE, agent_id=AGENT)
    signature = params["msg_signature"]
    result: dict[str, float] = {}
    for label, whole in (("typed", False), ("whole", True)):
        run = _store(whole)
        call = functools.partial(run, signature, body)
        best = min(timeit.repeat(call, number=number, repeat=rounds, timer=time.process_time))
        result[f"{label}_us"] = best / number * 1e6
        result[f"{label}_bytes"] = len(run(signature, body))
    return result


def main(stems: tuple[str, ...] = STEMS, rounds: int = 25, number: int = 1000) -> int:
    print(f"{'sample':34} {'typed only':>12} {'with raw':>12} {'extra':>8}   entry bytes")
    for stem in stems:
        r = measure(stem, rounds, number)
        extra = r["whole_us"] - r["typed_us"]
        print(
            f"{stem:34} {r['typed_us']:9.1f} µs {r['whole_us']:9.1f} µs {extra:5.1f} µs"
            f"   {r['typed_bytes']:.0f} → {r['whole_bytes']:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
