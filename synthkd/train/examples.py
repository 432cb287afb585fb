"""The shapes training reads and passes on: chat messages and tool schemas in OpenAI's form, the rows of an SFT or
DPO job, the example forms handed to TRL, and the job spec a multi-process run's workers read.

All are TypedDicts: the rows are JSON read from datasets and JSON-lines files, and tests and stages build them as
plain dicts, so a TypedDict describes them without changing what they are. A row may hold other columns too
(its id, its source): training reads only the keys declared here.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from pydantic import JsonValue

__all__ = ["FunctionCall", "ToolCall", "ChatMessage", "FunctionSchema", "ToolSchema", "SFTExample", "PreferenceExample",
           "TrainingRow", "training_row", "sft_example", "preference_example", "PromptCompletion", "TokenizedExample", "JobSpec"]


class FunctionCall(TypedDict):
    """The function a tool call names, with its arguments: JSON text as OpenAI writes them, or already parsed."""

    name: str
    arguments: NotRequired[str | dict[str, JsonValue] | None]


class ToolCall(TypedDict):
    """One entry of an assistant message's `tool_calls`."""

    id: NotRequired[str]
    type: NotRequired[str]  # "function"
    function: FunctionCall


class ChatMessage(TypedDict):
    """One turn of a conversation as chat templates and TRL read it."""

    role: str  # system | user | assistant | tool
    content: NotRequired[str | None]  # an assistant turn that only calls tools may have none
    tool_calls: NotRequired[list[ToolCall]]  # assistant turns
    tool_call_id: NotRequired[str]  # tool turns: the call answered
    name: NotRequired[str | None]  # tool turns: the tool that answered


class FunctionSchema(TypedDict):
    """A tool's function as the model is shown it."""

    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict[str, JsonValue]]  # a JSON Schema object


class ToolSchema(TypedDict):
    """One entry of a row's `tools`, in OpenAI's form."""

    type: NotRequired[str]  # "function"
    function: FunctionSchema


class SFTExample(TypedDict):
    """A row of an SFT job, in TRL's conversational form: its conversation and, where it called tools, their schemas
    (a list, or JSON text of one as the tool_use stage writes it)."""

    messages: list[ChatMessage]
    tools: NotRequired[list[ToolSchema] | str | None]


class PreferenceExample(TypedDict):
    """A row of a DPO job, in TRL's conversational preference form."""

    prompt: list[ChatMessage]
    chosen: list[ChatMessage]
    rejected: list[ChatMessage]
    tools: NotRequired[list[ToolSchema] | str | None]


class TrainingRow(TypedDict, total=False):
    """A row of a training job of either kind, before its kind picks its columns (`launch.training_columns`)."""

    messages: list[ChatMessage]
    prompt: list[ChatMessage]
    chosen: list[ChatMessage]
    rejected: list[ChatMessage]
    tools: list[ToolSchema] | str | None


def training_row(row: dict[str, Any]) -> TrainingRow:
    """The training columns of a dataset row, whose other columns (the user's, an earlier stage's) are left out: where
    a dataset's rows become a training job's."""
    out = TrainingRow()
    if "messages" in row:
        out["messages"] = row["messages"]
    if "prompt" in row:
        out["prompt"] = row["prompt"]
    if "chosen" in row:
        out["chosen"] = row["chosen"]
    if "rejected" in row:
        out["rejected"] = row["rejected"]
    if "tools" in row:
        out["tools"] = row["tools"]
    return out


def sft_example(row: TrainingRow | SFTExample) -> SFTExample:
    """What SFT reads of a row: its conversation, and its tools where it has any."""
    example: SFTExample = {"messages": row["messages"]}
    if row.get("tools"):
        example["tools"] = row["tools"]
    return example


def preference_example(row: TrainingRow | PreferenceExample) -> PreferenceExample:
    """What DPO reads of a row: its preference pair, and its tools where it has any."""
    example: PreferenceExample = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
    if row.get("tools"):
        example["tools"] = row["tools"]
    return example


class PromptCompletion(TypedDict):
    """TRL's prompt/completion form of a conversation: all turns but the last, and the last (an assistant turn)."""

    prompt: list[ChatMessage]
    completion: list[ChatMessage]


class TokenizedExample(TypedDict):
    """TRL's pretokenized form of a conversation: its token ids, and 1 where a token is an assistant's."""

    input_ids: list[int]
    assistant_masks: list[int]


class JobSpec(TypedDict):
    """OUT.launch/job.json: what each process under `accelerate launch` trains (`synthkd.train.worker`)."""

    kind: str  # sft | dpo
    rows: str  # path of the rows file (JSON lines, the training columns only)
    base_model: str  # the weights to load: a local directory (absolute) or a hub name
    out_dir: str  # the checkpoint directory (absolute)
    # The YAML block, passed through to TRL's SFTConfig / DPOConfig: open-ended, checked against TRL's own fields.
    trainer_args: dict[str, Any]
    lora: dict[str, Any] | None  # passed through to peft.LoraConfig; None: full fine-tuning
    seed: int
    fingerprint: str
    evaluate_before: bool
    freeze_embeddings: bool
