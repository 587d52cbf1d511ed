# silodiff: `make demo` and `make test` work from a fresh clone on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
STAMP  := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test docs browser fashion-mnist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0          # the CPU build from this machine's disk; install it first
	$(PIP) install -e '.[serve,test,ray,docs,attribution,search,tb]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/silodiff demo --out demo-out

test: setup browser
	$(PY) -m pytest

# The documentation site into site/ (--strict: a broken link or a missing reference fails; CI runs it).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Debian's chromium + driver for the web-page test in a real headless browser (tests/service/test_page.py).
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

# Debian's Fashion-MNIST (IDX files) for the targets that need it.
fashion-mnist:
	@test -d $(FASHION_MNIST) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

clean:
	rm -rf $(VENV) demo-out site .pytest_cache

# ----------------------------------------------------------------------------- benchmarks
# One block per benchmark: `make bench-NAME` runs bench/NAME.py into bench/results/NAME.json and .md.
.PHONY: bench
bench: bench-core

.PHONY: bench-attribution
bench-attribution: setup
	$(PY) bench/attribution.py

.PHONY: bench-audit
bench-audit: setup fashion-mnist
	$(PY) bench/audit.py

.PHONY: bench-scale
bench-scale: setup fashion-mnist
	$(PY) bench/scale.py

.PHONY: bench-cli-latency
bench-cli-latency: setup
	$(PY) bench/cli_latency.py

.PHONY: bench-diffusers-io
bench-diffusers-io: setup
	$(PY) bench/diffusers_io.py

.PHONY: bench-lora-members
bench-lora-members: setup
	$(PY) bench/lora_members.py

# D-TRAK / TRAK side by side with the encoded ensemble on the LDS protocol (issue 18; ~40 min on 2 cores)
.PHONY: bench-attribution-lds
bench-attribution-lds: setup
	$(PY) bench/attribution_lds.py

# Issue 15's operating point: paragon vs compartments from scratch / base + full fine-tunes / base + LoRA, equal
# compute (a) and trained to convergence (b), 3 training seeds (~1 h each on 2 cores)
.PHONY: bench-operating-point
bench-operating-point: setup
	$(PY) bench/operating_point.py --budgets a
	$(PY) bench/operating_point.py --budgets a --seeds 18,19,20
	$(PY) bench/operating_point.py --budgets b

# the same on Fashion-MNIST with a UNet at 28×28 (budget a, 3 training seeds; ~1 h on 2 cores)
.PHONY: bench-operating-point-fashion
bench-operating-point-fashion: setup fashion-mnist
	$(PY) bench/operating_point.py --data fashion --workers 3

# what an image says about its compartment given its label, on the operating point's split (seconds): why
# routing cannot beat the label prior on class-conditional samples of a split by class
.PHONY: bench-noniid-posterior
bench-noniid-posterior: setup
	$(PY) bench/noniid_posterior.py

.PHONY: bench-core
bench-core: setup
	$(PY) bench/core.py

.PHONY: bench-cpsample-calibration
bench-cpsample-calibration: setup
	$(PY) bench/cpsample_calibration.py

.PHONY: bench-defences
bench-defences: setup
	$(PY) bench/defences.py

.PHONY: bench-forget
bench-forget: setup
	$(PY) bench/forget.py

.PHONY: bench-ray
bench-ray: setup
	$(PY) bench/ray_bench.py

.PHONY: bench-service
bench-service: setup
	$(PY) bench/service.py

.PHONY: bench-data-scale
bench-data-scale: setup
	$(PY) bench/data_scale.py
