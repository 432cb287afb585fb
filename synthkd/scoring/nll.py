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


def cached_answer_nll(model_dir: str, pairs: Sequence[tuple[Context, str]], cache_dir: Path,
                      ended: Sequence[bool] | None = None) -> list[float]:
    """answer_nll, remembered on disk by (weights fingerprint, pairs, which answers ended): the student's NLL of the
    teacher's held-out answers is the same number in every run and arm that scores the same weights."""
    cut = [i for i, e in enumerate(ended or []) if not e]  # in the key only where some answer was cut
    key = hashlib.sha256(json.dumps([weights_fingerprint(model_dir), list(pairs), *([cut] if cut else [])]).encode()).hexdigest()[:24]
    path = cache_dir / f"{key}.json"
    if path.is_file():
        return [float(v) for v in json.loads(path.read_text())]
    values = answer_nll(model_dir, pairs, ended=ended)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(values))
    os.replace(tmp, path)
    return values


def answer_nll(model_dir: str, pairs: Sequence[tuple[Context, str]], batch_size: int = 32,
               ended: Sequence[bool] | None = None) -> list[float]:
    """Per-pair mean NLL of `answer` and the end-of-turn token after the chat-formatted context: an instruction
    (one user turn) or the conversation so far. `ended[i]` False: answer i was cut by a token cap, so its writer never
    ended the turn there and the end-of-turn token is not scored (a model that wanted to go on would pay for it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthkd.models.heads import answer_head

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    eos = tokenizer.eos_token or ""
    sequences: list[tuple[list[int], int]] = []  # (ids, index where the answer starts)
    for i, (context, answer) in enumerate(pairs):
        messages = [{"role": "user", "content": context}] if isinstance(context, str) else context
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(answer + (eos if ended is None or ended[i] else ""), add_special_tokens=False)["input_ids"]
        sequences.append((p_ids + a_ids, len(p_ids)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # batches of similar length: padding is work thrown away
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    out = [float("nan")] * len(sequences)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = [sequences[i] for i in index]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            select = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (seq, a_start) in enumerate(batch):
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
                select[row, a_start - 1:len(seq) - 1] = True  # position t scores token t+1, from the prompt's last on
            targets = torch.roll(ids, -1, dims=1)[select]
            head = answer_head(model, ids, mask)  # the head on the answer positions only, where the model allows it
            logits = head.logits(ids, mask, select) if head else model(input_ids=ids, attention_mask=mask).logits[select]
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            for i, tok in zip(index, torch.split(-logp, select.sum(dim=1).tolist())):
                if tok.numel():
                    out[i] = float(tok.mean())
    return out
