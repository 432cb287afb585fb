"""Tiny local models (`tiny:NAME`), built deterministically in seconds with no network.

A byte-level BPE tokenizer is trained on the project's own seed data and prompts, wrapped as a
PreTrainedTokenizerFast with a chat template, and paired with a small random Llama. vLLM on the
CPU needs a head dimension of at least 64, hence hidden 128 with 2 heads. The models are random:
they exercise every code path (serving, structured outputs, training) but write gibberish.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from synthkd.models.store import build_once
from synthkd.prompts import other_name

_BUILDER_VERSION = "3"
_SPECIALS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# {% generation %} marks the assistant tokens, so TRL's assistant_only_loss works with this template.
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# name -> (layers, seed). Unknown names get the student size and a seed from the name.
_SHAPES = {"teacher": (4, 1), "student": (2, 2), "referee": (4, 3)}


def tiny_layers(name: str) -> int:
    """Layers of tiny model `name` (known without building it)."""
    return _shape(name)[0]


def _shape(name: str) -> tuple[int, int]:
    return _SHAPES.get(name, (2, int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)))


# The text a tiny model's tokenizer is trained on, pinned: adding a data file or a prompt to the project must not
# change every tiny model (and every test outcome built on one). These are the files the corpus held when it was
# pinned; a root that has none of them (another project's) falls back to its own data/ and prompts/. The prompts that
# moved to prompts/common/ keep their place in the order (their bytes did not change), and a root copied from ours
# before the move is read under the old names (`_pinned_file`): the same text, so the same tiny models.
_PINNED_CORPUS = (
    "data/distill/heldout.jsonl", "data/distill/heldout_families.jsonl", "data/distill/heldout_phrasings.jsonl",
    "data/distill/pool.jsonl", "data/lion/heldout_instructions.jsonl", "data/lion/seed_instructions.jsonl",
    "data/montessori/reference.jsonl", "data/rationale/arithmetic_test.jsonl", "data/rationale/arithmetic_train.jsonl",
    "data/skd/heldout_events.jsonl", "data/skd/seed_events.jsonl", "prompts/common/score.jinja2", "prompts/common/answer.jinja2",
    "prompts/lion/generate_easy.jinja2", "prompts/lion/generate_hard.jinja2", "prompts/lion/generate_harder.jinja2",
    "prompts/lion/generate_list.jinja2", "prompts/common/referee.jinja2", "prompts/montessori/synthesize.jinja2",
    "prompts/rationale/inline_target.jinja2", "prompts/rationale/teacher.jinja2", "prompts/rationale/teacher_reasoning.jinja2",
    "prompts/rationale/think_target.jinja2", "prompts/skd/heads.jinja2", "prompts/skd/judge.jinja2",
    "prompts/skd/student_input.jinja2", "prompts/skd/tail.jinja2",
)


def _pinned_file(repo_root: Path, name: str) -> Path:
    """repo_root/name; for a moved prompt (prompts.MOVED) missing there, the file under its other name."""
    path = repo_root / name
    other = other_name(name.removeprefix("prompts/")) if name.startswith("prompts/") else None
    return repo_root / "prompts" / other if other and not path.is_file() else path


def _corpus_files(repo_root: Path) -> list[Path]:
    pinned = [path for path in (_pinned_file(repo_root, name) for name in _PINNED_CORPUS) if path.is_file()]
    if pinned:
        return pinned
    files = sorted((repo_root / "data").rglob("*.jsonl")) + sorted((repo_root / "prompts").rglob("*.jinja2"))
    return [f for f in files if f.is_file()]


def _digest(repo_root: Path, name: str) -> str:
    h = hashlib.sha256(f"{_BUILDER_VERSION}:{name}:{_SHAPES.get(name)}".encode())
    for f in _corpus_files(repo_root):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def tiny_model_dir(home: Path, repo_root: Path, name: str) -> Path:
    """Path of tiny model `name`, built on first use (safe against concurrent builders)."""
    target = home / "tiny" / f"{name}-{_digest(repo_root, name)}"
    return build_once(target, lambda tmp: _build(tmp, repo_root, name))


def _training_text(repo_root: Path) -> list[str]:
    lines: list[str] = ['{"score_assistant_1": 7, "score_assistant_2": 3}', '{"instruction": "x"}']
    for f in _corpus_files(repo_root):
        if f.suffix == ".jsonl":
            for raw in f.read_text().splitlines():
                try:
                    lines.extend(str(v) for v in json.loads(raw).values())
                except (json.JSONDecodeError, AttributeError):
                    continue
        else:
            lines.append(f.read_text())
    return lines


def _byte_symbol(b: int) -> str:
    """The character a byte-level BPE uses for byte b (printable bytes stand for themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    if b in printable:
        return chr(b)
    return chr(256 + sorted(set(range(256)) - set(printable)).index(b))


# Printable ASCII plus space, newline and tab. Leaving the other bytes out of the vocabulary keeps a
# random model from writing control characters and broken UTF-8 (bytes seen in the corpus still get in).
_ALPHABET = [_byte_symbol(b) for b in (9, 10, *range(32, 127))]


def _build(out: Path, repo_root: Path, name: str) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=_SPECIALS, initial_alphabet=_ALPHABET, show_progress=False
    )
    tok.train_from_iterator(_training_text(repo_root), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None, unk_token=None,
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.model_max_length = 2048

    layers, seed = _shape(name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    fast.save_pretrained(str(out))
    (out / "synthkd_fingerprint.txt").write_text(f"tiny:{name}:{out.name}")
