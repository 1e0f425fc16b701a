# The README's two commands are `make demo` and `make test`; everything else is a helper they call.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
RUNTIME := $(if $(filter 1 true yes,$(WITH_WHISPER)),whisper,worker)
STAMP  := $(VENV)/.installed-$(RUNTIME)

.PHONY: setup system-deps test unit demo playground bench clients pins lint format typecheck clean

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
	$(PY) -m mypy --config-file clients/python/pyproject.toml
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests that start no processes (no devstack, browser or image build): a quick loop while changing code.
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

# Rewrite the tree as `make test` wants it: formatted, imports sorted, ruff's safe fixes applied.
format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The client SDK strictly (it ships py.typed), then the rest of the tree ([tool.mypy] in pyproject.toml). The
# second step still reports errors (issue 22 is open); `make test` runs the first until it is clean.
typecheck: setup
	$(PY) -m mypy --config-file clients/python/pyproject.toml
	$(PY) -m mypy

clean:
	rm -rf $(VENV) out .devstack
