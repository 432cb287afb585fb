"""The JSON of tool calling and chat, as it goes to an endpoint and into a dataset: tool schemas, tool calls,
chat messages, and the JSON values tools take and give.

These are TypedDicts, not models: each is the plain dict it always was at runtime, built by a literal, so its keys
stay in the order written and the bytes sent, cached and written to disk do not change; the types only declare
the keys synthkd writes and reads.
"""

from __future__ import annotations

from typing import Literal, NotRequired, Union

# typing_extensions (pydantic's own dependency): pydantic reads these types only in their typing_extensions form on
# Python < 3.12 (ToolSpec.parameters is declared a JSONSchema).
from typing_extensions import TypeAliasType, TypedDict

# A value JSON can hold (what json.loads gives): a tool's arguments and results, a lookup table's cells.
JSONValue = TypeAliasType("JSONValue", Union[str, int, float, bool, None, list["JSONValue"], dict[str, "JSONValue"]])


class JSONSchema(TypedDict, total=False):
    """A JSON schema, as tools declare their arguments: the keywords synthkd reads (`check_arguments`, the
    structured-mode argument models). A user's schema may hold any other keyword (items, minimum, ...): it is
    kept as written and sent on to the model."""

    type: str | list[str]
    description: str
    properties: dict[str, JSONSchema]
    required: list[str]
    additionalProperties: bool | JSONSchema
    enum: list[JSONValue]


class FunctionSpec(TypedDict):
    """The `function` of an OpenAI function tool."""

    name: str
    description: str
    parameters: JSONSchema  # an object schema of the arguments


class ToolSchema(TypedDict):
    """One entry of a request's `tools` (and of a trajectory's `tools` column, which TRL reads)."""

    type: Literal["function"]
    function: FunctionSpec


class FunctionCall(TypedDict):
    """The `function` of a tool call: which tool, with what arguments."""

    name: str
    arguments: str  # JSON text, as the model wrote it (it may not parse: the stage records that)


class ToolCall(TypedDict):
    """One entry of an assistant message's `tool_calls` (OpenAI function calling)."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(TypedDict):
    """A chat message in OpenAI's (and TRL's) form: role and content, and for tool calling an assistant's
    `tool_calls`, or a tool message's `tool_call_id` and `name` (the tool that answered)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]
