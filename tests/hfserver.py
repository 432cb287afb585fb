"""A TEST stand-in for vLLM: an OpenAI-compatible chat-completions server for a local Hugging Face model, on the CPU.

Used only where a test's point is not vLLM itself (vLLM takes about 25 s to start here; this takes a few seconds):
it serves a real, trainable model (``tiny:student``, a checkpoint TRL wrote) through ``serve.command``
(``tests/conftest.py::hf_served``). Standard library and transformers only. Run it with
``python -m tests.hfserver --host H --port P --model DIR --name NAME`` from the repository root, or as
``python tests/hfserver.py ...`` from anywhere (it imports nothing of the project's).

``GET /health`` answers 200 (the model is loaded before the port opens), ``GET /v1/models`` lists NAME, and
``POST /collective_rpc`` with method ``reload_weights`` and ``kwargs.weights_path`` loads other weights (and
``POST /reset_prefix_cache`` answers 200), as vLLM's development endpoints do (synthkd/serve/reload.py);
``POST /v1/chat/completions`` takes ``messages`` (rendered with the tokenizer's chat template and its generation
prompt), ``max_tokens`` or ``max_completion_tokens``, ``temperature`` (0 or absent: greedy; above 0: sampling,
deterministic for a given ``seed``), ``top_p``, ``stop`` and ``n`` (choice i samples with seed + i). Generation stops
at the tokenizer's eos (``finish_reason`` ``stop``) or at the cap (``length``); ``usage`` counts tokens with the
model's tokenizer. Any model name is answered (a shared server serves several names). Requests are generated one
at a time, under a lock. Other request fields (response_format, ...) are ignored.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MAX_TOKENS = 256


class Model:
    """A causal LM and its tokenizer; `complete` answers one chat request body."""

    def __init__(self, path: str, name: str) -> None:
        import torch
        from transformers import AutoTokenizer

        self.torch, self.name, self.lock = torch, name, threading.Lock()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = self._load(path)
        self.limit = int(getattr(self.model.config, "max_position_embeddings", 2048))

    def reload(self, path: str) -> None:
        """Answer from the weights at `path` from now on (the tokenizer stays), as vLLM's reload_weights does."""
        model = self._load(path)
        with self.lock:
            self.model = model
        print(f"hfserver: weights from {path}", flush=True)

    def _load(self, path: str) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=self.torch.float32).eval()

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat.completion object for a request body; ValueError for a request the server refuses (400)."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        text = self.tokenizer.apply_chat_template(
            [{"role": m["role"], "content": _text(m.get("content"))} for m in messages], tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        room = self.limit - ids.shape[1]
        if room < 1:
            raise ValueError(f"the prompt has {ids.shape[1]} tokens; the model takes {self.limit}")
        cap = min(int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS), room)
        temperature, seed = float(body.get("temperature") or 0.0), body.get("seed")
        stops = [body["stop"]] if isinstance(body.get("stop"), str) else list(body.get("stop") or [])
        n = int(body.get("n") or 1)
        if n < 1:
            raise ValueError("`n` must be at least 1")
        choices, completion_tokens = [], 0
        for index in range(n):
            sampling: dict[str, Any] = {"do_sample": False}
            if temperature > 0:
                sampling = {"do_sample": True, "temperature": temperature, "top_p": float(body.get("top_p") or 1.0), "top_k": 0}
            with self.lock, self.torch.no_grad():
                if temperature > 0 and seed is not None:
                    self.torch.manual_seed(int(seed) + index)
                out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=cap,
                                          eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                                          **sampling)[0, ids.shape[1]:].tolist()
            finish = "stop" if out and out[-1] == self.tokenizer.eos_token_id else "length"
            content = self.tokenizer.decode(out, skip_special_tokens=True)
            cut = min((content.find(s) for s in stops if s and s in content), default=-1)
            if cut >= 0:  # a stop string ends the reply, without the stop string, as vLLM does
                content, finish = content[:cut], "stop"
                out = self.tokenizer(content, add_special_tokens=False)["input_ids"]
            completion_tokens += len(out)
            choices.append({"index": index, "message": {"role": "assistant", "content": content}, "finish_reason": finish})
        prompt_tokens = int(ids.shape[1])
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.name), "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


def _text(content: Any) -> str:
    """A message's content as text (a list of parts, as some clients send, is joined)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses its connections
    model: Model

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error"}})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            self._send(200, {})
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.model.name, "object": "model", "owned_by": "hfserver"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/reset_prefix_cache":  # vLLM's development endpoints, as synthkd uses them (serve/reload.py)
            return self._send(200, {})
        if self.path == "/collective_rpc":
            body = json.loads(raw)
            if body.get("method") != "reload_weights":
                return self._error(400, f"unknown method {body.get('method')!r}")
            self.model.reload(body["kwargs"]["weights_path"])
            return self._send(200, {"results": [None]})
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        try:
            body = json.loads(raw)
            self._send(200, self.model.complete(body))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._error(400, f"bad request: {exc}")
        except Exception as exc:  # noqa: BLE001 (a failed generation is a 500 reply, not a dead server)
            self._error(500, f"{type(exc).__name__}: {exc}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request would fill the server log synthkd keeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="local model directory")
    parser.add_argument("--name", required=True, help="the served model name")
    args = parser.parse_args()
    Handler.model = Model(args.model, args.name)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"hfserver: {args.name} ({args.model}) on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
