#!/usr/bin/env bash
# A long fuzzing run of tests/test_fuzz.py: N examples for each target that only parses, N/10 for each target
# that runs uv or the preflight (offline).  Prints how many inputs were tried; exits non-zero on any failure.
#   scripts/fuzz.sh 2000
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
COUNT="$(mktemp)"
echo '{}' > "$COUNT"
status=0
HYPOTHESIS_PROFILE=long FUZZ_EXAMPLES="$N" FUZZ_COUNT_FILE="$COUNT" UV_PYTHON_DOWNLOADS=never \
  .venv/bin/python -m pytest -n 1 -p no:cacheprovider tests/test_fuzz.py -q --timeout 0 || status=$?
.venv/bin/python - "$COUNT" "$status" <<'PY'
import json, sys
counts = json.load(open(sys.argv[1]))
for name, n in sorted(counts.items()):
    print(f"  {n:7d}  {name}")
print(f"fuzz: {sum(counts.values())} inputs tried; result: {'no failures' if sys.argv[2] == '0' else 'FAILURES (above)'}")
PY
rm -f "$COUNT"
exit "$status"
