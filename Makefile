# Two commands do everything: `make demo` (the local pipeline) and `make test` (every test).
# Each sets itself up: a .venv with pinned Python packages, and the pinned CDK CLI in node_modules.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.setup-done
BROWSER := $(VENV)/.browser-done
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# jsii prints a full-screen banner on Node 20 (end of life); it runs fine. Deploy from Node 22+.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: demo test synth bench docs clean

$(SETUP): requirements.txt requirements-dev.txt lambdas/requirements.txt pyproject.toml package.json package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(SETUP)
	$(VENV)/bin/framesink demo

# The live view's test drives Debian's Chromium with chromedriver (Playwright's own browser
# download is not reachable here); installed with apt-get when missing and we may (root).
$(BROWSER):
	@if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null; then \
	  echo "make: installing chromium and chromium-driver (apt-get) for the live view's browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then touch $@; \
	else echo "make: no chromium/chromedriver: the live view's browser test will fail (apt-get install chromium chromium-driver)" >&2; fi

test: $(SETUP) $(BROWSER)
	$(PY) -m pytest -n 2 --dist loadfile

synth: $(SETUP)
	npx cdk synth --quiet

bench: $(SETUP)
	$(PY) -m bench

docs: $(SETUP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) node_modules cdk.out .framesink .pytest_cache site
