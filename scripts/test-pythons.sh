#!/usr/bin/env bash
# The fast tests on the other Pythons uvkernel supports (scripts/setup.sh --pythons prepares them), run by
# scripts/test.sh after the main suite:
#   - hosts 3.9, 3.10, 3.12 and 3.13 (build/hosts/, with the fake torch double as their torch): host detection, an
#     env created with system site-packages and repaired, a project's locked dependencies resolved for that Python
#     (not on 3.9: that project needs 3.10), the probe and the preflight (deep import of the host's torch, a copy in
#     the env that shadows it), a kernel started through the provisioner. 3.9 is the oldest host uvkernel accepts,
#     though uvkernel itself needs 3.10;
#   - uvkernel itself on 3.10, 3.12 and 3.13 (.venv-py3.10, .venv-py3.12, .venv-py3.13; the standard host): the settings table, the
#     message catalogue, project parsing, the layering rules, the CLI refusing a bad host at `install` and a real
#     `uvkernel check`, and a kernel started by the provisioner running on that Python.
# Extra arguments go to every pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
WORKERS="${UVKERNEL_TEST_WORKERS:-2}"
HOST_TESTS=(
  "tests/test_provisioner.py::test_kernel_uses_host_torch_from_project_env"
  "tests/test_provisioner.py::test_env_without_system_site_is_repaired_keeping_packages"
  "tests/test_preflight_cpu.py::test_cpu_torch_auto_passes_with_a_notice"
  "tests/test_preflight_cpu.py::test_torch_installed_into_the_env_is_shadowed"
  "tests/test_deps.py::test_locked_versions_are_honoured_and_the_lock_is_not_written"
  "tests/test_bad_input.py::test_requires_python_excludes_the_host"
)
DEV_TESTS=(
  tests/test_settings_types.py
  tests/test_messages.py
  tests/test_project.py
  tests/test_layers.py
  "tests/test_kernelspec.py::test_bad_host_python_refused_at_install"
  "tests/test_preflight_cpu.py::test_check_table_json_and_exit_codes"
  "tests/test_provisioner.py::test_kernel_uses_host_torch_from_project_env"
)
missing=()
for short in 3.9 3.10 3.12 3.13; do
  [ -x "build/hosts/py$short/bin/python$short" ] || missing+=("build/hosts/py$short")
done
for short in 3.10 3.12 3.13; do
  [ -x ".venv-py$short/bin/python" ] || missing+=(".venv-py$short")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-pythons: missing ${missing[*]}: run bash scripts/setup.sh --pythons" >&2
  exit 1
fi
for short in 3.9 3.10 3.12 3.13; do
  echo "test-pythons: host Python $short (fake torch)"
  skip=()
  [ "$short" = 3.9 ] && skip=(--deselect "tests/test_deps.py::test_locked_versions_are_honoured_and_the_lock_is_not_written")
  UVKERNEL_TEST_HOST="$PWD/build/hosts/py$short/bin/python$short" \
    .venv/bin/python -m pytest -q -p no:cacheprovider -n "$WORKERS" "${skip[@]}" "$@" "${HOST_TESTS[@]}"
done
for short in 3.10 3.12 3.13; do
  echo "test-pythons: uvkernel on Python $short"
  ".venv-py$short/bin/python" -m pytest -q -p no:cacheprovider -n "$WORKERS" "$@" "${DEV_TESTS[@]}"
done
