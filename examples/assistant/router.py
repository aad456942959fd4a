"""The assistant's router: open the model client at start, answer text messages, close at stop.

Nothing is read at import: the startup hook reads ``LLM_*`` and ``ASSISTANT_*`` from the
environment the service started with (``state.environ``) and opens one pooled HTTP client for
the process; the shutdown hook closes it after in-flight messages drained. Text messages to an
app get paragraphs on the outbox; text messages to an AI bot get the answer streamed as it is
written. With ``ASSISTANT_APPS`` set, only messages to those apps (bots as ``bot:<name>``) are
answered; the others are left to later routes (so the router can be included in another).
"""

from __future__ import annotations

from examples.assistant.behaviour import Assistant
from shared.bus import Context, Predicate, Router
from shared.bus.router import Reply, State
from shared.schemas.aibot import BotText
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


def _serves(_: TextMessage | BotText, ctx: Context) -> bool:
    apps: frozenset[str] = ctx.state.assistant.config.apps
    return not apps or ctx.app in apps


@router.on(TextMessage, when=Predicate(_serves, "assistant apps"))
async def chat(msg: TextMessage, ctx: Context) -> Reply:
    """和大模型助手对话；发送“新对话”或 /reset 重新开始"""
    assistant: Assistant = ctx.state.assistant
    return await assistant.handle(msg, ctx)


@router.on(BotText, when=Predicate(_serves, "assistant apps"))
async def bot_chat(msg: BotText, ctx: Context) -> None:
    """和大模型助手对话（智能机器人，回答边写边显示）；发送“新对话”或 /reset 重新开始"""
    assistant: Assistant = ctx.state.assistant
    await assistant.handle_bot(msg, ctx)
