# One-command entry points; each sets up .venv first (see README.md).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
# Stage commands call `python`: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

TEST_STAMP := $(VENV)/.installed-test-$(shell sha256sum requirements-test.txt | cut -c1-12)

.PHONY: setup setup-test repro test test-fast bench report lock explore explorer-screenshot bench-explorer paper

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# The independent trainings first, two at a time, one per core (under compute.portable each stage
# computes on one thread, and DVC runs one stage at a time: its issue #755). A wave is two chains
# run side by side; a chain (stages joined by +) is one `dvc repro -s`, its stages one after another.
# The classifier trains in about two thirds of the CVAE's time, so its chain goes on with the short
# stages of the AE and the VAE, whose models the first wave trained. Two `dvc repro` of stages that
# write different files run side by side: DVC locks the files of a running stage, and
# --wait-for-lock makes each wait while the other holds the repo's lock for its bookkeeping. Each
# `dvc repro -s` runs its stages alone (if changed), not their upstream: fetch ran first, and two
# processes checking it at once collide on its lock ("data/mnist.npz is busy"). No stage of one
# chain depends on the other chain of its wave, and each one's upstream ran before it
# (tests/test_map.py checks); a wave of up to date stages costs a few seconds. Then `dvc repro` runs
# the rest (beta_sweep trains its VAEs two at a time itself). `dvc commit --force` records a
# run-cache entry for every stage, also those `dvc repro` found up to date (a fresh clone's figures
# and metrics come from git): setting a param back then restores them from the cache instead of
# recomputing. --no-relink: the outputs are in place already.
REPRO_WAVES := train@ae,train@vae \
	train@cvae,train_classifier+encode@ae+encode@vae+evolution@ae+evolution@vae+generate@ae+generate@vae
repro: setup
	dvc --wait-for-lock repro fetch
	for wave in $(REPRO_WAVES); do \
		echo $$wave | tr , '\n' | tr + ' ' | xargs -P 2 -L 1 dvc --wait-for-lock repro -s || exit 1; done
	dvc repro
	dvc commit --force --no-relink --quiet dvc.yaml

# Test-only Python packages (requirements-test.txt) beside the pipeline's.
setup-test: setup $(TEST_STAMP)

$(TEST_STAMP): requirements-test.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-test.txt
	rm -f $(VENV)/.installed-test-* && touch $@

# The browser and cross-CPU tests need Chromium and qemu-user, from Debian's packages. Three
# pytest-xdist workers: most tests run one single-threaded stage or model at a time, two at once
# fill two cores, and the third spends most of the run on tests/test_portable.py, whose emulated
# CPUs take what the others leave idle (a low priority). Each worker takes whole files (pytest.ini:
# --dist loadfile), so a file's fixtures build once; tests/conftest.py orders the files.
TEST_WORKERS ?= 3
test: setup-test
	tools/install-system-deps
	python -m pytest -n $(TEST_WORKERS)

test-fast: setup-test
	python -m pytest -n $(TEST_WORKERS) -m "not slow"

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

# The comparison with Davidson et al. 2018, Table 1 (docs/paper.md): its own pipeline, paper/dvc.yaml,
# which `make repro` never runs. The trainings two at a time (one per core: each computes on one
# thread under compute.portable), then the likelihoods two at a time; `dvc repro -s` runs one stage
# without its upstream, so fetch comes first and the last `dvc repro` checks that all is done.
PAPER_STAGES = dvc stage list --name-only paper/dvc.yaml | grep
paper: setup
	@echo "make paper: one training per model of paper.models and seed of paper.seeds; with paper.train as committed, at most 500 epochs each"
	@echo "  (early stopping ends them sooner; two at a time, about 3.3 s/epoch for 784-256-128-2 and 2 s for 784-128-16-2"
	@echo "  on a 2-core AVX-512 Xeon, 7.5 and 4.5 s on a 2-core AMD EPYC Zen 3), then about 15 min of likelihood each"
	@echo "  on the 10 000 test images on the Xeon, 29 CPU-min on the Zen 3 (docs/paper.md: cost; measured: 34 min"
	@echo "  from a clean clone for two models on the Xeon). Cached afterwards."
	dvc repro fetch
	$(PAPER_STAGES) ':paper_train@' | xargs -r -P 2 -n 1 dvc repro -s
	$(PAPER_STAGES) ':paper_likelihood@' | xargs -r -P 2 -n 1 dvc repro -s
	dvc repro paper/dvc.yaml
	python -m tools.paper_table

# Re-pin requirements.txt from requirements.in in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -r requirements.in
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^pip==' > requirements.txt
	rm -rf .lock-venv
