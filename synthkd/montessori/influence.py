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
set: ~5x with 16 reference examples on the tiny student, ~10x with 128.

Everything is deterministic for a given seed: float32 weights, dropout off while measuring
(the model is in eval mode for the one-step update and the gradients; the warm-up trains in train
mode), a seeded warm-up order and seeded projections (drawn on the model's device, so a CPU and a
GPU draw different ones). No gradient clipping, and no weight decay unless given (weight_decay), so
a step depends only on the candidate and the warm-up state.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Sequence
from typing import Any

Example = dict[str, Any]

_PARAM_SETS = ("all", "lora", "last_layers")
_ENGINES = ("auto", "jvp", "grad")
_LORA_TARGETS = ("q_proj", "v_proj")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")
# A projection chunk holds at most this many floats (16 MB in float32).
_PROJECTION_CHUNK_FLOATS = 1 << 22


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


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; ties share their mean rank).

    nan when there are fewer than two values or either side is constant.
    """
    if len(a) != len(b):
        raise ValueError(f"spearman needs sequences of equal length, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return float("nan")
    return cov / math.sqrt(va * vb)


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ranks are 1-based; a tie group gets its mean rank
        i = j + 1
    return ranks


class InfluenceModel:
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

    # -- first-order influence ------------------------------------------------------------------

    def selected_parameters(self, params: str = "all") -> list[tuple[str, Any]]:
        """(name, parameter) pairs the first-order estimate differentiates (see the module doc)."""
        if params not in _PARAM_SETS:
            raise ValueError(f"params must be one of {_PARAM_SETS}, got {params!r}")
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]  # tied weights once
        if params == "all":
            return named
        if params == "lora":
            chosen = [(n, p) for n, p in named if n.endswith(".weight") and n.rsplit(".", 2)[-2] in _LORA_TARGETS]
            if not chosen:
                raise ValueError(f"params='lora' found no {'/'.join(_LORA_TARGETS)} weights in this model")
            return chosen
        return self._last_layer_parameters(named)

    def _last_layer_parameters(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        import torch

        stacks = [(n, m) for n, m in self.model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
        if not stacks:
            raise ValueError("params='last_layers' found no stack of decoder layers in this model")
        stack_name, stack = max(stacks, key=lambda item: len(item[1]))
        wanted = {id(p) for p in stack[len(stack) - 1].parameters()}
        parent = self.model.get_submodule(stack_name.rsplit(".", 1)[0]) if "." in stack_name else self.model
        for child_name, child in parent.named_children():
            if child_name in _FINAL_NORM_NAMES:
                wanted |= {id(p) for p in child.parameters()}
        head = self.model.get_output_embeddings()
        if head is not None:
            wanted |= {id(p) for p in head.parameters()}
        return [(n, p) for n, p in named if id(p) in wanted]

    def first_order(self, candidates: list[Example], reference: list[Example], *, params: str = "all",
                    projection_dim: int | None = None, engine: str = "auto", batch_size: int = 16) -> list[float]:
        """Per candidate: -lr * <g_ref, g_c> at the warm-up state (with projection_dim: <Pg_ref, Pg_c> / k)."""
        import torch

        if engine not in _ENGINES:
            raise ValueError(f"engine must be one of {_ENGINES}, got {engine!r}")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim must be a positive integer, got {projection_dim}")
        selected = self.selected_parameters(params)
        cand = [self._encode(c) for c in candidates]
        self._restore()
        g_ref = self._reference_gradient([self._encode(r) for r in reference], selected, batch_size)
        # Candidates' gradients that fit in 256 MB are projected together, in one pass over P.
        group = max(1, min(len(cand), (1 << 28) // max(1, g_ref.numel() * 4)))
        if engine == "auto" and projection_dim is not None and self.device.type == "cpu" and group >= len(cand):
            # On a CPU, drawing P's k x d Gaussians costs more than the backward passes: one pass
            # over P (grad) beats the two that P^T P g_ref takes (jvp).
            engine = "grad"
        if engine != "grad":
            direction = g_ref if projection_dim is None else self._sketch_back(
                self._sketch(g_ref.unsqueeze(0), projection_dim)[0], projection_dim, g_ref.numel())
            try:
                dots = self._directional_derivatives(cand, selected, direction, batch_size)
                return [-self.learning_rate * d for d in dots]
            except (NotImplementedError, RuntimeError) as exc:
                if engine == "jvp" or not _is_forward_ad_gap(exc):
                    raise
        if projection_dim is None:
            dots = [float(torch.dot(g_ref.double(), self._candidate_gradient(c, selected).double())) for c in cand]
            return [-self.learning_rate * d for d in dots]
        dots = []
        ref_sketch = None
        for start in range(0, len(cand), group):
            rows = [self._candidate_gradient(c, selected) for c in cand[start : start + group]]
            if ref_sketch is None:  # g_ref rides along with the first group
                sketches = self._sketch(torch.stack([g_ref, *rows]), projection_dim)
                ref_sketch, sketches = sketches[0], sketches[1:]
            else:
                sketches = self._sketch(torch.stack(rows), projection_dim)
            dots.extend(float(x) for x in (sketches @ ref_sketch) / projection_dim)
        return [-self.learning_rate * d for d in dots]

    def _reference_gradient(self, encoded: list[tuple[list[int], list[int]]], selected: list[tuple[str, Any]],
                            batch_size: int) -> Any:
        """Flat gradient of the mean reply-token reference loss over the selected parameters."""
        import torch

        total_tokens = sum(self._reply_tokens(e) for e in encoded)
        if total_tokens == 0:
            raise ValueError("the reference set has no reply tokens (empty replies, or prompts longer than max_length)")
        tensors = [p for _, p in selected]
        acc = [torch.zeros_like(p) for p in tensors]
        for start in range(0, len(encoded), batch_size):
            sums, _ = self._loss_sums(encoded[start : start + batch_size])
            grads = torch.autograd.grad(sums.sum() / total_tokens, tensors, allow_unused=True)
            for a, g in zip(acc, grads):
                if g is not None:
                    a += g
        return torch.cat([a.reshape(-1) for a in acc])

    def _candidate_gradient(self, encoded: tuple[list[int], list[int]], selected: list[tuple[str, Any]]) -> Any:
        import torch

        sums, counts = self._loss_sums([encoded])
        tensors = [p for _, p in selected]
        grads = torch.autograd.grad(sums.sum() / counts.sum().clamp(min=1), tensors, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, tensors)])

    def _directional_derivatives(self, encoded: list[tuple[list[int], list[int]]], selected: list[tuple[str, Any]],
                                 direction: Any, batch_size: int) -> list[float]:
        """<direction, gradient of each candidate's mean reply loss>, batched with forward-mode AD."""
        import torch

        primals = {n: p.detach() for n, p in selected}
        tangents: dict[str, Any] = {}
        offset = 0
        for n, p in selected:
            tangents[n] = direction[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        previous = getattr(self.model.config, "_attn_implementation", None)
        switch = previous not in (None, "eager") and hasattr(self.model, "set_attn_implementation")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # batches of similar lengths pad less
        out = [0.0] * len(encoded)
        try:
            if switch:
                self.model.set_attn_implementation("eager")
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = [encoded[i] for i in rows]

                def mean_losses(values: dict[str, Any], batch: list[tuple[list[int], list[int]]] = batch) -> Any:
                    sums, counts = self._loss_sums(batch, values)
                    return sums / counts.clamp(min=1)

                with torch.no_grad():  # forward-mode AD needs no tape
                    _, jvp_out = torch.func.jvp(mean_losses, (primals,), (tangents,))
                for i, value in zip(rows, jvp_out.double().tolist()):
                    out[i] = value
        finally:
            if switch:
                self.model.set_attn_implementation(previous)
        return out

    # -- random projection ----------------------------------------------------------------------

    def _projection_chunks(self, dim: int, k: int):  # type: ignore[no-untyped-def]
        """(start, stop, P[:, start:stop]) over the columns of the fixed k x dim Gaussian projection."""
        import torch

        width = max(1, _PROJECTION_CHUNK_FLOATS // k)
        for index, start in enumerate(range(0, dim, width)):
            stop = min(dim, start + width)
            gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + index)
            yield start, stop, torch.randn(k, stop - start, generator=gen, device=self.device, dtype=torch.float32)

    def _sketch(self, rows: Any, k: int) -> Any:
        """rows (n x d) @ P^T: each row's k-dimensional projection."""
        import torch

        out = torch.zeros(rows.shape[0], k, device=self.device, dtype=torch.float64)
        for start, stop, chunk in self._projection_chunks(rows.shape[1], k):
            out += (rows[:, start:stop] @ chunk.T).double()
        return out

    def _sketch_back(self, sketch: Any, k: int, dim: int) -> Any:
        """P^T sketch / k (length dim): the direction v with <v, g> = <sketch, P g> / k for every g."""
        import torch

        out = torch.empty(dim, device=self.device, dtype=torch.float32)
        sketch = sketch.float()
        for start, stop, chunk in self._projection_chunks(dim, k):
            out[start:stop] = (chunk.T @ sketch) / k
        return out


def _is_forward_ad_gap(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "forward ad" in text or "forward-mode" in text or "jvp" in text
