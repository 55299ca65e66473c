# One-command entry points; each sets up .venv first (see README.md).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
# Stage commands call `python`: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

TEST_STAMP := $(VENV)/.installed-test-$(shell sha256sum requirements-test.txt | cut -c1-12)

.PHONY: setup setup-test repro test test-fast bench report lock explore explorer-screenshot bench-explorer

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# `dvc commit --force` records a run-cache entry for every stage, also those `dvc repro` found up to
# date (a fresh clone's figures and metrics come from git): setting a param back then restores them
# from the cache instead of recomputing. --no-relink: the outputs are in place already.
repro: setup
	dvc repro
	dvc commit --force --no-relink --quiet

# Test-only Python packages (requirements-test.txt) beside the pipeline's.
setup-test: setup $(TEST_STAMP)

$(TEST_STAMP): requirements-test.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-test.txt
	rm -f $(VENV)/.installed-test-* && touch $@

# The browser and cross-CPU tests need Chromium and qemu-user, from Debian's packages.
test: setup-test
	tools/install-system-deps
	python -m pytest

test-fast: setup-test
	python -m pytest -m "not slow"

# Review the workspace against REV (default HEAD): report/report.md, figures and plots page.
REV ?= HEAD
report: setup
	python -m tools.report --rev $(REV) --out report

bench: setup
	python -m bench.train_speed

# The latent explorer: one self-contained page, artifacts/explorer/index.html (stage explore).
# Builds it (and whatever it needs) with dvc, prints its path, opens it where a browser is available.
explore: setup
	dvc repro explore
	@echo "latent explorer: file://$(CURDIR)/artifacts/explorer/index.html"
	@if command -v xdg-open >/dev/null 2>&1 && [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
		xdg-open artifacts/explorer/index.html >/dev/null 2>&1 || true; fi

# docs/explorer.png for the README: the page at 1280x800 in headless Chromium (< 500 KB). Chromium's
# pixels change with its version and the CPU, so this is a make target, not a pipeline output.
explorer-screenshot: setup
	tools/install-system-deps
	dvc repro explore
	python -m tools.explorer_screenshot --page artifacts/explorer/index.html --out docs/explorer.png

# Milliseconds per decode and per encode of every model, in the page's own JavaScript (Chromium).
bench-explorer: setup
	tools/install-system-deps
	dvc repro explore
	python -m bench.explorer_speed --page artifacts/explorer/index.html

# Re-pin requirements.txt from requirements.in in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -r requirements.in
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^pip==' > requirements.txt
	rm -rf .lock-venv
