"""What a stage asks an endpoint for: one `Call`. Kept apart from the client (and the openai SDK it imports), so
code that only builds calls (judging, validation, `synthkd status`) starts fast."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from synthkd.client.wire import ToolChoice
from synthkd.config.endpoints import Sampling
from synthkd.tools.wire import ChatMessage, ToolSchema


@dataclass(slots=True)
class Call:
    """One request: chat messages, sampling, an optional reply schema, and the sample index; `tools` and
    `tool_choice` as OpenAI function calling takes them (messages may then hold tool calls and tool results)."""

    messages: list[ChatMessage]
    sampling: Sampling
    schema: type[BaseModel] | None = None
    sample: int = 0
    logprobs: bool = False
    tools: list[ToolSchema] | None = None
    tool_choice: ToolChoice | None = None
