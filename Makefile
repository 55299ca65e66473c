# One-command entry points; each sets up .venv first (see README.md).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
# Stage commands call `python`: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

TEST_STAMP := $(VENV)/.installed-test-$(shell sha256sum requirements-test.txt | cut -c1-12)

.PHONY: setup setup-test repro test test-fast bench report lock

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

repro: setup
	dvc repro

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

# Re-pin requirements.txt from requirements.in in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -r requirements.in
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^pip==' > requirements.txt
	rm -rf .lock-venv
