"""Model sources: every string synthkd accepts where a model goes (`serve.model_path`, a stage's
`model`, `synthkd train --model`) resolves here to a local directory vLLM and TRL can load.

Forms: a directory; a hub name (needs network); `tiny:NAME` (a random tiny model built locally);
a `.gguf` file (converted once into a content-addressed cache); a packaged short name such as
`smollm2-135m-instruct` (a real chat model shipped on PyPI); and any of these followed by
`?layers=K` or `?layers=0,4,8` for a depth-pruned student made from it.
"""

from synthkd.models.resolve import check_model_spec, resolve_model
from synthkd.models.spec import ModelSpec, parse_model_spec

__all__ = ["ModelSpec", "check_model_spec", "parse_model_spec", "resolve_model"]
