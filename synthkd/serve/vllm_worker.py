"""Code that runs inside a vLLM server synthkd starts: a worker extension (vLLM's --worker-extension-cls).

It adds one method, called through vLLM's POST /collective_rpc (serve/reload.py): load a checkpoint's weights in
place, then prepare again what vLLM prepares once from the loaded weights. vLLM's own `reload_weights` refreshes the
layers it loads, but a layer that loads nothing from the checkpoint keeps what it prepared at start; on the CPU the
output layer of a model with tied embeddings is such a layer (its matrix is the embedding, packed once for the CPU
matmul), so a student whose tied embeddings were trained answered from the old ones (log-probabilities off by up to
4.7 nats, measured). Nothing here is imported by synthkd itself, only by vLLM's worker.
"""

from __future__ import annotations

from typing import Any


class ReloadInPlace:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def synthkd_reload_weights(self: Any, weights_path: str) -> None:
        """Load the weights at `weights_path` into the running model, then re-prepare the embedding-backed layers."""
        self.reload_weights(weights_path=weights_path)
        for module in self.model_runner.get_model().modules():
            method = getattr(module, "quant_method", None)
            # The unquantized embedding method prepares both the input embedding and the output layer tied to it.
            if type(method).__name__ == "UnquantizedEmbeddingMethod":
                method.process_weights_after_loading(module)
