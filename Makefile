# make test: the whole suite, against both supported hosts. make demo: run workflows/im_animation_demo.json headless in
# the real ComfyUI. Both set themselves up on a fresh machine: one virtual environment per host, each with the pinned
# torch pair (tools/constraints.txt holds it), that host's requirements.txt and this pack's needs.
# make eval: held-out metrics (python -m lab.eval); pass its options with ARGS, e.g.
#   make eval ARGS="--pairs 8 --write docs/results.md"   or   make eval ARGS="--pairs 2 --seed 7 --json out/eval.json"
#
# Hosts: COMFYUI_HOST is the default (the ComfyUI this pack is installed in, else ../shared/ComfyUI-0.33, v0.33);
# COMFYUI_FLOOR is the oldest supported ComfyUI (../shared/ComfyUI, v0.8.0). COMFYUI_PATH picks the host of make
# demo, eval, ...; its environment is .venv for the floor and .venv-033 for any other host.
COMFYUI_HOST ?= $(if $(and $(wildcard ../../main.py),$(filter custom_nodes,$(notdir $(abspath ..)))),$(abspath ../..),$(abspath ../shared/ComfyUI-0.33))
COMFYUI_FLOOR ?= $(abspath ../shared/ComfyUI)
HOST_VENV ?= .venv-033
FLOOR_VENV ?= .venv
COMFYUI_PATH ?= $(COMFYUI_HOST)
override COMFYUI_PATH := $(abspath $(COMFYUI_PATH))
export COMFYUI_PATH
VENV ?= $(if $(filter $(abspath $(COMFYUI_FLOOR)),$(COMFYUI_PATH)),$(FLOOR_VENV),$(HOST_VENV))
PY := $(VENV)/bin/python
# Commands that import ComfyUI in-process need its folder ahead of this repository on the module search path (the
# repository's nodes/ would shadow ComfyUI's nodes.py): tools/comfy_path.py. The test suite's conftest does this itself.
COMFY_SEARCH = PYTHONSAFEPATH=1 PYTHONPATH=$(1):$(CURDIR)
COMFY_PY := $(call COMFY_SEARCH,$(COMFYUI_PATH)) $(PY)
STAMP := $(VENV)/.ima-setup-done
SETUP_DEPS := requirements.txt requirements-dev.txt tools/constraints.txt tools/setup_venv.sh

.PHONY: setup test test-host test-floor demo serve lint bench workflows images eval ablations train-demo chromium

setup: $(STAMP) chromium

$(HOST_VENV)/.ima-setup-done: $(SETUP_DEPS) $(COMFYUI_HOST)/requirements.txt
	tools/setup_venv.sh $(HOST_VENV) $(COMFYUI_HOST)
	touch $@

$(FLOOR_VENV)/.ima-setup-done: $(SETUP_DEPS) $(COMFYUI_FLOOR)/requirements.txt
	tools/setup_venv.sh $(FLOOR_VENV) $(COMFYUI_FLOOR)
	touch $@

ifneq ($(filter $(COMFYUI_PATH),$(abspath $(COMFYUI_HOST)) $(abspath $(COMFYUI_FLOOR))),$(COMFYUI_PATH))
$(STAMP): $(SETUP_DEPS) $(COMFYUI_PATH)/requirements.txt
	tools/setup_venv.sh $(VENV) $(COMFYUI_PATH)
	touch $@
endif

# Browser tests: Debian's chromium (never `playwright install`); as root install it, else say so loudly.
chromium:
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
		echo "!!! apt-get install chromium FAILED: the browser tests will be SKIPPED !!!" >&2; \
		else echo "!!! chromium is missing and this is not root: the browser tests will be SKIPPED" \
		"(run as root: apt-get install -y chromium) !!!" >&2; fi; }

# The unit tests once; the server, integration and browser tests against the default host (v0.33); the integration
# tests again against the floor (v0.8), in its own environment (the browser tests check the frontend's exports,
# which are the default host's).
test: test-host test-floor

test-host: $(HOST_VENV)/.ima-setup-done chromium
	$(HOST_VENV)/bin/python -m ruff check .
	COMFYUI_PATH=$(COMFYUI_HOST) $(HOST_VENV)/bin/python -m pytest -q tests

ifeq ($(wildcard $(COMFYUI_FLOOR)/main.py),)
test-floor:
	@echo "!!! no ComfyUI at $(COMFYUI_FLOOR) (COMFYUI_FLOOR): the integration tests against the v0.8.0 floor" \
		"were NOT run !!!" >&2
else
test-floor: $(FLOOR_VENV)/.ima-setup-done
	COMFYUI_PATH=$(COMFYUI_FLOOR) $(FLOOR_VENV)/bin/python -m pytest -q tests/integration -m "not default_host_only"
endif

demo: $(STAMP)
	$(COMFY_PY) -m tools.demo

# make serve: the real ComfyUI (COMFYUI_PATH) with this pack, the demo models and inputs, browser UI and HTTP API
# on http://127.0.0.1:$(PORT) until Ctrl-C (README, "make serve"); pass tools/serve.py's options with ARGS.
PORT ?= 8188
serve: $(STAMP)
	$(COMFY_PY) -m tools.serve --port $(PORT) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(COMFY_PY) -m lab.bench.bench_tokenizer
	$(COMFY_PY) -m lab.bench.bench_injection

eval: $(STAMP)
	$(COMFY_PY) -m lab.eval $(ARGS)

# The workflows from scripts/build_workflows.py, then their API-format exports (workflows/api/) through the real
# frontend of the default host, in the browser tests.
workflows: $(HOST_VENV)/.ima-setup-done chromium
	COMFYUI_PATH=$(COMFYUI_HOST) $(call COMFY_SEARCH,$(COMFYUI_HOST)) $(HOST_VENV)/bin/python -m scripts.build_workflows
	COMFYUI_PATH=$(COMFYUI_HOST) IMA_UPDATE_API=1 $(HOST_VENV)/bin/python -m pytest -q tests/browser -k in_the_frontend

images: $(STAMP)
	IMA_UPDATE_IMAGES=1 $(PY) -m pytest -q tests/browser

ablations: $(STAMP)
	$(COMFY_PY) -m lab.ablations $(ARGS)

train-demo: $(STAMP)
	$(COMFY_PY) -m lab.train_demo $(ARGS)
