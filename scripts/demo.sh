#!/usr/bin/env bash
# The main job (README): on a fresh machine, set everything up, install the uvkernel kernel spec for the host
# interpreter, and execute notebooks/quickstart.ipynb through it, printing where torch came from.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HOST="$(cat .venv/uvkernel-test-host)"
# A private Jupyter data folder: the demo does not touch the user's own kernel specs.
export JUPYTER_DATA_DIR="$PWD/build/jupyter-data" JUPYTER_PATH="$PWD/build/jupyter-data"
export UV_PYTHON_DOWNLOADS=never
.venv/bin/uvkernel install --user --host-python "$HOST"
.venv/bin/uvkernel list
mkdir -p build
.venv/bin/python scripts/run_notebook.py notebooks/quickstart.ipynb --kernel uvkernel --save build/quickstart.out.ipynb
