"""The bus: Redis Streams wrappers, the consumer runtime and the router teams write handlers for.

``names`` holds every key name; ``streams`` the typed stream commands; ``worker`` the consumer
runtime (``Consumer``, ``Retry``, ``Reject``); ``router`` the handler API (``Router``,
``Context`` and the predicates).
"""

from __future__ import annotations

from shared.bus.delivery import Delivery, Output, Reject, Retry
from shared.bus.options import ConsumerOptions
from shared.bus.router import (
    Context,
    Predicate,
    Router,
    State,
    app,
    event,
    event_key,
    sender,
    text,
)
from shared.bus.streams import publish
from shared.bus.worker import Consumer, install_signal_handlers

__all__ = [
    "Consumer",
    "ConsumerOptions",
    "Context",
    "Delivery",
    "Output",
    "Predicate",
    "Reject",
    "Retry",
    "Router",
    "State",
    "app",
    "event",
    "event_key",
    "install_signal_handlers",
    "publish",
    "sender",
    "text",
]
