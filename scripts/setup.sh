#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh machine of this project's kind, idempotent:
#   - uv (the PyPI package, which ships the binary), for the dev env;
#   - the HOST interpreter (python3 on PATH, or $UVKERNEL_TEST_HOST): CPU torch 2.13.0 and ipykernel in its
#     own site-packages, the way a GPU workstation keeps its global stack. It is NOT the dev env;
#   - the dev env .venv (no system site-packages): uvkernel itself, Jupyter, the test tools;
#   - with --e2e: Debian's chromium + chromium-driver (browser tests), configurable-http-proxy from npm
#     and acl's setfacl (JupyterHub), gcc for the fake NVML library;
#   - with --corpus: the two hosts the real-project corpus tier (tests/corpus) starts kernels on: Debian's own
#     /usr/bin/python3.11 with CPU torch 2.13.0 installed globally by pip, and a venv holding PyPI's CUDA torch
#     2.14.1 + torchvision 0.29.1 + numpy at ${UVKERNEL_CUDA_HOST:-/opt/uvkernel-hosts/pypi-cuda}; plus Debian's
#     FFmpeg 5 libraries, which torchcodec loads;
#   - with --pythons: the other Pythons the test command runs on (scripts/test-pythons.sh), pyenv's 3.9, 3.10, 3.12
#     and 3.13: a host of each under build/hosts/ (a hard-linked copy of the pyenv installation, so pyenv's own
#     stays untouched, with ipykernel and the fake torch double: no torch wheel is on disk for those Pythons) and
#     a dev env of uvkernel itself on 3.10, 3.12 and 3.13 (.venv-py3.10, .venv-py3.12, .venv-py3.13).
set -euo pipefail
cd "$(dirname "$0")/.."
E2E=0
CORPUS=0
PYTHONS=0
for arg in "$@"; do
  [ "$arg" = "--e2e" ] && E2E=1
  [ "$arg" = "--corpus" ] && CORPUS=1
  [ "$arg" = "--pythons" ] && PYTHONS=1
done

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
# The JupyterLab extension (js/): built into src/uvkernel/labextension before the install, whose build hook
# refuses to go on without it. Skipped when the built files are newer than every source; npm ci only when the
# lock file changed. The builder needs JupyterLab's staging folder, hence Jupyter in .venv first.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm is missing (Node.js 20): it builds the JupyterLab extension" >&2
  exit 1
fi
if [ ! -d .venv/lib/python*/site-packages/jupyterlab/staging ]; then
  "$UV" pip install -q --python .venv/bin/python "jupyterlab>=4.2"
fi
LABEXT=src/uvkernel/labextension
if [ ! -f js/node_modules/.package-lock.json ] || [ js/package-lock.json -nt js/node_modules/.package-lock.json ]; then
  echo "setup: npm ci (JupyterLab extension)"
  (cd js && npm ci --silent --no-audit --no-fund >/dev/null)
fi
if [ ! -f "$LABEXT/package.json" ] || [ -n "$(find js/src js/style js/package.json js/tsconfig.json -newer "$LABEXT/package.json" -print -quit)" ]; then
  echo "setup: building the JupyterLab extension"
  STAGING="$(echo .venv/lib/python*/site-packages/jupyterlab/staging)"
  rm -rf "$LABEXT"
  (cd js && rm -rf lib tsconfig.tsbuildinfo && npx --no-install tsc \
     && node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "../$STAGING" . >/dev/null)
  touch "$LABEXT/package.json"
else
  echo "setup: JupyterLab extension up to date"
fi
# The distribution was called uvkernel before it became jupyter-uvkernel (that name on PyPI is another project's):
# a dev env from before keeps the old dist-info, which uvkernel would report as a second owner of its files.
if .venv/bin/python -c 'import importlib.metadata as m; m.distribution("uvkernel")' >/dev/null 2>&1; then
  "$UV" pip uninstall -q --python .venv/bin/python uvkernel
fi
"$UV" pip install -q --python .venv/bin/python -e . --group test
# As `jupyter labextension develop` links it (its module lookup misses a src/ package named unlike its
# distribution): the dev env's Jupyter serves the extension from the build folder, so a rebuild needs no reinstall.
DEV_LABEXT=".venv/share/jupyter/labextensions/jupyter-uvkernel"
if [ ! -L "$DEV_LABEXT" ]; then
  rm -rf "$DEV_LABEXT"
  ln -s "$PWD/src/uvkernel/labextension" "$DEV_LABEXT"
fi

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
if [ "$CORPUS" = 1 ]; then
  # apt first: the Debian host itself (python3.11 with apt's PyYAML, Pygments and pip, which is what makes it a
  # "Debian host") and the FFmpeg 5 libraries. The index is only refreshed when something is missing.
  need_apt=()
  for pkg in python3.11 python3-pip python3-venv python3-yaml python3-pygments \
             libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: Debian python3.11 and FFmpeg 5 libraries already installed"
  fi

  # Debian host: torch goes into /usr/local's dist-packages, beside apt's packages, as `sudo pip install` would.
  DEBIAN_HOST=/usr/bin/python3.11
  if ! "$DEBIAN_HOST" -c 'import torch' >/dev/null 2>&1; then
    echo "setup: pip install torch==2.13.0 into $DEBIAN_HOST"
    "$DEBIAN_HOST" -m pip install -q --break-system-packages torch==2.13.0
  else
    echo "setup: $DEBIAN_HOST already has torch"
  fi
  "$DEBIAN_HOST" -c 'import torch; print("setup: Debian host torch", torch.__version__, "at", torch.__file__)' 2>/dev/null

  # CUDA host: ~5.5 GB of wheels, so it is built beside its final place and renamed into it only when complete;
  # an interrupted build is never mistaken for a finished one. pip, not uv: the wheels are in pip's find-links.
  CUDA_HOST="${UVKERNEL_CUDA_HOST:-/opt/uvkernel-hosts/pypi-cuda}"
  cuda_ok() {
    "$1/bin/python" - >/dev/null 2>&1 <<'PY'
import importlib.metadata as m, sys
import torch, torchvision, numpy
sys.exit(0 if (m.version("torch"), m.version("torchvision")) == ("2.14.1", "0.29.1") else 1)
PY
  }
  if cuda_ok "$CUDA_HOST"; then
    echo "setup: CUDA host $CUDA_HOST already has torch 2.14.1"
  else
    echo "setup: building the CUDA host $CUDA_HOST (pip install torch==2.14.1 torchvision==0.29.1 numpy)"
    parent="$(dirname "$CUDA_HOST")"
    mkdir -p "$parent"
    partial="$parent/.$(basename "$CUDA_HOST").partial.$$"
    rm -rf "$parent/.$(basename "$CUDA_HOST").partial."*  # left by an interrupted run
    python3 -m venv "$partial"
    "$partial/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 numpy
    # the venv's scripts and activate files name the folder they were made in: point them at the final one
    grep -rlI --null "$partial" "$partial/bin" | xargs -0 -r sed -i "s|$partial|$CUDA_HOST|g"
    if [ -e "$CUDA_HOST" ]; then
      mv "$CUDA_HOST" "$partial.old"
    fi
    mv "$partial" "$CUDA_HOST"
    rm -rf "$partial.old"
    cuda_ok "$CUDA_HOST" || { echo "setup: the CUDA host $CUDA_HOST does not import torch 2.14.1" >&2; exit 1; }
  fi
  "$CUDA_HOST/bin/python" -c 'import torch; print("setup: CUDA host torch", torch.__version__, "at", torch.__file__)'
fi
if [ "$PYTHONS" = 1 ]; then
  PYENV_VERSIONS="${PYENV_ROOT:-/root/.pyenv}/versions"
  for version in 3.9.18 3.10.13 3.12.1 3.13.0; do
    short="${version%.*}"
    base="$PYENV_VERSIONS/$version/bin/python$short"
    if ! "$base" -c 'import sys' >/dev/null 2>&1; then
      # pyenv builds from python.org's source tarballs, which this machine cannot download
      echo "setup: $base is missing: this machine kind has pyenv's $version; elsewhere run \`pyenv install $version\`" \
           "where python.org is reachable (or put Python-$version.tar.xz into \$PYENV_ROOT/cache first)" >&2
      exit 1
    fi
    # The host: a plain installation like the standard host, at its own prefix. Hard links cost no disk, and what
    # is installed here (new files) never reaches pyenv's folder.
    host_dir="build/hosts/py$short"
    if [ ! -x "$host_dir/bin/python$short" ]; then
      rm -rf "$host_dir" "$host_dir.partial"
      mkdir -p build/hosts
      # a plain copy where hard links cannot cross file systems
      cp -al "$PYENV_VERSIONS/$version" "$host_dir.partial" 2>/dev/null \
        || { rm -rf "$host_dir.partial"; cp -a "$PYENV_VERSIONS/$version" "$host_dir.partial"; }
      mv "$host_dir.partial" "$host_dir"
    fi
    host_python="$PWD/$host_dir/bin/python$short"
    if ! "$host_python" -I -c 'import ipykernel' >/dev/null 2>&1; then
      "$UV" pip install -q --python "$host_python" ipykernel
    fi
    site="$("$host_python" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    .venv/bin/python tests/doubles/fake_torch.py "$site" --version 2.13.0+cpu --cuda none | sed 's/^/setup: /'
    # uvkernel itself on each Python it supports but the standard host's: the fast tests' own tools only
    if [ "$short" != 3.9 ]; then
      dev=".venv-py$short"
      [ -x "$dev/bin/python" ] || "$UV" venv -q "$dev" --python "$base"
      "$UV" pip install -q --python "$dev/bin/python" -e . --group test-core
    fi
  done
  echo "setup: other Pythons ready (hosts under build/hosts, dev envs .venv-py3.10 .venv-py3.12 .venv-py3.13)"
fi
echo "$HOST" > .venv/uvkernel-test-host
echo "setup: done (dev env .venv, host $HOST)"
