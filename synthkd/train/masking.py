"""Loss on the assistant turns only, for any chat template.

TRL's `assistant_only_loss` needs a chat template that marks assistant text with `{% generation %}`; most
templates (SmolLM2's, Llama's, Qwen's) have no such markers. synthkd builds the mask itself from the
template's own rendering: each assistant turn's text is what the conversation up to and including that turn
adds to the conversation before it (rendered with the generation prompt), so the mask holds the turn's
content, its tool calls as the template writes them, and its end-of-turn token, and never the user's, the
system's or a tool's text. The conversation is tokenized once, and each token is kept where its characters
fall inside an assistant turn.

This needs a template that renders a conversation prefix by prefix (an earlier turn reads the same once
later turns follow); one that rewrites earlier turns (dropping past reasoning, say) is refused with a message.

Tool calls: a template that writes `tool_calls` itself renders them; for one that does not (SmolLM2's), the
conversation is first written as plain chat by `plain_tool_messages` (documented there and in the README).
"""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

from synthkd.errors import SynthkdError
from synthkd.tools.wire import ChatMessage, JSONValue, ToolSchema
from synthkd.train.examples import TokenizedExample


class _TemplateOptions(TypedDict):
    """The keyword arguments `_render` gives `tokenizer.apply_chat_template`."""

    tokenize: bool
    add_generation_prompt: bool
    tools: NotRequired[list[ToolSchema]]  # only where there are any: a template may write an empty tool list


def _render(tokenizer: Any, messages: list[ChatMessage], tools: list[ToolSchema] | None, generation_prompt: bool) -> str:
    kwargs: _TemplateOptions = {"tokenize": False, "add_generation_prompt": generation_prompt}
    if tools:
        kwargs["tools"] = tools
    return str(tokenizer.apply_chat_template(messages, **kwargs))


def _empty_prompt(tokenizer: Any, tools: list[ToolSchema] | None) -> str:
    """The generation prompt of an empty conversation (an assistant that speaks first); "" where the template needs a turn."""
    try:
        return _render(tokenizer, [], tools, True)
    except Exception:  # noqa: BLE001 (templates index messages[0] and raise whatever jinja2 raises)
        return ""


def assistant_spans(tokenizer: Any, messages: list[ChatMessage], tools: list[ToolSchema] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """(the conversation as the template renders it, the character spans of its assistant turns)."""
    full = _render(tokenizer, messages, tools, False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:i], tools, True) if i else _empty_prompt(tokenizer, tools)
        upto = _render(tokenizer, messages[:i + 1], tools, False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise SynthkdError(
                f"the student's chat template does not render conversations prefix by prefix (assistant turn {i} reads "
                "differently once later turns follow), so synthkd cannot tell its assistant tokens apart",
                fix="train on the last turn only (completion_only_loss: true), or give the student a chat template that "
                "keeps earlier turns as written (tokenizer.chat_template)")
        spans.append((len(before), len(upto)))
    return full, spans


def assistant_masked(tokenizer: Any, messages: list[ChatMessage], tools: list[ToolSchema] | None = None) -> TokenizedExample:
    """TRL's pretokenized form of one conversation: `input_ids` and `assistant_masks` (1 on assistant tokens)."""
    text, spans = assistant_spans(tokenizer, messages, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = []
    for start, end in encoded["offset_mapping"]:
        # a token belongs to a turn when it starts inside it (a token that straddles the turn's start is the
        # template's, e.g. a role header merged with the first word: left out, never the user's text put in)
        mask.append(int(end > start and any(s <= start < e for s, e in spans)))
    if not any(mask):
        raise SynthkdError("a conversation has no assistant tokens to train on",
                           fix="train on conversations with at least one assistant turn")
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": mask}


def renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes tool calls itself (it reads `tool_calls`)."""
    template = tokenizer.chat_template
    text = template if isinstance(template, str) else " ".join(str(t) for t in (template or {}).values()) if isinstance(template, dict) else ""
    return "tool_calls" in text


def plain_tool_messages(messages: list[ChatMessage], tools: list[ToolSchema] | None) -> list[ChatMessage]:
    """A tool-calling conversation as plain chat, for a student whose template cannot write tool calls (SmolLM2's, the
    tiny models'): the tools go into the system message as `<tools>[schemas]</tools>`; each tool call is written
    into its assistant turn as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (after any text); each tool
    result becomes a user turn `<tool_response>{"name": ..., "content": ...}</tool_response>`. The same rendering
    Hermes-style tool-calling models are trained on, so the student learns to write calls a parser can read back."""
    out: list[ChatMessage] = []
    if tools:
        listing = "<tools>" + json.dumps([t.get("function", t) for t in tools], ensure_ascii=False) + "</tools>"
        if messages and messages[0].get("role") == "system":
            out.append({"role": "system", "content": f"{messages[0]['content']}\n{listing}"})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": listing})
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = [f"<tool_call>{json.dumps({'name': c['function']['name'], 'arguments': _arguments(c['function'].get('arguments'))}, ensure_ascii=False)}</tool_call>"
                     for c in m["tool_calls"]]
            text = (m.get("content") or "").strip()
            out.append({"role": "assistant", "content": "\n".join(([text] if text else []) + calls)})
        elif m.get("role") == "tool":
            body = json.dumps({"name": m.get("name"), "content": m.get("content")}, ensure_ascii=False)
            out.append({"role": "user", "content": f"<tool_response>{body}</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def _arguments(value: JSONValue) -> JSONValue:
    """A tool call's arguments, parsed where they are JSON text (text that is not JSON stays text; a dataset's already
    parsed arguments stay as they are)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
