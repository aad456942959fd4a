"""An LLM assistant for any OpenAI-compatible chat completions API; see docs/llm.md.

Run it as its own consumer group::

    wecom-bus responder --group assistant --handlers examples.assistant:router
"""

from __future__ import annotations

from examples.assistant.router import router

__all__ = ["router"]
