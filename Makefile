# The README's two commands are `make demo` and `make test`; everything else is a helper they call.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
RUNTIME := $(if $(filter 1 true yes,$(WITH_WHISPER)),whisper,worker)
STAMP  := $(VENV)/.installed-$(RUNTIME)

.PHONY: setup system-deps test unit demo playground bench clients pins lint format typecheck image base-image clean

setup: system-deps $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

# One hash-pinned set (requirements/*.txt, compiled by `make pins`) for the image and for the tests.
# `sync`: the venv holds exactly the runtime set plus the dev tools (nothing left over from older pins), so a
# runtime dependency missing from worker.txt fails a test here, not a deploy. --no-deps: the compiled files are
# complete, and f5-tts's declared training/Gradio dependencies are kept out on purpose (requirements/excludes.txt).
# WITH_WHISPER=1 installs the optional Whisper extra (requirements/whisper.txt) as the image's build arg does.
$(STAMP): requirements/worker.txt requirements/whisper.txt requirements/dev.txt clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(UV) pip sync -q --python $(PY) --require-hashes requirements/$(RUNTIME).txt requirements/dev.txt
	$(UV) pip install -q --python $(PY) --no-deps -e clients/python
	rm -f $(VENV)/.installed*  # one variant at a time: switching WITH_WHISPER syncs again
	touch $(STAMP)

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/zizmor --offline .github/workflows/
	$(PY) -m mypy --config-file clients/python/pyproject.toml
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests that start none of the project's own processes (tests/conftest.py: the `integration` mark): a quick loop.
unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

demo: setup
	$(PY) -m devstack demo --out out/hello.wav

# The devstack with `f5tts playground` in front of it (ENDPOINT_TYPE=load_balancer for the other endpoint type).
playground: setup
	$(PY) -m devstack playground --endpoint-type $(or $(ENDPOINT_TYPE),queue)

bench: setup
	$(PY) -m bench

# Regenerate the contract's JSON Schema and the client SDK generated from it.
clients: setup
	$(PY) -m worker.schema --write clients/schema/contract.json
	$(PY) -m clients.codegen

# Recompile the hash-pinned sets. worker.txt: the runtime set (excludes.txt and the Whisper extra kept out);
# whisper.txt: the runtime set plus Whisper (image build arg WITH_WHISPER); dev.txt: test and tooling extras.
COMPILE := $(abspath $(UV)) pip compile --override overrides.txt --excludes excludes.txt --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
pins:
	cd requirements && $(COMPILE) worker.in --excludes whisper.in -o worker.txt
	cd requirements && $(COMPILE) worker.in whisper.in -c worker.txt -o whisper.txt
	cd requirements && $(COMPILE) dev.in --excludes whisper.in -o dev.txt

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/zizmor --offline .github/workflows/

# Rewrite the tree as `make test` wants it: formatted, imports sorted, ruff's safe fixes applied.
format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The client SDK strictly (it ships py.typed), then the whole tree ([tool.mypy] in pyproject.toml), as `make test` does.
typecheck: setup
	$(PY) -m mypy --config-file clients/python/pyproject.toml
	$(PY) -m mypy

# Build Dockerfile.runpod with docker, podman or buildah (the first that runs here; BUILDER= picks one), tagged
# IMAGE. BASE_IMAGE, FLASH_ATTN, FLASH_ATTN_SHA256, WEIGHTS and WEIGHTS_DTYPE are passed as the build arguments of
# the same names when set; PIP_CONFIG_FILE and PIP_CERT from the environment as build secrets; IMAGE_BUILD_FLAGS go
# to the builder as they are (CI: --push and a registry cache). docs/image.md.
#   make image IMAGE=f5tts-runpod:test BASE_IMAGE=$$(make -s base-image) FLASH_ATTN=none WEIGHTS=tiny
IMAGE ?= f5tts-runpod:dev
image:
	IMAGE='$(IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' FLASH_ATTN='$(FLASH_ATTN)' FLASH_ATTN_SHA256='$(FLASH_ATTN_SHA256)' \
	  WEIGHTS='$(WEIGHTS)' WEIGHTS_DTYPE='$(WEIGHTS_DTYPE)' WITH_WHISPER='$(if $(filter 1 true yes,$(WITH_WHISPER)),true,)' \
	  bash scripts/build-image.sh

# Print a base image for BASE_IMAGE: python:3.11-slim-bookworm if it can be had, else a local stand-in made with
# debootstrap (same Debian release, Python 3.11 where the slim image has it; needs root).
base-image:
	@bash scripts/base-image.sh

clean:
	rm -rf $(VENV) out .devstack
