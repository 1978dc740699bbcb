"""How fast the installed ``uvkernel`` command starts, against bare Python in the same run.

    .venv/bin/python benchmarks/cli_start.py [--runs 9] [--host-python PATH] [--out benchmarks/results]

Runs the installed entry-point script (``.venv/bin/uvkernel``: what a user types, not ``python -m`` or a shim):
  --version          the whole process, start to exit
  check DIR          start to its first progress line on stderr (the process is stopped there), on a warm
                     project whose host facts are cached (one check runs first, unrecorded)
and, for scale, the same interpreter running ``-c pass`` and ``-c "import asyncio"``.  Rounds interleave the
variants, with bytecode written as a user's Python writes it; the figure is the best of the rounds (the floor: what the code costs when the machine is not busy),
with the median beside it.  Targets: --version 100 ms, check to its first line 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS_MS = {"--version": 100.0, "check, to its first progress line": 150.0}


def _whole(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - start


def _first_line(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        took = time.perf_counter() - start
        if not line.startswith(b"uvkernel:"):
            raise RuntimeError(f"first stderr line is not a progress line: {line!r}")
        return took
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--host-python", default=os.environ.get("UVKERNEL_HOST_PYTHON", ""))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    script = REPO / ".venv" / "bin" / "uvkernel"
    python = REPO / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="uvkernel-cli-start-") as tmp:
        project = Path(tmp) / "proj"
        project.mkdir()
        (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0.1.0"\n'
                                                 'requires-python = ">=3.9"\ndependencies = []\n')
        # as a user's shell runs it: Python writes bytecode (a CI or container setting that turns it off would
        # measure compiling every module at every start); the unrecorded first check writes it
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        check = [str(script), "check", str(project)] + (["--host-python", args.host_python] if args.host_python else [])
        subprocess.run(check, env=env, capture_output=True, check=False)  # the env, host facts and preflight cached
        variants = {
            "python -c pass": lambda: _whole([str(python), "-c", "pass"], env),
            "python -c 'import asyncio'": lambda: _whole([str(python), "-c", "import asyncio"], env),
            "--version": lambda: _whole([str(script), "--version"], env),
            "check, to its first progress line": lambda: _first_line(check, env),
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.runs):
            for name, run in variants.items():
                samples[name].append(run() * 1000)
    rows = []
    for name, values in samples.items():
        target = TARGETS_MS.get(name)
        best = min(values)
        rows.append({"variant": name, "best_ms": round(best, 1), "median_ms": round(statistics.median(values), 1),
                     "max_ms": round(max(values), 1), "target_ms": target,
                     "meets": None if target is None else best <= target, "samples_ms": [round(v, 1) for v in values]})
    lines = [f"CLI start, best of {args.runs} interleaved rounds (median, max beside it); {sys.platform}, "
             f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", "",
             "| variant | best ms | median ms | max ms | target ms |", "|---|---|---|---|---|"]
    for r in rows:
        target = "" if r["target_ms"] is None else f"{r['target_ms']:.0f} ({'met' if r['meets'] else 'missed'})"
        lines.append(f"| {r['variant']} | {r['best_ms']} | {r['median_ms']} | {r['max_ms']} | {target} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_start.json").write_text(json.dumps({"runs": args.runs, "rows": rows}, indent=1) + "\n")
    (out / "cli_start.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
