# The two entry points of the README. Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Airflow has its own environment: the DAG's tasks run the project's command line with $(PY).
AIRFLOW_VENV := .venv-airflow

.PHONY: run test test-quick bench airflow check-full-size check-gpu serve

run: $(VENV)/.installed
	$(PY) -m pipeline.run --stage all

# One pytest worker per core; a test file stays on one worker (its fixtures are made once), and files
# are handed out in the collection's order (tests/conftest.py puts the long ones first).
PYTEST := $(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder

test: $(VENV)/.installed $(AIRFLOW_VENV)/.installed
	$(PYTEST)

# The developer's loop: every test not marked slow (the Airflow runs are all slow).
test-quick: $(VENV)/.installed
	$(PYTEST) -m "not slow" --hypothesis-profile=quick

bench: $(VENV)/.installed
	$(PY) -m benchmarks

# The cloud's segmentation service for the sample, on http://127.0.0.1:8000 (docs/serving.md): the sample and
# its bundle as `make run` makes them, and the tiny SETR-Naive config trained 100 iterations on it when no
# checkpoint is there yet (about 40 s here in all); then the service, until Ctrl-C.
SERVE_CONFIG := training/configs/tiny/setr_tiny_naive_proposed.py
SERVE_CHECKPOINT := data/cloud/serve/iter_100.pth
CLOUD_ARGS := --bundle data/bundle --signer data/owner/signer.json

serve: $(SERVE_CHECKPOINT)
	$(PY) -m training.serve $(SERVE_CONFIG) $(SERVE_CHECKPOINT) $(CLOUD_ARGS) --port 8000

data/bundle/manifest.json: | $(VENV)/.installed
	$(PY) -m pipeline.run --stage all

$(SERVE_CHECKPOINT): data/bundle/manifest.json
	$(PY) -m training.train $(SERVE_CONFIG) $(CLOUD_ARGS) --work-dir $(dir $@) \
		--cfg-options train_cfg.max_iters=100 param_scheduler.0.end=100 default_hooks.checkpoint.interval=100

# The paper's ViT-B/16 MLA config at full size on a CPU, proposed against baseline (3.5 min, 7 GB).
check-full-size: $(VENV)/.installed
	$(PY) -m checks.full_size

# ViT-L/16 MLA at the paper's settings on a CUDA machine; report in docs/gpu-check.md. On a machine
# without make: bash checks/gpu.sh (its own set-up).
check-gpu: $(VENV)/.installed
	$(PY) -m checks.gpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed: dags/requirements.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r dags/requirements.txt
	touch $@
