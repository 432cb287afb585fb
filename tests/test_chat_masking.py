"""Loss on assistant turns only, for chat templates with and without TRL's generation markers: the mask
synthkd builds covers each assistant turn (its text and end-of-turn marker) and nothing the user, the system
or a tool wrote, and TRL's trainer turns it into the labels it trains on."""

from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.needs_torch, pytest.mark.needs_trl]

# ChatML as SmolLM2 writes it: no {% generation %} markers, so TRL's own assistant_only_loss cannot use it.
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CONVERSATION = [
    {"role": "system", "content": "You are a patient tutor."},
    {"role": "user", "content": "What is a prime number?"},
    {"role": "assistant", "content": "A whole number above one with no divisors but one and itself."},
    {"role": "user", "content": "Is nine one?"},
    {"role": "assistant", "content": "No: three divides nine."},
    {"role": "user", "content": "And eleven?"},
    {"role": "assistant", "content": "Yes, eleven is prime."},
]


def _tokenizer(home: Path, template: str | None):
    from transformers import AutoTokenizer

    from synthkd.serve.tiny import tiny_model_dir

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir(home, REPO, "student")))
    if template is not None:
        tok.chat_template = template
    return tok


def _runs(tok, ids: list[int], mask: list[int]) -> list[str]:
    """The text of each maximal run of masked tokens."""
    runs, current = [], []
    for token, bit in zip(ids, mask):
        if bit:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


@pytest.mark.parametrize("template", [None, CHATML], ids=["generation-markers", "chatml-no-markers"])
def test_mask_is_the_assistant_turns(template: str | None, synthkd_home: Path) -> None:
    from synthkd.train.masking import assistant_masked

    tok = _tokenizer(synthkd_home, template)
    out = assistant_masked(tok, CONVERSATION)
    assert len(out["input_ids"]) == len(out["assistant_masks"])
    runs = _runs(tok, out["input_ids"], out["assistant_masks"])
    answers = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert len(runs) == len(answers)
    end = "<|im_end|>" if template else "<|end|>"
    for run, answer in zip(runs, answers):
        assert run.strip().startswith(answer) and run.strip().endswith(end), run  # the turn and its end marker
    unmasked = tok.decode([t for t, bit in zip(out["input_ids"], out["assistant_masks"]) if not bit])
    for m in CONVERSATION:
        if m["role"] != "assistant":
            assert m["content"] in unmasked and m["content"] not in "".join(runs)


def test_mask_agrees_with_the_generation_markers(synthkd_home: Path) -> None:
    # Where the template marks assistant text itself, transformers' own mask is inside synthkd's, which adds only the
    # template's text between the marked span and the turn's end.
    from synthkd.train.masking import assistant_masked

    tok = _tokenizer(synthkd_home, None)
    ours = assistant_masked(tok, CONVERSATION)
    theirs = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert list(theirs["input_ids"]) == ours["input_ids"]
    extra = [t for t, a, b in zip(ours["input_ids"], ours["assistant_masks"], theirs["assistant_masks"]) if a and not b]
    assert all(b <= a for a, b in zip(ours["assistant_masks"], theirs["assistant_masks"]))
    assert tok.decode(extra).strip() == ""


def test_trl_trains_on_the_masked_tokens_only(synthkd_home: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from synthkd.serve.tiny import tiny_model_dir
    from synthkd.train.sft import training_examples

    tok = _tokenizer(synthkd_home, CHATML)
    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:5]}]
    examples = training_examples(rows, completion_only=False, assistant_only=True, tokenizer=tok)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir(synthkd_home, REPO, "student")))
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=str(tmp_path), max_length=512, report_to=[], bf16=False),
                         train_dataset=Dataset.from_list(examples), processing_class=tok)
    for example, prepared in zip(examples, trainer.train_dataset):
        trained = [label != -100 for label in prepared["labels"]]
        assert trained == [bool(bit) for bit in example["assistant_masks"]]
        assert any(trained) and not all(trained)


def test_a_template_that_rewrites_earlier_turns_is_refused(synthkd_home: Path) -> None:
    from synthkd.errors import SynthkdError
    from synthkd.train.masking import assistant_masked

    # Shows only the last assistant turn in full, as templates that drop earlier reasoning do.
    rewriting = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|a|>...<|e|>"
                 "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|e|>{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    with pytest.raises(SynthkdError, match="prefix by prefix"):
        assistant_masked(_tokenizer(synthkd_home, rewriting), CONVERSATION)


TRAJECTORY = [
    {"role": "system", "content": "Use tools when you need them."},
    {"role": "user", "content": "What is 17 times 23?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                                                         "function": {"name": "calculator", "arguments": "{\"expression\": \"17 * 23\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "calculator", "content": "391"},
    {"role": "assistant", "content": "The answer is 391."},
]
TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Arithmetic.",
                                           "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]


def test_tool_calls_are_trained_on_with_a_template_that_cannot_write_them(synthkd_home: Path) -> None:
    # SmolLM2's ChatML (and the tiny models' template) know nothing of tools: the trajectory is written as plain chat
    # (tools listed in the system turn, calls as <tool_call> JSON in the assistant turn, results as a user turn), and
    # the loss falls on the call and the answer, never on the tool's result.
    import json

    from synthkd.train.sft import training_examples

    tok = _tokenizer(synthkd_home, CHATML)
    (example,) = training_examples([{"messages": TRAJECTORY, "tools": json.dumps(TOOLS)}], completion_only=False,
                                   assistant_only=True, tokenizer=tok)
    runs = _runs(tok, example["input_ids"], example["assistant_masks"])
    assert len(runs) == 2
    call = runs[0].split("<tool_call>")[1].split("</tool_call>")[0]
    assert json.loads(call) == {"name": "calculator", "arguments": {"expression": "17 * 23"}}
    assert runs[1].startswith("The answer is 391.")
    text = tok.decode(example["input_ids"])
    assert "<tools>" in text and '"calculator"' in text and "<tool_response>" in text
    assert "391" not in runs[0]  # the tool's result is context, not a target


def test_a_column_that_is_not_a_conversation_is_one_line_exit_2(tmp_path: Path) -> None:
    import json

    import yaml

    from tests.conftest import run_cli

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"plain text {i}"}) + "\n" for i in range(3)))
    spec = {"name": "bad", "prompts_dir": str(REPO / "prompts"), "endpoints": {},
            "stages": [{"name": "rows", "type": "load", "path": str(data)},
                       {"name": "sft", "type": "sft", "input": "rows", "model": "tiny:student", "messages_column": "text",
                        "sft": {"max_length": 64}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = run_cli("run", str(path), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "is not a conversation" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "messages_column" in errors[0] and not (tmp_path / "run" / "checkpoints").exists()
