#!/usr/bin/env bash
# The GPU check in one command on a fresh CUDA machine with Python 3.11 and pip, from a checkout:
#
#   bash checks/gpu.sh [options of python -m checks.gpu]
#
# Creates .venv (with $PYTHON, default python3.11) unless it exists, installs the project into it
# (torch from the package index: a CUDA build), then runs python -m checks.gpu, which writes its report
# to docs/gpu-check.md. Set-up takes a few minutes, the check about four.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3.11}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python -m checks.gpu --setup-seconds $((SECONDS - start)) "$@"
