"""The OpenAI chat-completions wire format as synthkd sends and reads it, as TypedDicts.

TypedDicts are plain dicts at run time: request bodies are hashed into cache keys and written into batch files
exactly as before, and callers (and tests) keep building them as dict literals. The keys are the ones synthkd
really sends and reads, not all of OpenAI's API (the `openai` package has those as models, which synthkd's
request path does not use: see `EndpointClient._send_once`).

Request side (with `ChatMessage`, `ToolSchema` and `ToolCall` from synthkd.tools.wire): `ToolChoice`,
`ResponseFormat`, `SamplingParams`, the keyword arguments of a request (`ChatRequest`) and what its cache key
hashes (`RequestIdentity`). Reply side: `ChatCompletion` and its parts, typed as providers and gateways really
send them (counts as strings or null, content as a list of parts): the readers in `synthkd.client.replies` check
every value before using it. Batch side: a line of a batch output or error file (`BatchResultLine`) and a row of
`synthkd status`'s batch table (`BatchSummary`).
"""

# No `from __future__ import annotations`: under it Python 3.11 does not see `Required` in a TypedDict's keys.
from typing import Any, Literal, Required, TypedDict

# Messages, tool calls and tool schemas are tool calling's types, shared with the tool-use stage and its datasets.
from synthkd.tools.wire import ChatMessage, JSONSchema, ToolCall, ToolSchema

# ---- request --------------------------------------------------------------------------


class NamedFunction(TypedDict):
    name: str


class NamedToolChoice(TypedDict):
    """`tool_choice` that forces one named function."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(TypedDict):
    """The `json_schema` block of a structured-outputs `response_format`."""

    name: str
    schema: JSONSchema  # the reply model's, closed for strict mode (see synthkd.client.schema)
    strict: bool


class ResponseFormat(TypedDict):
    """`response_format` asking for a reply that follows a JSON schema."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


class SamplingParams(TypedDict, total=False):
    """The sampling fields of `Sampling` that are sent as they are (unset ones are not sent; the seed is sent per
    request and extra_body into the body: see `EndpointClient.request_for`)."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: list[str]


class ChatRequest(SamplingParams, total=False):
    """The keyword arguments of one request (the body of POST /chat/completions, less `extra_body`'s merging:
    see `synthkd.client.endpoint.request_body`)."""

    model: Required[str]
    messages: Required[list[ChatMessage]]
    max_completion_tokens: int  # max_tokens under the name some endpoints take (`max_tokens_param`)
    seed: int
    n: int
    response_format: ResponseFormat
    logprobs: bool
    tools: list[ToolSchema]
    tool_choice: ToolChoice
    extra_body: dict[str, Any]  # the user's `sampling.extra_body`, passed to the server as it is: open-ended


class RequestIdentity(TypedDict, total=False):
    """What a request's cache key hashes (`request_key`): everything that determines its reply. Keys are set only
    when they apply, so the keys of requests cached before a feature existed do not change."""

    model: Required[str]  # the endpoint's model identity (weights), not the served name
    messages: Required[list[ChatMessage]]
    params: Required[SamplingParams]
    sample: int  # the sample index; absent from a group key (calls that may share one request with `n`)
    schema: str  # schema_digest of the reply model
    logprobs: bool
    tools: list[ToolSchema]
    tool_choice: ToolChoice
    extra_body: dict[str, Any]  # as in ChatRequest: the user's passthrough, open-ended
    attempt: int  # the retry attempt after a reply failed its schema (absent for the first)


# ---- reply ----------------------------------------------------------------------------

# A token count as providers send it: an int, a float, a numeric string, or null (see replies._count).
Count = int | float | str | None


class TokenDetails(TypedDict, total=False):
    """usage.completion_tokens_details / usage.prompt_tokens_details (the parts synthkd reads)."""

    reasoning_tokens: Count
    cached_tokens: Count


class Usage(TypedDict, total=False):
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count
    completion_tokens_details: TokenDetails | None
    prompt_tokens_details: TokenDetails | None


class TokenLogprob(TypedDict, total=False):
    token: str
    logprob: float


class ChoiceLogprobs(TypedDict, total=False):
    content: list[TokenLogprob] | None


class ContentPart(TypedDict, total=False):
    """A part of a message whose content is a list (text parts are read; others ignored)."""

    type: str
    text: str


class ReplyMessage(TypedDict, total=False):
    """The message of a choice as endpoints send it: content a string, a list of parts or null; a reasoning trace
    apart from it (vLLM's reasoning parsers, several providers); a refusal; tool calls as they came (checked by
    replies._tool_calls)."""

    role: str
    content: str | list[ContentPart | str] | ContentPart | None
    reasoning_content: str | list[ContentPart | str] | None
    reasoning: str | list[ContentPart | str] | None
    refusal: str | None
    tool_calls: list[ToolCall] | None


class ReplyChoice(TypedDict, total=False):
    """One choice of a completion (`text`: the legacy completions shape some servers still send)."""

    index: int
    message: ReplyMessage | None
    text: str
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None


class ApiError(TypedDict, total=False):
    """An error object (of a failed batch item, or the body of an error reply)."""

    code: str | None
    message: str
    type: str


class ChatCompletion(TypedDict, total=False):
    """The JSON body of a chat-completions reply (`error` only in an error reply, e.g. a failed batch item's)."""

    id: str
    model: str
    choices: list[ReplyChoice]
    usage: Usage | None
    error: ApiError | None


# ---- batch ----------------------------------------------------------------------------


class BatchResponse(TypedDict, total=False):
    """The `response` of a line of a batch output or error file."""

    status_code: int
    request_id: str
    body: ChatCompletion | None


class BatchResultLine(TypedDict, total=False):
    """A line of a batch output or error file: the reply (or the error) of the request with this `custom_id`."""

    id: str
    custom_id: str
    response: BatchResponse | None
    error: ApiError | None


class BatchSummary(TypedDict):
    """A batch a run submitted, as `synthkd status` lists it."""

    endpoint: str
    batch_id: str | None
    status: str
    collected: bool
    requests: int
    failed: int
