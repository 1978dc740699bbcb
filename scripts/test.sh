#!/usr/bin/env bash
# The test command (README): set up everything on a fresh machine, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --e2e --corpus --pythons
export UV_PYTHON_DOWNLOADS=never
mkdir -p test-artifacts
# the lint first ([tool.ruff] in pyproject.toml): it fails in a second, before the long suite
.venv/bin/ruff check .
# then the types ([tool.mypy] in pyproject.toml): a few seconds, still before the long suite
.venv/bin/mypy
# loadgroup: tests marked xdist_group (each e2e module, sharing one server or browser) stay on one worker
status=0
.venv/bin/python -m pytest -n "${UVKERNEL_TEST_WORKERS:-2}" --dist loadgroup "$@" || status=$?
# then the fast tests on the other Pythons (hosts 3.9 to 3.13; uvkernel itself on 3.10, 3.12 and 3.13), a few
# minutes; run even when the suite failed, so one run reports both
bash scripts/test-pythons.sh || status=$((status ? status : 1))
exit "$status"
