# make test: the whole suite. make demo: run workflows/im_animation_demo.json headless in the real ComfyUI.
# Both set themselves up on a fresh machine: .venv, the pinned torch pair, ComfyUI's and this pack's needs.
# make eval: held-out metrics (scripts/eval.py); pass its options with ARGS, e.g.
#   make eval ARGS="--pairs 8 --write docs/results.md"   or   make eval ARGS="--pairs 2 --seed 7 --json out/eval.json"
VENV ?= .venv
PY := $(VENV)/bin/python
# ComfyUI: $COMFYUI_PATH, else the ComfyUI this pack is installed in, else ../shared/ComfyUI.
COMFYUI_PATH ?= $(if $(and $(wildcard ../../main.py),$(filter custom_nodes,$(notdir $(abspath ..)))),$(abspath ../..),$(abspath ../shared/ComfyUI))
export COMFYUI_PATH
STAMP := $(VENV)/.ima-setup-done

.PHONY: setup test demo lint bench workflows images eval ablations train-demo

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.2
	$(PY) -m pip install -q --disable-pip-version-check -r $(COMFYUI_PATH)/requirements.txt \
		-r requirements.txt -r requirements-dev.txt
	@# Browser tests: Debian's chromium (never `playwright install`); as root install it, else say so loudly.
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
		echo "!!! apt-get install chromium FAILED: the browser tests will be SKIPPED !!!" >&2; \
		else echo "!!! chromium is missing and this is not root: the browser tests will be SKIPPED" \
		"(run as root: apt-get install -y chromium) !!!" >&2; fi; }
	touch $@

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m bench.bench_tokenizer
	$(PY) -m bench.bench_injection

eval: $(STAMP)
	$(PY) scripts/eval.py $(ARGS)

workflows: $(STAMP)
	$(PY) scripts/build_workflows.py

images: $(STAMP)
	IMA_UPDATE_IMAGES=1 $(PY) -m pytest -q tests/browser

ablations: $(STAMP)
	$(PY) scripts/ablations.py $(ARGS)

train-demo: $(STAMP)
	$(PY) scripts/train_demo.py $(ARGS)
