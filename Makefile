# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup check testbed arm64-root browser demo test test-fast clean

setup: $(STAMP)

# Re-installs only when the pins or the package metadata change.
$(STAMP): constraints.txt pyproject.toml package.json package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[all,dev]"
	$(PY) -m pip check
	# onnxruntime-web for the bundle's web page (package.json pins it); without npm the page ships without it and says so
	if command -v npm > /dev/null; then npm ci --no-audit --no-fund --silent; else echo "npm not found: no onnxruntime-web"; fi
	touch $(STAMP)

# Export FAT-B0 to every format (verified), then regenerate the paper's efficiency table (12 models,
# onnxruntime, 1 thread, batch 1) into results/.
demo: setup
	$(VENV)/bin/fat-export --model fat_b0 --format all --force
	mkdir -p results
	$(VENV)/bin/fat-latency --table --backend onnxruntime --threads 1 --runs 30 \
		--markdown results/efficiency_table.md --csv results/efficiency_table.csv \
		--plot results/efficiency_table.png results/efficiency_table.svg

# Lint, types (mypy strict on fat_deploy/) and the direction of imports (import-linter contracts in pyproject.toml).
check: setup
	$(VENV)/bin/ruff check fat_deploy tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# The trained test bed (FAT-B0 on patches of the shipped photos) from the weights in testbed/ (checked against the
# recipe, a few seconds; `python -m fat_deploy.testbed --train` retrains, about 240 CPU-seconds), built once into the
# cache before the tests that judge quantization by it, never inside a test's timeout.
testbed: setup
	$(PY) -m fat_deploy.testbed > /dev/null

# The ARM64 emulation root for fat-export --arm64 (scripts/arm64-root.sh: Debian's arm64 Python and the aarch64
# wheels of arm64-requirements.txt, about 220 MB, 10-30 s). Needs root and apt-get; elsewhere it says so and the
# tests that need it are skipped (where it can be built, they must run).
ARM64_ROOT ?= $(or $(FAT_DEPLOY_ARM64_ROOT),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fat-deploy/arm64-root)
ARM64_POSSIBLE := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null && echo 1)
arm64-root: setup
	scripts/arm64-root.sh "$(ARM64_ROOT)" $(VENV)/bin/pip

# Headless Chromium for the web page's test (Debian's chromium; root and apt-get, like the ARM64 root, after it:
# one apt at a time). Elsewhere the browser tests are skipped and say why.
browser: arm64-root
	@command -v chromium > /dev/null || [ "$(ARM64_POSSIBLE)" != 1 ] || apt-get install -y -qq chromium > /dev/null \
		|| { apt-get update -qq && apt-get install -y -qq chromium > /dev/null; }

# Two workers: the slow end-to-end exports are single-threaded converters (the suite takes half as long); one
# test handed out at a time, the longest first (tests/conftest.py, STARTED_FIRST), so both finish together.
# Before them, side by side: lint, mypy and import-linter; the test bed; the ARM64 root then chromium (mostly
# downloads; one apt at a time).
test: setup
	$(MAKE) --no-print-directory -j3 check testbed arm64-root browser
	FAT_DEPLOY_ARM64_ROOT="$(ARM64_ROOT)" FAT_DEPLOY_EXPECT_ARM64=$(ARM64_POSSIBLE) FAT_DEPLOY_EXPECT_BROWSER=$(ARM64_POSSIBLE) \
		$(PY) -m pytest -n 2 --maxschedchunk 1 --durations=25

test-fast: setup
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) exports .pytest_cache
