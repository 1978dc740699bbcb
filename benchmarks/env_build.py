"""Cold envs of the project shapes people have: uvkernel against the by-hand uv recipe, shape by shape, in one run.

    .venv/bin/python benchmarks/env_build.py [--runs 9] [--shapes a,b] [--out benchmarks/results]

Shapes (each a project made in a temporary folder; the corpus ones copied from shared/realworld):

  virtual, locked          nanochat-shaped: ~100 dependencies besides torch, a dev group, a uv.lock, no build
  package, no lock         the project is a package ([build-system], src/<pkg>/) requiring torch and the same
                           ~100 dependencies, no uv.lock
  package, locked          the same with a uv.lock
  virtual, locked, first start   the same, uvkernel keeping nothing of the project (its first start on a host:
                           what does not fit the host is resolved again), by hand relocking in every round
                           (``uv lock && uv sync`` of the same change)
  workspace member         a virtual workspace root, two package members (app depends on core, which requires
                           torch), the notebook in the app member, a uv.lock
  smol-course, transformerlens   the real projects of the corpus on the PyPI CUDA torch host (stubs and READMEs
                           as tests/corpus prepares them); that host has no ipykernel

and two variants per shape, interleaved round by round (the order alternates):

  by hand    a copy with ``[tool.uv] exclude-dependencies`` naming the host's stack (torch, triton, nvidia-*,
             cuda-*), then ``uv venv --system-site-packages --python HOST .venv`` and ``uv sync --inexact`` (in
             the member's folder for the workspace); a corpus project's lock, written for the full stack, is put
             back before each round and relocked (``uv lock``) in the timed part, and ipykernel is installed
             (``uv pip install ipykernel``) where the host lacks it.  A project without a lock keeps the uv.lock
             its first ``uv sync`` wrote, as uvkernel keeps its resolution.
  uvkernel   the project as it is: no env, then what ``uvkernel check`` runs (``pipeline.prepare`` in this
             process: the env and the preflight), with uvkernel's per-host facts, deep preflight results, kept
             resolutions and kept editable builds left from the unrecorded first round (a machine that has run
             uvkernel before: a new project's first start).

uv's own cache is the user's (warm: the first round is not recorded); uvkernel's cache is a fresh folder.  Writes
env_build.json (every sample) and env_build.md; the target is a median ratio <= 2 for every shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET = 2.0
# nanochat's dependencies (its torch pin relaxed) and a dev group: ~100 distributions with their closure
DEPENDENCIES = ["fastapi>=0.117", "psutil>=7.1", "regex>=2025.9", "setuptools>=80.9", "tiktoken>=0.11",
                "tokenizers>=0.22", "torch>=2.8", "uvicorn[standard]>=0.36", "wandb>=0.21", "matplotlib>=3.10",
                "rich>=14", "pandas>=2.2", "scikit-learn>=1.5", "aiohttp>=3.10", "sqlalchemy>=2.0",
                "pyarrow>=17", "einops>=0.8", "sentencepiece>=0.2", "safetensors>=0.4", "openai>=1.50"]
DEV = ["maturin>=1.9", "pytest>=8.0"]
STACK = re.compile(r"^(torch|triton|nvidia[-_].*|cuda[-_].*)$", re.I)
CUDA_HOST = os.path.join(os.environ.get("UVKERNEL_CUDA_HOST") or "/opt/uvkernel-hosts/pypi-cuda", "bin", "python")
BUILD = '\n[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'


def default_host() -> str:
    marker = REPO / ".venv" / "uvkernel-test-host"
    if os.environ.get("UVKERNEL_TEST_HOST"):
        return os.environ["UVKERNEL_TEST_HOST"]
    return marker.read_text().strip() if marker.exists() else (shutil.which("python3") or sys.executable)


def corpus_dir() -> Path:
    beside = REPO.parent / "shared" / "realworld"
    if (beside / "corpus.json").is_file():
        return beside
    return Path(os.environ.get("UVKERNEL_CORPUS") or "/work/shared/realworld")


def pyproject(name: str = "nanochat-like", deps: list[str] = DEPENDENCIES, extra: str = "") -> str:
    listed = ",\n    ".join(json.dumps(d) for d in deps)
    dev = ", ".join(json.dumps(d) for d in DEV)
    return (f'[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
            f'dependencies = [\n    {listed},\n]\n\n[dependency-groups]\ndev = [{dev}]\n{extra}')


def run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")


def own_dists(env: Path) -> int:
    return len(list(env.glob("lib/python3*/site-packages/*.dist-info")))


def host_stack(uv: str, host: str) -> list[str]:
    done = subprocess.run([uv, "pip", "list", "--python", host, "--format", "json"], capture_output=True, text=True,
                          check=True)
    return sorted(d["name"] for d in json.loads(done.stdout) if STACK.match(d["name"]))


def has_ipykernel(host: str) -> bool:
    return subprocess.run([host, "-c", "import ipykernel"], capture_output=True).returncode == 0


def exclude_stack(pyproject_path: Path, names: list[str]) -> None:
    """``exclude-dependencies`` under the file's [tool.uv] (a second [tool.uv] header would be invalid TOML)."""
    line = "exclude-dependencies = [" + ", ".join(json.dumps(n) for n in names) + "]\n"
    text = pyproject_path.read_text()
    match = re.search(r"^\s*\[tool\.uv\]\s*$", text, flags=re.M)
    if match:
        text = text[:match.end()] + "\n" + line + text[match.end() + 1:]
    else:
        text = text.rstrip("\n") + "\n\n[tool.uv]\n" + line
    pyproject_path.write_text(text)


@dataclass
class Shape:
    name: str
    host: str
    make: Callable[[Path], Path]  # writes the project into a folder; returns the notebook's folder in it
    lock: bool = True  # write a uv.lock (for the project and its by-hand copy) before the rounds
    relock: bool = False  # by hand: put the original lock back and relock in each round (corpus projects)
    sync_in: str = "."  # by hand: where uv sync runs (the member's folder for the workspace)
    env_at: str = "."  # where the by-hand env is made (the workspace root)
    first: bool = False  # uvkernel's first start of this project on the host: nothing of it kept (only the host's)
    samples: dict[str, list[float]] = field(default_factory=lambda: {"by_hand": [], "uvkernel": []})


def _package(folder: Path, name: str, deps: list[str], extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(pyproject(name, deps, extra + BUILD))
    module = folder / "src" / name.replace("-", "_")
    module.mkdir(parents=True, exist_ok=True)
    (module / "__init__.py").write_text('__version__ = "0.1.0"\n')


def make_virtual(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(pyproject())
    return folder


def make_package(folder: Path) -> Path:
    _package(folder, "pkgshape", DEPENDENCIES)
    (folder / "notebooks").mkdir(exist_ok=True)
    return folder / "notebooks"


def make_workspace(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["packages/*"]\n')
    _package(folder / "packages" / "core", "wscore", DEPENDENCIES[:10])
    _package(folder / "packages" / "app", "wsapp", ["wscore"] + DEPENDENCIES[10:],
             '\n[tool.uv.sources]\nwscore = { workspace = true }\n')
    (folder / "packages" / "app" / "notebooks").mkdir()
    return folder / "packages" / "app" / "notebooks"


def make_corpus(project: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        entry = json.loads((corpus_dir() / "corpus.json").read_text())["projects"][project]
        shutil.copytree(corpus_dir() / project, folder)
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        sys.path.insert(0, str(REPO / "tests"))
        from corpus.support import git_tag, write_readmes, write_stubs

        write_stubs(folder, entry.get("stubs", []))
        write_readmes(folder)
        if entry.get("git"):
            git_tag(folder, entry["git"])
        notebooks = folder / entry["notebooks"]
        notebooks.mkdir(parents=True, exist_ok=True)
        return notebooks
    return make


def shapes(host: str) -> list[Shape]:
    return [Shape("virtual, locked", host, make_virtual),
            Shape("virtual, locked, first start", host, make_virtual, relock=True, first=True),
            Shape("package, no lock", host, make_package, lock=False),
            Shape("package, locked", host, make_package),
            Shape("workspace member", host, make_workspace, sync_in="packages/app"),
            Shape("smol-course (PyPI CUDA host)", CUDA_HOST, make_corpus("smol-course"), lock=False, relock=True),
            Shape("transformerlens (PyPI CUDA host)", CUDA_HOST, make_corpus("transformerlens"), lock=False,
                  relock=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="measured rounds (default 9)")
    parser.add_argument("--host", default=default_host(), help="host interpreter (default: the test host)")
    parser.add_argument("--shapes", default="", help="comma-separated names (default: every shape)")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    import uv as uv_package

    uv = uv_package.find_uv_bin()
    root = Path(tempfile.mkdtemp(prefix="uvkernel-envbench-"))
    os.environ.update(UV_PYTHON_DOWNLOADS="never")
    for var in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_PYTHON", "UVKERNEL_HOST_PYTHON"):
        os.environ.pop(var, None)
    sys.path.insert(0, str(REPO / "src"))
    from uvkernel import pipeline
    from uvkernel.settings import UvKernelSettings

    cache = root / "uvkernel-cache"
    chosen = [s for s in shapes(args.host) if not args.shapes or any(w.strip() and w.strip() in s.name
                                                                      for w in args.shapes.split(","))]
    runners = []
    failed: list[dict[str, str]] = []
    for index, shape in enumerate(chosen):
        if not Path(shape.host).exists():
            print(f"skipped {shape.name}: no host {shape.host}")
            continue
        mine_root, hand_root = root / f"s{index}" / "project", root / f"s{index}" / "by-hand"
        notebook = shape.make(mine_root)
        shape.make(hand_root)
        exclude_stack(hand_root / "pyproject.toml", host_stack(uv, shape.host))
        if shape.lock:
            run([uv, "lock", "-q", "--python", shape.host], mine_root)
            run([uv, "lock", "-q", "--python", shape.host], hand_root)
        original_lock = (hand_root / "uv.lock").read_bytes() if (hand_root / "uv.lock").exists() else None
        needs_ipykernel = not has_ipykernel(shape.host)
        # a first start clears the project's kept results: in a cache of its own, so the other shapes keep theirs
        shape_cache = cache / ("first" if shape.first else "shared")
        settings = UvKernelSettings(host_python=shape.host, cache_dir=str(shape_cache))

        def by_hand(shape=shape, hand_root=hand_root, original_lock=original_lock, needs=needs_ipykernel) -> float:
            env = hand_root / shape.env_at / ".venv"
            shutil.rmtree(env, ignore_errors=True)
            if shape.relock and original_lock is not None:
                (hand_root / "uv.lock").write_bytes(original_lock)
            t0 = time.perf_counter()
            run([uv, "venv", "-q", "--system-site-packages", "--python", shape.host, str(env)], hand_root)
            if shape.relock:
                run([uv, "lock", "-q", "--python", shape.host], hand_root)
            run([uv, "sync", "-q", "--inexact"], hand_root / shape.sync_in)
            if needs:
                run([uv, "pip", "install", "-q", "--python", str(env / "bin" / "python"), "ipykernel"], hand_root)
            return time.perf_counter() - t0

        def uvkernel(mine_root=mine_root, notebook=notebook, settings=settings, first=shape.first,
                     cache=shape_cache) -> float:
            for env in [mine_root / ".venv", *mine_root.glob("packages/*/.venv")]:
                shutil.rmtree(env, ignore_errors=True)
            for entry in cache.glob("*"):
                # per-host facts, deep results, kept resolutions and editable builds stay (a machine used before)
                if entry.name not in (("hosts", "preflight") if first else
                                      ("hosts", "preflight", "resolutions", "editables")):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            t0 = time.perf_counter()
            asyncio.run(pipeline.prepare(settings, cwd=str(notebook), environ=dict(os.environ), log=lambda _m: None))
            return time.perf_counter() - t0

        try:
            by_hand(), uvkernel()  # fills uv's cache, the per-host facts and the kept results; not recorded
        except (Exception, SystemExit) as exc:  # a shape that cannot start is reported, the others still run
            failed.append({"shape": shape.name, "host": shape.host, "error": str(exc).splitlines()[0][:400]})
            print(f"{shape.name}: {failed[-1]['error']}", file=sys.stderr)
            continue
        runners.append((shape, by_hand, uvkernel, mine_root, hand_root))

    for i in range(args.runs):
        for shape, by_hand, uvkernel, _m, _h in runners:
            order = [("by_hand", by_hand), ("uvkernel", uvkernel)]
            for key, fn in order if i % 2 == 0 else order[::-1]:
                shape.samples[key].append(fn())

    rows = []
    for shape, _b, _u, mine_root, hand_root in runners:
        med = {k: statistics.median(v) for k, v in shape.samples.items()}
        ratios = [u / b for u, b in zip(shape.samples["uvkernel"], shape.samples["by_hand"])]
        rows.append({"shape": shape.name, "host": shape.host, "samples": shape.samples, "medians": med,
                     "ratio": med["uvkernel"] / med["by_hand"],
                     "round_ratios": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)},
                     "spread": {k: [min(v), max(v)] for k, v in shape.samples.items()},
                     "dists": {"by_hand": own_dists(hand_root / shape.env_at / ".venv"),
                               "uvkernel": sum(own_dists(e) for e in [mine_root / ".venv",
                                                                      *mine_root.glob("packages/*/.venv")])}})
    result = {"runs": args.runs, "target": TARGET, "rows": rows, "failed": failed, "dependencies": DEPENDENCIES,
              "dev": DEV}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "env_build.json").write_text(json.dumps(result, indent=1))
    lines = ["| shape | host | by hand median s (min–max) | uvkernel median s (min–max) | ratio of medians | "
             "round ratios min / median / max | dists (by hand / uvkernel) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        b, u = r["spread"]["by_hand"], r["spread"]["uvkernel"]
        rr = r["round_ratios"]
        lines.append(f"| {r['shape']} | {Path(r['host']).parent.parent.name or r['host']} | "
                     f"{r['medians']['by_hand']:.2f} ({b[0]:.2f}–{b[1]:.2f}) | "
                     f"{r['medians']['uvkernel']:.2f} ({u[0]:.2f}–{u[1]:.2f}) | "
                     f"**{r['ratio']:.2f}x** {'met' if r['ratio'] <= TARGET else 'NOT met'} | "
                     f"{rr['min']:.2f} / {rr['median']:.2f} / {rr['max']:.2f} | "
                     f"{r['dists']['by_hand']} / {r['dists']['uvkernel']} |")
    table = "\n".join(lines) + (f"\n\nMedian of {args.runs} interleaved rounds per shape (target <= {TARGET}x); "
                                 "uv's cache warm, uvkernel's per-host results kept, preflight included.\n")
    table += "".join(f"\n{f['shape']}: uvkernel could not start it: {f['error']}\n" for f in failed)
    (out / "env_build.md").write_text("# Cold envs by project shape\n\n" + table)
    print(table)
    shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r["ratio"] <= TARGET for r in rows) and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
