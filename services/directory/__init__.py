"""The ``directory`` behaviour: keeps the Redis copy ``ctx.directory`` reads fresh.

Run it as its own consumer group, beside the responder and the teams' groups::

    wecom-bus responder --group directory --handlers services.directory:router

It lives under ``services/`` rather than ``examples/``: it is part of the product (the copy
every behaviour's ``ctx.directory`` reads), not a sample to copy, and its own group sees every
``change_contact`` event whatever other routers do with it. WeCom's contact events carry
little more than ids (since August 2022 often only UserID and Department), so each one is
answered by reading the member or department again through the sender's gateway
(``SENDER_URL``, ``SENDER_API_KEY``) and writing it to the copy; deletions remove it. The
app must receive contact events (通讯录 callbacks) for the copy to follow changes; without
them ``ctx.directory`` still works, filling the copy on first use.
"""

from __future__ import annotations

from services.directory.router import router

__all__ = ["router"]
