"""Outbox actions made by handlers (shared.schemas.actions), on their way to the outbox.

The router collects them beside the send requests of one event; they reach the outbox in the
same commit as the event's ack, each in an ``action`` field of its own.
"""

from __future__ import annotations

from typing import TypeAlias, cast

import msgspec

from shared.bus.delivery import Output
from shared.schemas.actions import Action, ActionEntry, ActionType, check_action, encode_action
from shared.schemas.envelope import EventEnvelope
from shared.schemas.outbound import Attachment, SendRequest

__all__ = ["Action", "Item", "PublishedAction", "action_outputs"]

Item: TypeAlias = SendRequest | Attachment | Action  # what ctx.publish takes


class PublishedAction(msgspec.Struct, frozen=True, kw_only=True):
    """An outbox action (recall, card update, bot response) made while handling one event."""

    id: str
    handler: str
    action: Action

    @classmethod
    def checked(cls, rid: str, handler: str, action: Action) -> PublishedAction:
        """Validated now: a SchemaError fails the handler, not the sender."""
        return cls(id=rid, handler=handler, action=check_action(action))


def action_outputs(
    envelope: EventEnvelope,
    actions: list[PublishedAction],
    outbox: str,
    maxlen: int | None,
    now: float,
) -> list[Output]:
    """One outbox entry (field ``action``) per action, with the event's app and trace id."""
    entries = [
        ActionEntry(
            id=a.id,
            app=envelope.app,
            trace_id=envelope.trace_id,
            created_at=now,
            action=cast(ActionType, a.action),
            origin=f"handler:{a.handler}",
        )
        for a in actions
    ]
    return [Output(outbox, {"action": encode_action(entry)}, maxlen) for entry in entries]
