"""The student's negative log-likelihood of reference answers (nats per answer token), as MiniLLM and
DistiLLM log beside ROUGE-L: lower means the student puts more mass on what the teacher said."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

# What an answer follows: a single instruction (one user turn), or the conversation before it (chat messages).
Context = str | list[dict[str, Any]]

from synthkd.models.store import weights_fingerprint


def cached_answer_nll(model_dir: str, pairs: Sequence[tuple[Context, str]], cache_dir: Path) -> list[float]:
    """answer_nll, remembered on disk by (weights fingerprint, pairs): the teacher's NLL of its own
    held-out answers is the same number in every run and arm that uses it, and costs a 30-layer pass."""
    key = hashlib.sha256(json.dumps([weights_fingerprint(model_dir), list(pairs)]).encode()).hexdigest()[:24]
    path = cache_dir / f"{key}.json"
    if path.is_file():
        return [float(v) for v in json.loads(path.read_text())]
    values = answer_nll(model_dir, pairs)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(values))
    os.replace(tmp, path)
    return values


def answer_nll(model_dir: str, pairs: Sequence[tuple[Context, str]], batch_size: int = 16) -> list[float]:
    """Per-pair mean NLL of `answer` (and the end-of-turn token) after the chat-formatted context: an instruction
    (one user turn) or the conversation so far."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    eos = tokenizer.eos_token or ""
    sequences: list[tuple[list[int], int]] = []  # (ids, index where the answer starts)
    for context, answer in pairs:
        messages = [{"role": "user", "content": context}] if isinstance(context, str) else context
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(answer + eos, add_special_tokens=False)["input_ids"]
        sequences.append((p_ids + a_ids, len(p_ids)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (seq, _) in enumerate(batch):
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            for row, (seq, a_start) in enumerate(batch):
                tok = -logp[row, a_start - 1:len(seq) - 1]
                out.append(float(tok.mean()) if tok.numel() else float("nan"))
    return out
