"""First-order local data influence (see synthkd.montessori.influence for the definitions and engines).

`FirstOrderMixin` holds the estimate -lr * <g_ref, g_c>, its parameter subsets and random
projections. It is mixed into `InfluenceModel` and uses its model, warm-up state and losses:
`model`, `device`, `seed`, `learning_rate`, `_encode`, `_loss_sums`, `_reply_tokens`, `_restore`.
"""

from __future__ import annotations

from typing import Any

Example = dict[str, Any]

PARAM_SETS = ("all", "lora", "last_layers")
ENGINES = ("auto", "jvp", "grad")
_LORA_TARGETS = ("q_proj", "v_proj")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")
# A projection chunk holds at most this many floats (16 MB in float32).
_PROJECTION_CHUNK_FLOATS = 1 << 22


class FirstOrderMixin:
    """-lr * <g_ref, g_c> for each candidate c, at the warm-up state (mixed into InfluenceModel)."""

    model: Any
    device: Any
    seed: int
    learning_rate: float

    # -- first-order influence ------------------------------------------------------------------

    def selected_parameters(self, params: str = "all") -> list[tuple[str, Any]]:
        """(name, parameter) pairs the first-order estimate differentiates (see the module doc)."""
        if params not in PARAM_SETS:
            raise ValueError(f"params must be one of {PARAM_SETS}, got {params!r}")
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

        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
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
