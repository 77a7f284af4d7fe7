# The two entry points of the README. Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Airflow has its own environment: the DAG's tasks run the project's command line with $(PY).
AIRFLOW_VENV := .venv-airflow

.PHONY: run test bench airflow

run: $(VENV)/.installed
	$(PY) -m pipeline.run --stage all

test: $(VENV)/.installed $(AIRFLOW_VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m benchmarks

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
