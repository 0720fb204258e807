# Each target sets up its own virtualenv on a fresh machine.

# Python's bytecode caches are written whatever the environment says: the machines here set
# PYTHONDONTWRITEBYTECODE, under which every `pgwarden` process a test starts compiled pgwarden's
# modules from source again (~0.4 s of CPU each), and every pytest process rewrote the assertions
# of every module it imported anew (pytest marks the whole pgwarden distribution, a pytest11
# plugin, for rewriting; ~2.5 s a process). The caches are in __pycache__, which git ignores.
unexport PYTHONDONTWRITEBYTECODE
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

EXAMPLE := examples/pgwarden-business-hours
EXAMPLE_VENV ?= .venv-example
EXAMPLE_STAMP := $(EXAMPLE_VENV)/.installed

.PHONY: venv compiled image-wheels lint test test-fast test-stock-reactor test-second-pass test-compiled test-pure test-builds test-newest-twisted test-example fuzz fuzz-leaks leak-table \
	bench load suites demo image \
	image-name push clean

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The editable install compiles the hot path (and maps the mypyc group's top-level module,
	@# pgwarden_hot__mypyc, for processes started outside this tree: `build_ext --inplace` after a
	@# PGWARDEN_NO_COMPILE install does not, and every `pgwarden run` the tests start then fails).
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP) $(COMPILED_STAMP)

venv: $(STAMP) compiled

# The compiled hot path (pgwarden/compiled.py lists its modules; setup.py builds them with mypyc
# when a C compiler is there). The editable install builds the extensions in place, beside each
# .py, once: after a change to one of those .py files, this builds them again (an extension
# older than its source would run the old code; tests/unit/test_compiled.py checks it).
# mypyc's mypy keeps its cache apart from `make lint`'s, which may run at the same time (make test).
# PGWARDEN_REQUIRE_COMPILE: here a failed build stops make (a pip install falls back silently, and
# would leave the previous build's extensions in place, running old code under the compiled tests).
COMPILED_STAMP := $(VENV)/.compiled
COMPILED_SOURCES := $(addsuffix .py,$(subst .,/,$(shell sed -n 's/^    "\(pgwarden\.[a-z_.]*\)",$$/\1/p' pgwarden/compiled.py)))
$(COMPILED_STAMP): $(STAMP) setup.py pgwarden/compiled.py $(COMPILED_SOURCES) $(wildcard pgwarden/*.pxd)
	PGWARDEN_REQUIRE_COMPILE=1 MYPY_CACHE_DIR=build/.mypy_cache $(PY) setup.py -q build_ext --inplace
	@# A module's own extension is a stub into the group's library, rewritten only when the stub
	@# changes: touched, so that test_compiled's "older than its source" reads the build's time.
	find pgwarden -name '*.cpython-*.so' -exec touch {} +
	touch $(COMPILED_STAMP)

compiled: $(COMPILED_STAMP)

# The example third-party plugin lives in a venv of its own: once installed, a
# plugin applies to every pgwarden of that environment, the main suite's included.
# That venv sees .venv's packages (pgwarden among them, and pip) through a .pth file and holds
# only the plugin, installed by pip with its entry point as a user's would be: a second install of
# pgwarden and its dependencies took ~70 s of a fresh clone's run, and rewrote pgwarden.egg-info.
$(EXAMPLE_STAMP): $(EXAMPLE)/setup.cfg $(EXAMPLE)/pyproject.toml $(STAMP)
	rm -rf $(EXAMPLE_VENV)
	$(PYTHON) -m venv --without-pip $(EXAMPLE_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$($(EXAMPLE_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pgwarden-venv.pth"
	$(EXAMPLE_VENV)/bin/python -m pip install -q --no-deps -e $(EXAMPLE)
	touch $(EXAMPLE_STAMP)

# ruff (style, imports, likely bugs) and mypy (the annotations), as configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# The whole suite: unit, property-based (fast profile), end to end, on the compiled hot path and
# pgwarden's reactor (a test fails if it is not compiled: PGWARDEN_EXPECT_COMPILED: test-compiled);
# the example plugin's own; the package builds; and lint. CI (.ci/run) then runs the whole suite
# a second time, as pure Python on Twisted's own reactor (test-second-pass): both passes side by
# side took ~990-1,180 s on two cores, over make test's 15 minutes, and the pure-Python build is
# the fallback, which CI must cover and a developer's `make test` need not wait for.
# Side by side, TEST_JOBS at a time: the end-to-end tests spend part of their time waiting on
# PostgreSQL, pgwarden and their clients, so the pass alone leaves part of the two cores idle.
# Each job prints its output whole when it ends (--output-sync); make fails if any of them fails
# (pytest's exit code 5, no tests, included).
# First the hot path's build again if a compiled module changed since the install built it, then
# the pass and, beside it, the package builds, the example (its venv made first: it installs the
# example plugin alone, in a venv of its own, and touches nothing the pass reads) and lint.
# The tests that build pgwarden's package (the image's two stages, compiler and all; a wheel without
# a compiler) answer the same whichever build the pytest that runs them imports: they run once, as
# a job of their own beside the pass (~2 min, most of it the compiler), and the passes leave them
# out (PASS_ARGS). `make test-compiled` alone runs them, as it runs everything.
# Each pass runs on PASS_WORKERS pytest-xdist workers, a test file's tests on one worker (its
# module's fixtures are made once), each worker a pytest session of its own (its own PostgreSQL).
# PASS_WORKERS=0: no workers, one session.
PASS_WORKERS ?= 2
WORKERS := $(if $(filter 0,$(PASS_WORKERS)),,-n $(PASS_WORKERS) --dist loadfile)
BUILD_TESTS := tests/deploy/test_image_stages.py tests/deploy/test_build_fallback.py
PASS_ARGS ?=
TEST_JOBS ?= 3
test:
	$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target $(STAMP) image-wheels
	$(MAKE) --no-print-directory $(COMPILED_STAMP)
	$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target test-compiled test-builds \
		test-example lint PASS_ARGS="$(addprefix --ignore=,$(BUILD_TESTS))" IMAGE_WHEELS_FROM="$(CURDIR)/$(IMAGE_WHEELS)"

# CI's second pass, after `make test` (.ci/run): the whole suite but the package builds (make test
# ran them), pure Python on Twisted's default reactor (test-stock-reactor).
test-second-pass: $(STAMP)
	$(MAKE) --no-print-directory test-stock-reactor PASS_ARGS="$(addprefix --ignore=,$(BUILD_TESTS))"

# The image builder stage's wheels (tests/deploy/image_wheels.py: deploy/Dockerfile's pip wheel
# command on what the stage COPYs), built with the plain interpreter beside the venv's setup: that
# step keeps one core compiling and the other idle, and the image's own compile (~100 s of one
# core) costs nothing there; among the passes it took that much from them. test-builds installs
# and runs them (IMAGE_WHEELS_FROM); `make test-builds` alone builds its own.
IMAGE_WHEELS := build/image-wheels
IMAGE_WHEELS_STAMP := $(IMAGE_WHEELS)/.built
IMAGE_WHEELS_FROM ?=
IMAGE_CONTEXT := $(shell find pgwarden plugins -type f -not -name '*.so' -not -name '*.pyc' -not -path '*/__pycache__/*' \
	-not -path '*.egg-info/*' 2>/dev/null)
$(IMAGE_WHEELS_STAMP): deploy/Dockerfile .dockerignore setup.py setup.cfg pyproject.toml README.md \
		tests/deploy/image_wheels.py tests/deploy/dockerfile.py $(IMAGE_CONTEXT)
	$(PYTHON) tests/deploy/image_wheels.py $(IMAGE_WHEELS)
	touch $(IMAGE_WHEELS_STAMP)

image-wheels: $(IMAGE_WHEELS_STAMP)

# The package builds' tests alone (the image's stages, the wheel without a compiler): see BUILD_TESTS.
test-builds: $(STAMP) $(COMPILED_STAMP)
	PGWARDEN_IMAGE_WHEELS=$(IMAGE_WHEELS_FROM) $(PY) -m pytest -q $(BUILD_TESTS)

# The whole suite on Twisted's default reactor instead of pgwarden's (PGWARDEN_REACTOR=default:
# the fixtures and every `pgwarden run` the tests start use it), with the hot path as pure Python,
# as CI's second pass (test-second-pass). pgwarden.turns ends each turn with callLater(0) there instead of
# at the end of the poll; records and bytes must not notice. The hostile corpora run each case
# under two of its protocols there, not all (pgwarden.testing.matrix: the first pass runs all).
test-stock-reactor: $(STAMP)
	PGWARDEN_PURE_PYTHON=1 PGWARDEN_REACTOR=default PGWARDEN_TEST_MATRIX=thin $(PY) -m pytest -q $(WORKERS) $(PASS_ARGS)

# The whole suite on the compiled hot path only (`make test`'s pass).
test-compiled: $(STAMP) $(COMPILED_STAMP)
	PGWARDEN_EXPECT_COMPILED=1 $(PY) -m pytest -q $(WORKERS) $(PASS_ARGS)

# ... and on pure Python only (PGWARDEN_PURE_PYTHON=1: pgwarden.compiled), on pgwarden's reactor.
test-pure: $(STAMP)
	PGWARDEN_PURE_PYTHON=1 $(PY) -m pytest -q $(WORKERS)

# The newest Twisted release, whatever the upper bound in setup.cfg says: whether the bound can
# be raised. A fresh venv of its own each time (the newest of the day, from PyPI); the unit tests
# and the end-to-end tests of relaying and recording, on both reactors. Not part of `make test`.
TWISTED_VENV ?= .venv-twisted-newest
QUICK_E2E := tests/e2e/test_reactor.py tests/e2e/test_smoke.py tests/e2e/test_recording.py \
	tests/e2e/test_protocol.py tests/e2e/test_shutdown.py tests/e2e/test_identity.py \
	tests/k8s/test_webhook_server.py
test-newest-twisted:
	rm -rf $(TWISTED_VENV)
	$(PYTHON) -m venv $(TWISTED_VENV)
	$(TWISTED_VENV)/bin/python -m pip install -q --upgrade pip
	$(TWISTED_VENV)/bin/python -m pip install -q -e '.[test]'
	@# pip warns of the conflict with setup.cfg's bound when the newest is beyond it: that is the point.
	$(TWISTED_VENV)/bin/python -m pip install -q --upgrade 'Twisted[tls]'
	$(TWISTED_VENV)/bin/python -c "import twisted; print('testing Twisted', twisted.__version__)"
	$(TWISTED_VENV)/bin/python -m pytest -q tests/unit $(QUICK_E2E)
	PGWARDEN_REACTOR=default $(TWISTED_VENV)/bin/python -m pytest -q $(QUICK_E2E)

test-example: $(EXAMPLE_STAMP)
	$(EXAMPLE_VENV)/bin/python -m pytest -q $(EXAMPLE)/tests

# Unit and property tests only: seconds, no database.
test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit

# Deep fuzzing of the codec and relay, and both builds compared on many seeds (opt-in, minutes).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q tests/unit -k "property or fuzz"

# The masking leak property deep (opt-in, minutes): thousands of generated SELECTs through pgwarden,
# every byte to the client searched for the secrets (tests/e2e/test_mask_leaks.py).
fuzz-leaks: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q -p no:randomly tests/e2e/test_mask_leaks.py -k property
	PGWARDEN_TEST_MATRIX=full $(PY) -m pytest -q $(WORKERS) tests/e2e/test_mask_leaks.py -k "not property"

# The leak corpus's table: per technique and protocol, passed / failed / xfailed attempts.
leak-table: $(STAMP)
	$(PY) tests/e2e/leak_table.py

# pgbench: direct, through pgwarden and through PgBouncer, in one run, ending with issue 20's table
# (every figure as a ratio to PgBouncer, rotating rounds, a direct-vs-direct noise line; ~15 min in all).
bench: $(STAMP)
	$(PY) bench/analysis.py
	$(PY) bench/run.py --duration 10 --sessions 500
	$(PY) bench/ab.py --approve --rounds 6 --duration 5
	$(PY) bench/masking.py
	$(PY) bench/approval_latency.py --count 50
	$(PY) bench/mcp_query.py --count 500

# 500 sessions held open through one pgwarden, 50 of them busy, for a minute (opt-in, ~2 min): no
# error, no session starved, memory flat, descriptors released (bench/load.py, docs/performance.md).
# `bench/load.py --find-limit` opens sessions in steps until something gives out.
load: $(STAMP)
	$(PY) bench/load.py

# asyncpg's own test suite, directly and through pgwarden, compared test by test (opt-in, ~2 min).
suites: $(STAMP)
	$(PY) -m pip install -q distro pytest-timeout
	$(PY) tests/suites/run_asyncpg_suite.py

# A throwaway PostgreSQL with sample data and pgwarden in front; prints a psql line.
demo: $(STAMP)
	$(VENV)/bin/pgwarden demo

# The container image (deploy/Dockerfile), built with docker, else podman (CONTAINER=podman to
# choose). The manifests under deploy/k8s name ghcr.io/pgwarden/pgwarden:0.1.0, a PLACEHOLDER
# that nobody publishes: build and push your own, then put its name there (docs/kubernetes.md).
#   make image                                        # pgwarden:<version>, local only
#   make push IMAGE=registry.example/pgwarden:0.1.0   # build, then push to your registry
VERSION := $(shell sed -n 's/^version = //p' setup.cfg)
IMAGE ?= pgwarden:$(VERSION)
CONTAINER ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || (command -v podman >/dev/null 2>&1 && echo podman))

image:
	@test -n "$(CONTAINER)" || { echo "make image: neither docker nor podman is on the PATH" >&2; exit 1; }
	$(CONTAINER) build -f deploy/Dockerfile -t $(IMAGE) .

# Checked before the build: a push needs a name with the registry (and path) in it.
image-name:
	@case "$(IMAGE)" in */*) ;; *) echo "make push: IMAGE=$(IMAGE) names no registry;" \
	  "say where to push, e.g. make push IMAGE=registry.example/pgwarden:$(VERSION)" >&2; exit 1;; esac

push: image-name image
	$(CONTAINER) push $(IMAGE)

clean:
	rm -rf $(VENV) $(EXAMPLE_VENV) $(TWISTED_VENV) .pytest_cache .hypothesis build *.egg-info
	find pgwarden -name '*.so' -delete; rm -f *__mypyc.*.so
