"""Local data influence of synthetic examples on a student (Montessori-Instruct, Li, Yu, Xiong, ICLR 2025).

The *warm-up state* is the student's weights and optimizer state after a short training run on a
warm-up set (or the base weights and an empty optimizer state if there was none). The *reference
loss* L_ref is the student's mean response-only token loss over a reference set: the sum of the
token losses on the assistant's reply, over all reference examples, divided by their number of
reply tokens (prompt tokens and padding are labelled -100 and not counted).

Exact local influence of a candidate c (`InfluenceModel.exact`), as in the paper:

    restore the warm-up weights and optimizer state
    one optimizer step on c alone (its mean response-only loss, batch size 1)
    influence(c) = L_ref(after the step) - L_ref(warm-up state)

Sign convention: **negative influence = helpful** (training on c lowers the reference loss),
positive = harmful; utility is the negation.

First-order estimate (`InfluenceModel.first_order`): for a plain SGD step theta' = theta - lr * g_c,
a Taylor expansion gives L_ref(theta') - L_ref(theta) ~= -lr * <g_ref, g_c>, with g_ref the gradient
of L_ref and g_c the gradient of c's loss, both at the warm-up state. With SGD the estimate is
exact up to O(lr^2); with AdamW the real step is preconditioned by the warm-up's moments (and, from
an empty state, is close to lr * sign(g_c)), so the dot product is only a proxy. `optimizer="sgd"`
is the default here for that reason: on the tiny student (benchmarks/influence.py) the Spearman
correlation of first order with exact is 0.99-1.00 with SGD and 0.93-0.96 with AdamW.

Options of the estimate:
  * params: "all" (every parameter), "last_layers" (the last decoder layer, the final norm and the
    output embedding; with tied embeddings that is the input embedding as well), or "lora": the
    attention q_proj / v_proj weight matrices, the modules PEFT's default LoRA config adapts for
    Llama-style models. A LoRA adapter at initialisation (B = 0) sees a random projection of
    exactly these gradients, so the restriction is a faithful stand-in without building adapters.
  * projection_dim=k: a fixed Gaussian projection P (k x d, entries N(0, 1), seeded, generated in
    chunks of columns so that no more than ~16 MB of it exists at a time), and the estimate uses
    <P g_ref, P g_c> / k, an unbiased estimate of <g_ref, g_c> (the sketch of TRAK / LESS).

Two engines compute the same numbers:
  * "grad": one backward pass per candidate, its gradient flattened and dotted with g_ref (with a
    projection, candidates' gradients are projected in groups, one pass over P per group).
  * "jvp": <v, g_c> is the directional derivative of c's loss along v, so forward-mode autodiff
    (torch.func.jvp) gives it for a whole batch of candidates in one forward pass, with v = g_ref,
    or v = P^T P g_ref / k with a projection, which makes <v, g_c> = <P g_ref, P g_c> / k exactly.
    Candidate gradients are never materialised. Attention runs in its eager implementation during
    these passes (fused attention kernels have no forward-mode derivative).
  "auto" (the default) uses jvp, and falls back to grad where an operation lacks forward-mode
  support; with a projection on a CPU it uses grad when all candidates' gradients fit in 256 MB,
  since drawing P's k x d Gaussians then dominates and grad needs one pass over P, jvp two.

Cost: exact runs, per candidate, a forward and backward pass on it and a forward pass over the
whole reference set; first order runs one backward pass over the reference set, then about three
forward passes' worth of work per candidate (jvp). The speed-up therefore grows with the reference
set: ~5x with 16 reference examples on the tiny student, ~12x with 256 (the size the paper's
code uses).

Everything is deterministic for a given seed: float32 weights, dropout off while measuring
(the model is in eval mode for the one-step update and the gradients; the warm-up trains in train
mode), a seeded warm-up order and seeded projections (drawn on the model's device, so a CPU and a
GPU draw different ones). No gradient clipping, and no weight decay unless given (weight_decay), so
a step depends only on the candidate and the warm-up state.

Layout: this module holds the warm-up state, the losses and exact influence; the first-order
estimate lives in `synthkd.montessori.first_order` (mixed into InfluenceModel), Spearman's rank
correlation in `synthkd.montessori.ranking`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from synthkd.montessori.first_order import Example, FirstOrderMixin
from synthkd.montessori.ranking import spearman

__all__ = ["InfluenceModel", "encode_example", "spearman"]


def encode_example(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a chat example; labels are -100 except on the final assistant reply.

    The full conversation and the prompt (all messages but the last, with the generation prompt)
    are rendered with the chat template and tokenized without special tokens; the prompt's tokens
    are masked. If the two tokenizations disagree at the boundary, only the common prefix is masked.
    Both are truncated to max_length tokens (prompt first, so a long prompt leaves no reply tokens).
    """
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"an example needs a non-empty 'messages' list, got {example!r:.200}")
    if messages[-1].get("role") != "assistant":
        raise ValueError(f"the last message must be the assistant's reply, got role {messages[-1].get('role')!r}")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    n_prompt = 0
    for a, b in zip(full_ids, prompt_ids):
        if a != b:
            break
        n_prompt += 1
    labels = [-100] * n_prompt + full_ids[n_prompt:]
    return full_ids[:max_length], labels[:max_length]


class InfluenceModel(FirstOrderMixin):
    """A student with a warm-up state, measuring candidates' local data influence (see the module doc)."""

    def __init__(self, model_dir: str, *, learning_rate: float = 1e-4, optimizer: str = "sgd", max_length: int = 256,
                 seed: int = 0, device: str | None = None, weight_decay: float = 0.0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.learning_rate = float(learning_rate)
        self.optimizer_name = optimizer
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.weight_decay = float(weight_decay)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(self.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)  # padding is masked anyway
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(self.device)
        self.model.eval()
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        params = [p for p in self.model.parameters() if p.requires_grad]
        if optimizer == "adamw":
            self.optimizer: Any = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        self._snapshot()

    # -- warm-up state -------------------------------------------------------------------------

    def _snapshot(self) -> None:
        self._warm_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._warm_optimizer = copy.deepcopy(self.optimizer.state_dict())

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _restore(self) -> None:
        self.model.load_state_dict(self._warm_model)
        # load_state_dict keeps the given state tensors (same dtype and device): copy, or steps
        # would update the snapshot in place.
        self.optimizer.load_state_dict(copy.deepcopy(self._warm_optimizer))
        self.optimizer.zero_grad(set_to_none=True)

    def warmup(self, examples: list[Example], epochs: int = 1, batch_size: int = 8,
               learning_rate: float | None = None) -> dict[str, Any]:
        """Train from the current warm-up state on `examples`; the result becomes the warm-up state.

        Plain loop: shuffled (seeded) batches, mean response-only token loss per batch, one
        optimizer step per batch. learning_rate: of this run only (default: the model's); the
        one-step updates and the first-order estimate always use the model's learning_rate.
        Returns {"loss": mean of the batch losses, "steps": n}.
        """
        import torch

        if epochs < 0 or batch_size < 1:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
        if learning_rate is not None and learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        self._restore()
        self._set_lr(learning_rate or self.learning_rate)
        encoded = [self._encode(e) for e in examples]
        gen = torch.Generator().manual_seed(self.seed)
        losses: list[float] = []
        self.model.train()
        try:
            for _ in range(epochs):
                order = torch.randperm(len(encoded), generator=gen).tolist()
                for start in range(0, len(order), batch_size):
                    batch = [encoded[i] for i in order[start : start + batch_size]]
                    sums, counts = self._loss_sums(batch)
                    total = counts.sum()
                    if total == 0:
                        continue
                    loss = sums.sum() / total
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    losses.append(float(loss.detach()))
        finally:
            self.model.eval()
            self.optimizer.zero_grad(set_to_none=True)
            self._set_lr(self.learning_rate)
        self._snapshot()
        return {"loss": sum(losses) / len(losses) if losses else float("nan"), "steps": len(losses)}

    # -- losses ----------------------------------------------------------------------------------

    def _encode(self, example: Example) -> tuple[list[int], list[int]]:
        return encode_example(self.tokenizer, example, self.max_length)

    def _collate(self, batch: list[tuple[list[int], list[int]]]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(batch):  # right padding: real tokens keep positions 0..n-1
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[row, : len(labs)] = torch.tensor(labs, dtype=torch.long)
            mask[row, : len(ids)] = 1
        return input_ids.to(self.device), mask.to(self.device), labels.to(self.device)

    def _loss_sums(self, batch: list[tuple[list[int], list[int]]], params: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """Per example: (sum of reply-token losses, number of reply tokens). params: functional_call overrides."""
        import torch

        input_ids, mask, labels = self._collate(batch)
        target = labels[:, 1:]
        # Logits only where some example in the batch has a reply token to predict: the output
        # layer and the softmax are a large share of a small model's cost.
        positions = (target != -100).any(dim=0).nonzero().squeeze(-1)
        target = target[:, positions]
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if self._keeps_logits:
            inputs["logits_to_keep"] = positions
        if params is None:
            logits = self.model(**inputs).logits
        else:
            logits = torch.func.functional_call(self.model, params, (), inputs, strict=False).logits
        if not self._keeps_logits:
            logits = logits[:, positions]
        keep = target != -100
        # log_softmax + gather rather than cross_entropy: the same numbers, and forward-mode AD works.
        logp = torch.log_softmax(logits.float(), dim=-1)
        token = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        sums = -(token * keep).sum(dim=1)
        return sums, keep.sum(dim=1)

    @staticmethod
    def _reply_tokens(encoded: tuple[list[int], list[int]]) -> int:
        return sum(1 for lab in encoded[1][1:] if lab != -100)

    def reference_loss(self, reference: list[Example], batch_size: int = 16) -> float:
        """Mean reply-token loss over the reference set (token-weighted), with the current weights."""
        return self._reference_loss([self._encode(e) for e in reference], batch_size)

    def _reference_loss(self, encoded: list[tuple[list[int], list[int]]], batch_size: int = 16) -> float:
        import torch

        total_tokens = sum(self._reply_tokens(e) for e in encoded)
        if total_tokens == 0:
            raise ValueError("the reference set has no reply tokens (empty replies, or prompts longer than max_length)")
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                sums, _ = self._loss_sums(encoded[start : start + batch_size])
                total += float(sums.double().sum())
        return total / total_tokens

    # -- exact influence ------------------------------------------------------------------------

    def exact(self, candidates: list[Example], reference: list[Example]) -> list[float]:
        """Per candidate: restore the warm-up state, one optimizer step on it alone, L_ref after - before."""
        encoded = [self._encode(c) for c in candidates]
        ref = [self._encode(r) for r in reference]
        self._restore()
        before = self._reference_loss(ref)
        out: list[float] = []
        try:
            for enc in encoded:
                self._restore()
                sums, counts = self._loss_sums([enc])
                loss = sums.sum() / counts.sum().clamp(min=1)  # no reply tokens: a zero gradient
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                out.append(self._reference_loss(ref) - before)
        finally:
            self._restore()
        return out
