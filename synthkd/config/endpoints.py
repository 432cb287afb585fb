"""Endpoint configuration: one entry of the pipeline's `endpoints:` map."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Sampling(Strict):
    """Sampling parameters sent with each request; unset fields are not sent."""

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, description="Cap on reply tokens; replies cut by it count as truncated.")
    stop: list[str] | None = Field(None, description="Stop sequences.")
    seed: int | None = Field(
        None,
        description="Base seed. Each request gets its own seed derived from this and the request's "
        "identity, so a rerun asks for exactly the same samples (vLLM honours it; hosted APIs mostly do).",
    )
    extra_body: dict[str, Any] | None = Field(None, description="Extra JSON fields passed to the server as they are.")

    def merged(self, other: "Sampling | None") -> "Sampling":
        """This sampling with the fields set in `other` taking precedence."""
        if other is None:
            return self
        return self.model_copy(update=other.model_dump(exclude_none=True))


class Prices(Strict):
    """Prices in USD per million tokens, for cost accounting and `budget_usd`."""

    input_per_million: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_per_million: float = Field(0.0, ge=0, description="USD per million completion tokens.")
    cached_input_per_million: float | None = Field(
        None, ge=0, description="USD per million prompt tokens the provider reports as served from its prompt cache "
        "(usage.prompt_tokens_details.cached_tokens); null: they cost the normal input price.")
    batch_price_factor: float = Field(
        0.5, gt=0, le=1, description="What a reply through the batch API costs, as a fraction of the online price "
        "(OpenAI and most providers with a batch API charge half).")

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> float:
        """Cost of one reply; cached prompt tokens (a part of prompt_tokens) at the cached-input price."""
        if cached_prompt_tokens and self.cached_input_per_million is not None:
            cached = min(cached_prompt_tokens, prompt_tokens)
            return ((prompt_tokens - cached) * self.input_per_million + cached * self.cached_input_per_million
                    + completion_tokens * self.output_per_million) / 1e6
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1e6


class ServeConfig(Strict):
    """Have synthkd start this endpoint itself with vLLM's OpenAI-compatible server."""

    model_path: str = Field(
        ...,
        description="Local model directory, a hub name (needs network), or `tiny:NAME` for a tiny model "
        "synthkd builds locally (deterministic, seconds, no network).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when a GPU is visible, else cpu.")
    port: int | None = Field(None, ge=1, le=65535, description="Fixed port; default: a free one.")
    max_model_len: int = Field(2048, ge=64, description="vLLM --max-model-len.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM --gpu-memory-utilization (GPU only).")
    cpu_kvcache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on the CPU (GiB).")
    compact_json: bool = Field(
        True,
        description="Start vLLM with structured outputs that allow no free whitespace in JSON (xgrammar); "
        "tiny or weak models otherwise pad JSON with whitespace until max_tokens.",
    )
    extra_args: list[str] = Field(default_factory=list, description="More vLLM server arguments, as they are.")
    startup_timeout_s: float = Field(600, gt=0, description="How long to wait for /health before giving up.")
    replicas: int = Field(
        1, ge=1, description="Servers of this model behind the endpoint name; calls go to the least loaded. With a Ray "
        "cluster (pipeline `ray:` or RAY_ADDRESS) each runs on a cluster node, else all run on this machine.")
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per replica (vLLM --tensor-parallel-size); on a Ray cluster each replica's actor holds that many GPUs.")
    command: list[str] | None = Field(
        None, description="Run this OpenAI-compatible server command instead of vLLM (e.g. SGLang, llama.cpp's server), "
        "with {host}, {port}, {model} (the resolved model path) and {name} (the served name) filled in; it must answer "
        "GET /health with 200 once ready.")
    reload_weights: bool | None = Field(
        None, description="When a stage moves this endpoint onto new weights of the same architecture and tokenizer (a "
        "checkpoint it trained), load them into the running server (vLLM's reload_weights: seconds) instead of starting "
        "another (tens of seconds on a CPU, minutes on a GPU). Default (null): on for vLLM servers synthkd starts on this "
        "machine; a `command` server gets it with true if it answers vLLM's POST /collective_rpc and /reset_prefix_cache; "
        "Ray replicas always restart (the endpoints it needs would be open on the node's address); false: always restart.")


class BatchConfig(Strict):
    """Send a stage's uncached calls through the endpoint's batch API (/v1/files, /v1/batches) instead of one by one.

    Cheaper (prices.batch_price_factor) and slower (results within the completion window). Batch ids are kept in
    RUN_DIR/cache.sqlite before synthkd waits, so a rerun after a crash or Ctrl-C polls the same batches and never
    submits a request twice; each reply lands in the request cache exactly as an online reply does.
    """

    enabled: bool = Field(
        True, description="Stages use the batch API on this endpoint unless they say `batch: false`; false: only stages "
        "that say `batch: true` do.")
    poll_interval_s: float = Field(30.0, gt=0, description="Seconds between two looks at a running batch's status.")
    completion_window: Literal["24h"] = Field("24h", description="The provider's completion window (OpenAI takes only 24h).")
    failed_items: Literal["online", "batch"] = Field(
        "online", description="What happens to requests a batch did not answer (an item error, an expired or failed "
        "batch): `online`, sent as ordinary requests at the online price; `batch`, submitted again in a new batch, at "
        "most `max_submissions` times in all, after which they are kept as failed rows (a run that redoes the stage tries them again).")
    max_submissions: int = Field(3, ge=1, description="With failed_items: batch, how often one request may be submitted.")
    min_requests: int = Field(
        1, ge=1, description="A step with fewer uncached requests than this sends them online: a batch's wait is not "
        "worth it for a handful.")
    max_requests_per_batch: int = Field(50_000, ge=1, description="The provider's limit on requests in one batch file.")
    max_bytes_per_batch: int = Field(190_000_000, ge=1024, description="The provider's limit on a batch file's size "
                                     "(OpenAI: 200 MB); larger submissions are split.")


class RayConfig(Strict):
    """Place served replicas on a Ray cluster."""

    address: str = Field(
        "auto", description="What ray.init takes: 'auto' (the cluster this machine belongs to, or RAY_ADDRESS), "
        "'host:port' of a head node, 'ray://host:10001' (Ray Client), or 'local' (start a cluster on this machine).")
    num_cpus_per_replica: float = Field(1.0, ge=0, description="CPUs each replica's actor holds.")


class EndpointConfig(Strict):
    """A named model endpoint: hosted OpenAI-compatible API, or served by synthkd with vLLM."""

    base_url: str | list[str] | None = Field(
        None,
        description="OpenAI-compatible base URL (e.g. https://api.openai.com/v1), or a list of several servers of the "
        "same model (replicas: calls go to the least loaded; one that stops answering is taken out and its calls retried "
        "on the others). When set, this endpoint is remote and `serve` is not used; null: synthkd serves the model.",
    )
    model: str = Field(..., description="Model name sent with each request (the served name for local models).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key. The key itself is never stored."
    )
    serve: ServeConfig | None = Field(None, description="Serve this endpoint locally with vLLM (used when base_url is null).")
    concurrency: int = Field(32, ge=1, description="Requests in flight at once (the hard cap; see `adaptive`).")
    adaptive: bool = Field(
        True, description="Adapt the requests in flight to the endpoint: start at `concurrency`, halve on a 429 (at most "
        "once per round trip, or when x-ratelimit-remaining-requests reaches 0), grow by one after as many successes "
        "as the current limit; never above `concurrency`. false: always `concurrency`.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute limit.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute limit (prompt estimate + max_tokens).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(8, ge=0, description="Retries on 429, 5xx, timeouts and dropped connections.")
    invalid_retries: int = Field(
        2, ge=0, description="Extra samples asked for when a structured reply fails validation or is truncated."
    )
    transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="HTTP transport of the openai client; aiohttp costs less CPU per request."
    )
    sampling: Sampling = Field(default_factory=Sampling, description="Default sampling parameters.")
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="Request field the reply-token cap (sampling.max_tokens) is sent as; some hosted "
        "reasoning models reject max_tokens and take max_completion_tokens. The request cache key does not depend on it.")
    prices: Prices = Field(default_factory=Prices, description="Prices per million tokens (default: free).")
    n_per_request: bool = Field(
        False, description="Ask for a record's k samples in one request with `n` (the prompt is billed once, not k "
        "times); each sample is still cached under its own key, so turning this on or off, or changing k, reuses what "
        "is cached. The samples of one request come from one seeded stream (the seed of its first sample), so they "
        "differ from the k-request samples. A server that answers 400 to n>1 gets single requests for the rest of the "
        "run. Off by default: vLLM on the CPU crashes on a per-request seed together with n>1, and some servers refuse n.")
    cache_identity: str | None = Field(
        None, description="What names this remote endpoint's model in the request-cache key (default: `model@` the first "
        "base URL). A new URL is a new server as far as the cache can tell, so moving an endpoint to another URL asks "
        "again; set this to the old identity (`MODEL@OLD_URL`, the old URL without a trailing slash) to keep using the replies "
        "already paid for at the old URL, when the new one serves the same model.")
    batch: BatchConfig | None = Field(
        None, description="The endpoint's batch API: how stages use it, and its limits. Used with `base_url` only: while "
        "synthkd serves the endpoint itself (`serve`), its requests go online, so swapping the teacher between a hosted "
        "API and local vLLM stays a one-line change.")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # The message never repeats the value: what is pasted here by mistake is usually the key itself.
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError("must be the NAME of the environment variable that holds the API key (letters, digits, _), "
                             "not the key itself; the value is not shown here")
        return value

    @model_validator(mode="after")
    def _remote_or_served(self) -> "EndpointConfig":
        if self.base_url is None and self.serve is None:
            raise ValueError("set either `base_url` (a hosted or already running server) or `serve` (synthkd starts vLLM)")
        if isinstance(self.base_url, list) and (not self.base_url or len(set(self.base_url)) != len(self.base_url)):
            raise ValueError("a list of base URLs must name at least one server, each once")
        if any(urlsplit(url).query or urlsplit(url).fragment for url in self.base_urls):
            # The openai client appends the API path to the URL's text: a query string would swallow it.
            raise ValueError("a base URL cannot carry a query string or fragment (the request path would be appended "
                             "after it); the URL is not shown here, as a query often holds a key")
        if self.api_key_env and any("@" in urlsplit(url).netloc for url in self.base_urls):
            raise ValueError("a base URL with `user:password@` and `api_key_env` would both set the Authorization header; "
                             "keep one (the URL is not shown here, as it holds a password)")
        return self

    @property
    def served(self) -> bool:
        """True when synthkd starts this endpoint's server itself."""
        return self.base_url is None

    @property
    def identity(self) -> str:
        """What names a remote endpoint's model in cache keys and fingerprints: `model@first base URL` (or
        `cache_identity`). The URL is part of it so that two servers that both call their model `local` (the
        placeholder of llama.cpp and LM Studio) never answer from each other's cache."""
        if self.cache_identity:
            return self.cache_identity
        return f"{self.model}@{self.base_urls[0].rstrip('/')}" if self.base_urls else self.model

    @property
    def base_urls(self) -> list[str]:
        """The remote endpoint's servers (one, or several replicas); [] for a served endpoint."""
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
