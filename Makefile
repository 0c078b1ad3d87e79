# Two commands on a fresh machine: `make demo` (the full report on the embedded model) and `make test`.
# Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= report
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench browser clean lint-imports docs wheel-check

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[test]'
	# faccent only ever without its dependencies (its metadata would replace torch-lucent's `lucent`)
	$(PIP) install -q --no-deps faccent==1.0.3
	touch $@

install: $(VENV)/.installed

# Debian's Chromium and ChromeDriver for the browser tests of the HTML atlas and the report page.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

demo: install
	$(VENV)/bin/lucent-inhibit demo --out $(OUT)

# CI also builds the API reference strictly (any warning fails) and checks the wheel in a fresh virtualenv.
test: install browser lint-imports docs wheel-check
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The API reference site (mkdocs.yml, docs/): the `docs` extra installed into .venv, then `mkdocs build --strict`
# (a broken link, an unrendered docstring, any warning fails) into site/; open site/index.html.
$(VENV)/.docs-installed: $(VENV)/.installed setup.cfg
	$(PIP) install -q -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The sdist and wheel built and checked (twine), the wheel installed into a fresh virtualenv outside the
# repository (pip check clean), `lucent-inhibit demo --quick` run from it (.ci/wheel.sh; about 6-8 minutes on 2 cores,
# most of it installing torch and running the demo).
wheel-check: install
	PY=$(abspath $(PY)) PYTHON=$(PYTHON) bash .ci/wheel.sh

# The import contracts of .importlinter (one-way layers, no cycle inside a subpackage); also a test.
lint-imports: install
	$(VENV)/bin/lint-imports --config .importlinter --no-cache

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

# The demo notebooks (demos/*.ipynb) written from demos/make_notebooks.py, executed at demo sizes with nbclient
# and stored with their outputs; set OMP_NUM_THREADS=1 on a shared machine.
.PHONY: notebooks
notebooks: install
	$(PY) demos/make_notebooks.py --execute

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(OUT) .pytest_cache site .cache/mkdocs-jupyter
