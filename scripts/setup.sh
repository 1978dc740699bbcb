#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh machine of this project's kind, idempotent:
#   - uv (the PyPI package, which ships the binary), for the dev env;
#   - the HOST interpreter (python3 on PATH, or $UVKERNEL_TEST_HOST): CPU torch 2.13.0 and ipykernel in its
#     own site-packages, the way a GPU workstation keeps its global stack. It is NOT the dev env;
#   - the dev env .venv (no system site-packages): uvkernel itself, Jupyter, the test tools;
#   - with --e2e: Debian's chromium + chromium-driver (browser tests), configurable-http-proxy from npm
#     and acl's setfacl (JupyterHub), gcc for the fake NVML library.
set -euo pipefail
cd "$(dirname "$0")/.."
E2E=0
for arg in "$@"; do [ "$arg" = "--e2e" ] && E2E=1; done

HOST="${UVKERNEL_TEST_HOST:-$(command -v python3)}"
HOST="$("$HOST" -c 'import sys; print(sys.executable)')"
echo "setup: host interpreter $HOST"

if ! "$HOST" -m uv --version >/dev/null 2>&1; then
  "$HOST" -m pip install -q uv
fi
UV="$("$HOST" -c 'import uv; print(uv.find_uv_bin())')"

# The host stack. pip (not uv) because the CPU wheel lies in pip's find-links on this kind of machine.
if ! "$HOST" -c 'import torch, ipykernel' >/dev/null 2>&1; then
  "$HOST" -m pip install -q torch==2.13.0 ipykernel
fi
"$HOST" -c 'import torch; print("setup: host torch", torch.__version__, "at", torch.__file__)'

# The dev env: uvkernel (editable) and the test/Jupyter tools. Not inheriting the host.
if [ ! -x .venv/bin/python ]; then
  "$UV" venv -q .venv --python "$HOST"
fi
# The distribution was called uvkernel before it became jupyter-uvkernel (that name on PyPI is another project's):
# a dev env from before keeps the old dist-info, which uvkernel would report as a second owner of its files.
if .venv/bin/python -c 'import importlib.metadata as m; m.distribution("uvkernel")' >/dev/null 2>&1; then
  "$UV" pip uninstall -q --python .venv/bin/python uvkernel
fi
"$UV" pip install -q --python .venv/bin/python -e . --group test

if [ "$E2E" = 1 ]; then
  need_apt=()
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
  # JupyterHub test: lets its throwaway users reach a host interpreter under /root (mode 0700)
  command -v setfacl >/dev/null 2>&1 || need_apt+=(acl)
  if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ ! -x build/node/node_modules/.bin/configurable-http-proxy ]; then
    mkdir -p build/node
    npm install --silent --no-audit --no-fund --prefix build/node configurable-http-proxy@5 >/dev/null
  fi
fi
echo "$HOST" > .venv/uvkernel-test-host
echo "setup: done (dev env .venv, host $HOST)"
