"""A scripted user simulator for the conversation tests (`--reply-hook tests.scripted_chat:reply`).

Model `user` reads the simulator prompt (prompts/chat/user_turn.jinja2) and answers by the seed's topic:
a topic starting with "quick" ends after one exchange, "silent" writes an empty second message (a failed
conversation), anything else asks a follow-up and then closes with a last message before the end marker
at its third message. Other models get the test server's own replies.
"""

from __future__ import annotations

import re
from typing import Any

END = "[END]"


def topic_of(prompt: str) -> str:
    m = re.search(r"What the chat is about: (.*)", prompt)
    return m.group(1).strip() if m else ""


def user_message(prompt: str) -> str:
    """What the scripted user writes for a simulator prompt."""
    topic = topic_of(prompt)
    if "Write your first message" in prompt:
        return f"Hello, can you tell me about {topic}?"
    said = len(re.findall(r"^You: ", prompt, flags=re.M))  # user messages so far
    if topic.startswith("quick"):
        return END
    if topic.startswith("silent"):
        return "   "
    if said == 1:
        return f"Why does that matter for {topic}?"
    return f"Thanks, that is all I needed. {END}"


def reply(body: dict[str, Any], index: int) -> str | None:
    if body.get("model") != "user":
        return None
    messages = body.get("messages") or []
    return user_message(str(messages[-1].get("content", ""))) if messages else None
