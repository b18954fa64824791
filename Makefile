# Two commands do all set-up (see README):
#   make study   installs into .venv and runs the default study
#   make test    installs into .venv and runs the test suite (what CI runs)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup study test lint

setup: $(STAMP)

# The pinned torch goes in first: on these machines it is a local CPU wheel, while the package's
# own plain range would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

study: setup
	$(BIN)/scalelab run

# The report test renders report.html in headless Chromium (Debian's package); it is installed
# here when missing and we are root, and the test skips itself where no browser can be had.
# Two pytest-xdist workers, each training on one thread (tests/conftest.py): on 2 cores the suite
# takes ~0.65 of its one-process time (most tests start interpreters or run small single-threaded
# models). `--dist loadscope` keeps a module's tests on one worker, so a study a module trains
# once for its tests is trained once (`xdist_group` marks would do it per group, but pytest 9.2
# ignores the node ids pytest-xdist 3.8 rewrites for them). `--no-loadscope-reorder` keeps the
# order tests/conftest.py gives (modules with slow tests first) instead of most-tests-first.
test: setup
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) || true; }
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check src tests benchmarks
