"""The assistant's router: open the model client at start, answer text messages, close at stop.

Nothing is read at import: the startup hook reads ``LLM_*`` and ``ASSISTANT_*`` from the
environment the service started with (``state.environ``) and opens one pooled HTTP client for
the process; the shutdown hook closes it after in-flight messages drained. With
``ASSISTANT_APPS`` set, only text messages to those apps are answered; the others are left to
later routes (so the router can be included in another).
"""

from __future__ import annotations

from examples.assistant.behaviour import Assistant
from shared.bus import Context, Predicate, Router
from shared.bus.router import Reply, State
from shared.schemas.inbound import TextMessage

__all__ = ["router"]

router = Router("assistant")


@router.on_startup
async def open_assistant(state: State) -> None:
    state.assistant = Assistant.open(
        state.environ, state.redis, state.settings, behaviour=router.name
    )


@router.on_shutdown
async def close_assistant(state: State) -> None:
    assistant = vars(state).get("assistant")
    if isinstance(assistant, Assistant):
        await assistant.close()


def _serves(_: TextMessage, ctx: Context) -> bool:
    apps: frozenset[str] = ctx.state.assistant.config.apps
    return not apps or ctx.app in apps


@router.on(TextMessage, when=Predicate(_serves, "assistant apps"))
async def chat(msg: TextMessage, ctx: Context) -> Reply:
    """和大模型助手对话；发送“新对话”或 /reset 重新开始"""
    assistant: Assistant = ctx.state.assistant
    return await assistant.handle(msg, ctx)
