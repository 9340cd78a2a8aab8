# make run   : create .venv, get Fashion-MNIST, run the quickstart (adversarial coreset training, MLflow in ./mlflow.db)
# make test  : create .venv, get Fashion-MNIST, a headless Chromium and PostgreSQL's binaries, run the
#              whole test suite (tests/test_postgres_store.py starts and stops its own PostgreSQL)
# make test-fast : the unit tests only (no Ray, no subprocess jobs, no servers), for the edit-test loop
# make bench : the benchmark scripts under benchmarks/ (slow; prints tables), but the quality one
# make quality : benchmarks/bench_quality.py, every coreset arm against full AT (hours; resumable)
# make attack : benchmarks/bench_attack.py, cheap attacks, averaging and coresets against PGD-7 (hours; resumable)
# make mutation : mutmut on the core modules with the fast tests, then killed/survived per module
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup data browser postgres run test test-fast typecheck bench quality attack mutation ui clean
setup: $(VENV)/.installed data

# uv installs the pinned environment on both cores, bytecode compiled as pip does (measured on a
# clean clone: 47 s against pip's 102 s on one core, the same versions; docs/measurements.md);
# pip installs it where uv cannot
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv==0.13.10
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -c constraints.txt -e '.[dev]' \
		|| $(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

data: $(VENV)/.installed
	PY=$(PY) bash scripts/get_fashion_mnist.sh

browser:
	bash scripts/get_chromium.sh

postgres:
	bash scripts/get_postgres.sh

run: setup
	$(VENV)/bin/adcs train --config configs/quickstart.yaml

typecheck: setup
	$(VENV)/bin/ruff check --select F,E9 distributed_adcs tests benchmarks
	$(VENV)/bin/ruff check --select E501 distributed_adcs  # the package's lines fit pyproject's 130
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# two workers, a test file per worker at a time (module-scoped Ray sessions stay whole), in the
# order tests/conftest.py gives (longest files first; xdist's own reorder puts the files with
# most tests first, and a one-test file of 4 minutes last); the slowest tests are listed at the end.
# The type check runs beside the tests, on the core they leave idle while they start, and fails
# the command after them (its output in .typecheck.log, printed at the end)
test: setup browser postgres
	@$(MAKE) --no-print-directory typecheck > .typecheck.log 2>&1 & tc=$$!; \
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=20 $(PYTEST_ARGS); rc=$$?; \
	wait $$tc; trc=$$?; echo "--- make typecheck (beside the tests): exit $$trc"; cat .typecheck.log; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$trc

test-fast: setup
	$(PY) -m pytest -m unit -q $(PYTEST_ARGS)

bench: setup
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	for f in benchmarks/bench_*.py; do case $$f in */bench_quality.py|*/bench_attack.py) ;; *) $(PY) $$f || exit 1;; esac; done

quality: setup
	$(PY) benchmarks/bench_quality.py

attack: setup
	$(PY) benchmarks/bench_attack.py

mutation: setup
	$(PY) -m pip install -q 'mutmut==3.8.1'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 > /dev/null
	$(PY) scripts/mutation_report.py

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf runs mlartifacts mlflow.db .pytest_cache
