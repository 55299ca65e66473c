# One-command entry points; each sets up .venv first (see README.md).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
# Stage commands call `python`: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup repro test test-fast bench report lock

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

repro: setup
	dvc repro

# The browser test needs Chromium: installed from Debian's packages where we are root (else it skips).
test: setup
	tools/install-chromium
	python -m pytest

test-fast: setup
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
