"""What a handler receives and how it answers: ``Delivery`` in, ``Output`` out, or a signal.

Handlers steer delivery by raising: ``Retry(defer)`` (transient: deliver again later, same
entry id) or ``Reject(reason)`` (poison: dead letter now). A ``SchemaError`` (a reply WeCom
would refuse) can never succeed either, so it too goes to the dead letter at once. Any other
exception counts as a failed delivery. The consumer runtime is ``shared.bus.worker``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec

from shared.bus.scripts import TickScripts
from shared.bus.streams import FieldMap

__all__ = [
    "AckOffer",
    "Delivery",
    "Handler",
    "Output",
    "Reject",
    "Retry",
    "describe",
]

_ERROR_CHARS = 300


class Retry(Exception):
    """Raised by a handler: deliver this entry again in ``defer`` seconds (it stays pending)."""

    def __init__(self, defer: float = 5.0, reason: str = "") -> None:
        if defer < 0:
            raise ValueError("defer must be >= 0")
        self.defer = defer
        self.reason = reason
        super().__init__(reason or f"retry in {defer:g}s")


class Reject(Exception):
    """Raised by a handler: this entry can never succeed; dead-letter it now with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AckOffer(msgspec.Struct):
    """The consumer's offer, with each delivery, to let the handler ack the entry in the
    handler's own script, one Redis call where the consumer's commit would be a second.

    Such a script writes the handler's outcome and, in the same script after it, runs the
    consumer's commit (``streams.COMMIT`` with ``streams.commit_call``'s keys for ``group`` and
    ``retry_key``, no outputs: nothing unless the entry is still pending, then the member's
    order mark, XACK, the retry key). The handler then sets ``answer`` to what the commit
    answered (1 acked, 0 no longer pending: nothing written) and returns no outputs, and the
    consumer commits nothing. While ``answer`` is None the consumer commits as usual.
    """

    group: str
    retry_key: str
    answer: int | None = None
    # The consumer's own batch of script calls, where it can hold them for its next read: a
    # call the handler queues there while it is held (``holding``: the reader is about to read
    # again) goes in that read's write, one wake-up of Redis for both. None: no such batch.
    ride: TickScripts | None = None


class Delivery(msgspec.Struct, frozen=True):
    entry_id: str
    stream: str
    fields: dict[bytes, bytes]
    delivery_count: int  # 1 on the first delivery
    offer: AckOffer | None = None  # from the consumer; None: a call outside one


class Output(msgspec.Struct, frozen=True):
    """An entry to XADD to ``stream``, committed together with the ack of the delivery."""

    stream: str
    fields: FieldMap
    maxlen: int | None = None  # MAXLEN ~ for this stream; None: the consumer's maxlen
    order: str | None = None  # order key: numbered after the member's earlier entries there


Handler = Callable[[Delivery], Awaitable[Sequence[Output]]]


def describe(exc: BaseException) -> str:
    """One line for a dead letter: exception type and message, whitespace folded, truncated."""
    message = str(exc)
    text = " ".join(f"{type(exc).__name__}: {message}".split() if message else [type(exc).__name__])
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"
