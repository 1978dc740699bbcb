"""uvkernel against a plain ipykernel spec and pyproject-local-kernel, on one host and one project, in one run.

    .venv/bin/python benchmarks/run.py [--runs 5] [--out benchmarks/results]
    .venv/bin/python benchmarks/run.py --only warm --runs 81   # warm starts only: results/warm.{json,md}
    .venv/bin/python benchmarks/run.py --only env              # a real project's cold env vs `uv sync` by hand

Writes results.json (every sample), results.md (the table) and chart.png.  Everything runs in a fresh
temporary workspace (its own Jupyter folders and uvkernel cache); uv's download cache is shared.

Variants, each started N times by a real jupyter_client AsyncKernelManager:
  baseline        the host interpreter's ipykernel (argv as `python -m ipykernel install` writes it)
  env baseline    the same env's python running ipykernel_launcher (a plain spec on the env uvkernel made):
                  what uvkernel adds over the env itself, for the small project and a ~100-distribution one
  uvkernel warm large  warm start of a project whose env holds ~100 distributions
  uvkernel warm   env exists and is up to date
  uvkernel restart  restart_kernel() of a running uvkernel kernel
  uvkernel cold   no env yet (the env folder and uvkernel's per-project cache state removed before each
                  start; the per-host facts in cache/uvkernel/hosts are kept)
  pyproject-local-kernel warm / cold  (`uv run --with ipykernel python -m ipykernel_launcher` in a copy
                  of the project: its env does not inherit the host, so torch is not importable there)
Rounds interleave the variants so drift on a shared machine hits all of them alike; each env's plain ipykernel
and uvkernel's warm start run as ABBA pairs, and the warm targets take the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

TARGETS = {
    "warm_info_ratio": 1.05,
    "warm_torch_ratio": 1.05,
    "warm_info_env_ratio": 1.05,
    "warm_info_env_ratio_large": 1.05,
    "cold_torch_ratio": 1.3,
    "disk_with_ipykernel_mb": 30.0,
    "disk_host_ipykernel_mb": 1.0,
    "status_p99_ms": 50.0,
}
PROJECT_DEPENDENCIES = ["tomli-w"]  # a small real dependency the host does not have
# A real ML project's dependency set: about 100 distributions in the env beyond what the host provides.
LARGE_DEPENDENCIES = ["jupyterlab", "pandas", "matplotlib", "scikit-learn", "datasets", "rich", "typer", "fastapi",
                      "sqlalchemy", "tqdm", "wandb", "tensorboard", "hydra-core", "seaborn", "plotly", "einops",
                      "loguru", "tiktoken", "black", "isort", "tabulate"]


def default_host() -> str:
    marker = REPO / ".venv" / "uvkernel-test-host"
    if os.environ.get("UVKERNEL_TEST_HOST"):
        return os.environ["UVKERNEL_TEST_HOST"]
    if marker.exists():
        return marker.read_text().strip()
    return shutil.which("python3") or sys.executable


def stats(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "min": None, "median": None, "max": None, "samples": []}
    return {"n": len(vals), "min": min(vals), "median": statistics.median(vals), "max": max(vals),
            "samples": [round(v, 4) for v in values]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


class Workspace:
    """A temporary folder with isolated Jupyter dirs, the project, a copy for the neighbour, kernel specs."""

    def __init__(self, host: str, keep: bool = False):
        self.root = Path(tempfile.mkdtemp(prefix="uvkernel-bench-"))
        self.keep = keep
        self.host = host
        import uv

        self.uv = uv.find_uv_bin()
        for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "cache")):
            (self.root / sub).mkdir()
            os.environ[var] = str(self.root / sub)
        os.environ["JUPYTER_PATH"] = str(self.root / "data")
        os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
        os.environ["UV_PYTHON_DOWNLOADS"] = "never"
        for var in ("UVKERNEL_HOST_PYTHON", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "UV_PYTHON"):
            os.environ.pop(var, None)
        self.uvkernel_cache = self.root / "cache" / "uvkernel"
        self.project = self.make_project(self.root / "work" / "proj")
        self.neighbour_project = self.make_project(self.root / "work" / "proj-neighbour", tool_uv=True)
        self.large_project = self.make_project(self.root / "work" / "proj-large", dependencies=LARGE_DEPENDENCIES)

    def make_project(self, folder: Path, tool_uv: bool = False, dependencies: list[str] | None = None) -> Path:
        folder.mkdir(parents=True)
        deps = ", ".join(json.dumps(d) for d in (dependencies or PROJECT_DEPENDENCIES))
        (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
            [project]
            name = "bench-project"
            version = "0.1.0"
            requires-python = ">=3.9"
            dependencies = [{deps}]
            """) + ("\n[tool.uv]\npackage = false\n" if tool_uv else ""))
        (folder / "bench.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                        "nbformat_minor": 5}))
        return folder

    def write_spec(self, name: str, spec: dict[str, Any]) -> None:
        folder = self.root / "data" / "kernels" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kernel.json").write_text(json.dumps(spec, indent=1))

    def install_specs(self) -> None:
        # the baseline, as `python -m ipykernel install --prefix` writes it for the host interpreter
        self.write_spec("bench-ipykernel", {
            "argv": [self.host, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "host ipykernel", "language": "python", "metadata": {"debugger": True}})
        # the same env's own plain ipykernel (the env uvkernel makes for each project; it exists after the warm-up)
        for name, project in (("bench-env-ipykernel", self.project), ("bench-env-ipykernel-large", self.large_project)):
            self.write_spec(name, {
                "argv": [str(project / ".venv" / "bin" / "python"), "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                         "-f", "{connection_file}"],
                "display_name": "env ipykernel", "language": "python", "metadata": {"debugger": True}})
        from uvkernel import kernelspec

        kernelspec.install(name="bench-uvkernel", host_python=self.host, user=True)
        # a host without ipykernel (Debian's python3, when present): uvkernel installs ipykernel into the env
        debian = Path("/usr/bin/python3")
        self.bare_host = str(debian) if debian.exists() and subprocess.run(
            [str(debian), "-I", "-c", "import ipykernel"], capture_output=True).returncode != 0 else ""
        if self.bare_host:
            kernelspec.install(name="bench-uvkernel-bare", host_python=self.bare_host, user=True,
                               config={"required_packages": [], "require_cuda": "false"})
        self.write_spec("bench-neighbour", {
            "argv": ["pyproject_local_kernel", "-f", "{connection_file}"],
            "display_name": "pyproject-local-kernel", "language": "python",
            "env": {"PATH": os.path.dirname(self.uv) + os.pathsep + os.environ.get("PATH", ""),
                    "UV_PYTHON": self.host, "UV_PYTHON_DOWNLOADS": "never"},
            "metadata": {"kernel_provisioner": {"provisioner_name": "pyproject-local-kernel-provisioner",
                                                "config": {"python_kernel_args": ["-m", "ipykernel_launcher", "-f",
                                                                                  "{connection_file}"]}}}})

    def reset_uvkernel(self) -> None:
        """No env for the project, no lock for it; what uvkernel knows about the host (cache/uvkernel/hosts and the
        deep preflight results in cache/uvkernel/preflight, per host, shared by every project) stays, as on a
        machine that has run uvkernel before: a new project's first start."""
        shutil.rmtree(self.project / ".venv", ignore_errors=True)
        if self.uvkernel_cache.is_dir():
            for entry in self.uvkernel_cache.iterdir():
                if entry.name not in ("hosts", "preflight"):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()

    def reset_neighbour(self) -> None:
        shutil.rmtree(self.neighbour_project / ".venv", ignore_errors=True)
        (self.neighbour_project / "uv.lock").unlink(missing_ok=True)

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def ensure_neighbour() -> str:
    """pyproject-local-kernel must be importable by the client's Python (its provisioner is an entry point)."""
    try:
        from importlib.metadata import version

        return version("pyproject-local-kernel")
    except Exception:
        import uv

        subprocess.run([uv.find_uv_bin(), "pip", "install", "-q", "--python", sys.executable,
                        "pyproject-local-kernel"], check=True)
        from importlib.metadata import version

        return version("pyproject-local-kernel")


SETTLE_S = 0.1  # before every timed start: the previous kernel's exit and the client's garbage settle


async def one_start(name: str, cwd: Path, restart: bool = False, with_torch: bool = True) -> tuple[Any, Any]:
    """One timed start.  A kernel that ran no torch cell is killed rather than asked to shut down: its exit is
    not measured, and the warm-only rounds then fit twice as many starts into the same minutes."""
    from kernels import TimedKernel

    gc.collect()
    await asyncio.sleep(SETTLE_S)
    kernel = TimedKernel(name, cwd)
    try:
        first = await kernel.start(with_torch=with_torch)
        again = await kernel.restart(with_torch=with_torch) if restart else None
    finally:
        await kernel.stop(now=not with_torch)
    return first, again


# uvkernel's warm start and the same env's plain ipykernel, started side by side: (reference key, its spec,
# uvkernel's key, the Workspace attribute naming the project)
WARM_PAIRS = (("baseline_env", "bench-env-ipykernel", "uvkernel_warm", "project"),
              ("baseline_env_large", "bench-env-ipykernel-large", "uvkernel_warm_large", "large_project"))


async def warm_round(ws: Workspace, keep: Any, keep_ratio: Any, order: int, with_torch: bool = True) -> None:
    """The host baseline, then each env's plain ipykernel and uvkernel's warm start as A B B A (B A A B in odd
    rounds; the pairs' order alternates too).  ABBA cancels a steady drift within the round; this machine's
    speed also jumps from second to second (the same kernel's own CPU time moves between 0.45 and 0.78 s), which
    only a median over many rounds evens out.  The round's ratio is uvkernel's two starts over the reference's
    two."""
    first, _ = await one_start("bench-ipykernel", ws.project, with_torch=with_torch)
    keep("baseline", first)
    for ref_key, ref_spec, key, attr in (WARM_PAIRS if order % 2 == 0 else WARM_PAIRS[::-1]):
        cwd = getattr(ws, attr)
        ref, mine = (ref_key, ref_spec), (key, "bench-uvkernel")
        times: dict[str, list[float]] = {ref_key: [], key: []}
        for k, spec in ((ref, mine, mine, ref) if order % 2 == 0 else (mine, ref, ref, mine)):
            first, _ = await one_start(spec, cwd, with_torch=with_torch)
            if k == key:  # uvkernel's own time in this start (its report), free of the kernel's
                done = last_start(cwd / ".venv")
                first.extra["uvkernel_s"] = (done.get("timings") or {}).get("total")
                first.extra["probe"] = done.get("cheap")
            keep(k, first)
            times[k].append(first.info)
        if all(times[key]) and all(times[ref_key]):
            keep_ratio(key, sum(times[key]) / sum(times[ref_key]))


async def kernel_rounds(ws: Workspace, runs: int, log: Any, only: str = "") -> tuple[dict[str, list[dict[str, Any]]],
                                                                                  dict[str, list[float]]]:
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "baseline", "baseline_restart", "baseline_env", "baseline_env_large", "uvkernel_warm", "uvkernel_warm_large",
        "uvkernel_restart", "uvkernel_cold", "neighbour_warm", "neighbour_cold")}
    round_ratios: dict[str, list[float]] = {key: [] for _, _, key, _ in WARM_PAIRS}

    def keep(key: str, timing: Any) -> None:
        samples[key].append({"info": timing.info, "torch": timing.torch, "error": timing.error, **timing.extra})

    def keep_ratio(key: str, ratio: float) -> None:
        round_ratios[key].append(ratio)

    # warm-up round, not recorded: fills the page cache and uv's cache for every variant, creates the envs
    ws.reset_uvkernel()
    ws.reset_neighbour()
    warmup = [("bench-ipykernel", ws.project), ("bench-uvkernel", ws.project), ("bench-uvkernel", ws.large_project),
              ("bench-env-ipykernel", ws.project), ("bench-env-ipykernel-large", ws.large_project)]
    if only != "warm":
        warmup.append(("bench-neighbour", ws.neighbour_project))
    for name, cwd in warmup:
        await one_start(name, cwd)
    for i in range(runs):
        log(f"round {i + 1}/{runs}")
        # --only warm reports the first kernel_info alone: no torch import in those kernels (a third of the time)
        await warm_round(ws, keep, keep_ratio, i, with_torch=only != "warm")
        if only == "warm":
            continue
        _, again = await one_start("bench-ipykernel", ws.project, restart=True)
        keep("baseline_restart", again)
        _, again = await one_start("bench-uvkernel", ws.project, restart=True)
        keep("uvkernel_restart", again)
        ws.reset_uvkernel()
        first, _ = await one_start("bench-uvkernel", ws.project)
        keep("uvkernel_cold", first)
        first, _ = await one_start("bench-neighbour", ws.neighbour_project)
        keep("neighbour_warm", first)
        ws.reset_neighbour()
        first, _ = await one_start("bench-neighbour", ws.neighbour_project)
        keep("neighbour_cold", first)
    return samples, round_ratios


def last_start(env: Path) -> dict[str, Any]:
    """What the last uvkernel start in ``env`` did (its report): whether the probe ran, uvkernel's own time."""
    try:
        report = json.loads((env / ".uvkernel-report.json").read_text())
    except (OSError, ValueError):
        return {}
    preflight = report.get("preflight") or {}
    return {"cheap": preflight.get("cheap"), "deep": preflight.get("deep"), "timings": report.get("timings")}


def disk_figures(ws: Workspace) -> dict[str, Any]:
    from disk import env_bytes

    out: dict[str, Any] = {}
    # host provides ipykernel: the env uvkernel made for the project (left by the last cold start)
    out["uvkernel_host_ipykernel"] = env_bytes(ws.project / ".venv")
    out["neighbour"] = env_bytes(ws.neighbour_project / ".venv")
    if ws.bare_host:
        bare = ws.make_project(ws.root / "work" / "proj-bare")
        done = subprocess.run([sys.executable, "-m", "uvkernel", "check", "--kernel", "bench-uvkernel-bare",
                               str(bare)], capture_output=True, text=True)
        if done.returncode != 0:
            out["uvkernel_installs_ipykernel"] = {"error": (done.stdout + done.stderr)[-2000:]}
        else:
            out["uvkernel_installs_ipykernel"] = env_bytes(bare / ".venv")
            out["uvkernel_installs_ipykernel"]["host"] = ws.bare_host
    return out


def status_figures(ws: Workspace, runs: int, log: Any) -> dict[str, Any]:
    from servers import JupyterServer
    from status_latency import StatusPoller, start_session_and_wait

    out: dict[str, Any] = {}
    server = JupyterServer(ws.root / "work", log_path=ws.root / "server.log", extra_args=["--allow-root"])
    server.start(timeout=120)
    try:
        for label, kernel, reset in (("baseline", "bench-ipykernel", lambda: None),
                                     ("uvkernel_cold", "bench-uvkernel", ws.reset_uvkernel)):
            samples: list[float] = []
            starts: list[float] = []
            for i in range(runs):
                reset()
                time.sleep(0.5)  # let the previous kernel's shutdown settle
                with StatusPoller(server.url, server.token) as poller:
                    session = start_session_and_wait(server, "proj/bench.ipynb", kernel)
                server.delete(f"/api/sessions/{session['id']}")
                samples.extend(poller.samples)
                starts.append(session["seconds"])
                log(f"status {label} {i + 1}/{runs}: {len(poller.samples)} requests, "
                    f"p99 {percentile(poller.samples, 99) * 1000:.1f} ms, start {session['seconds']:.2f} s")
            out[label] = {"requests": len(samples), "p50_ms": percentile(samples, 50) * 1000,
                          "p99_ms": percentile(samples, 99) * 1000, "max_ms": max(samples) * 1000,
                          "start_seconds": stats(starts)}
    finally:
        server.stop()
    return out


def summarize(samples: dict[str, list[dict[str, Any]]], round_ratios: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rows in samples.items():
        out[key] = {"info": stats([r["info"] for r in rows]), "torch": stats([r["torch"] for r in rows]),
                    "errors": sorted({r["error"] for r in rows if r["error"]})}
        if any("uvkernel_s" in r for r in rows):
            out[key]["uvkernel_work"] = stats([r.get("uvkernel_s") for r in rows])
            out[key]["cheap_probe"] = sorted({str(r.get("probe")) for r in rows})
    base = out["baseline"]
    for key, entry in out.items():
        ref = out["baseline_restart"] if key.endswith("restart") else base
        for figure in ("info", "torch"):
            mine, theirs = entry[figure], ref[figure]
            if mine["median"] is not None and theirs["median"]:
                entry[figure]["ratio_median"] = mine["median"] / theirs["median"]
                entry[figure]["ratio_min"] = mine["min"] / theirs["min"]
    # against the same env's own plain ipykernel: what uvkernel itself adds
    for ref_key, _spec, key, _project in WARM_PAIRS:
        for figure in ("info", "torch"):
            mine, theirs = out[key][figure], out[ref_key][figure]
            if mine["median"] is not None and theirs["median"]:
                mine["env_ratio_median"] = mine["median"] / theirs["median"]
                mine["env_ratio_min"] = mine["min"] / theirs["min"]
                if figure == "info":  # the rounds' ratios (ABBA pairs, see warm_round)
                    ratios = round_ratios.get(key) or []
                    mine["env_ratio_rounds"] = [round(r, 4) for r in ratios]
                    mine["env_ratio_paired_median"] = statistics.median(ratios) if ratios else None
    return out


def check(value: float | None, limit: float) -> dict[str, Any]:
    return {"value": value, "target": limit, "met": value is not None and value <= limit}


def warm_verdicts(kernels: dict[str, Any]) -> dict[str, Any]:
    """Against the same env's plain ipykernel: the median of the rounds' ratios (each round's ABBA pair, see
    warm_round).  The ratio of the pooled medians is reported beside it; on this machine it moves by +-10 percent
    from run to run because the machine's speed does (benchmarks/README.md)."""
    return {"warm_info_env_ratio": check(kernels["uvkernel_warm"]["info"].get("env_ratio_paired_median"),
                                         TARGETS["warm_info_env_ratio"]),
            "warm_info_env_ratio_large": check(kernels["uvkernel_warm_large"]["info"].get("env_ratio_paired_median"),
                                               TARGETS["warm_info_env_ratio_large"])}


def verdicts(kernels: dict[str, Any], disk: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    mb = 1024 * 1024
    bare = disk.get("uvkernel_installs_ipykernel", {})
    return {
        **warm_verdicts(kernels),
        "warm_info_ratio": check(kernels["uvkernel_warm"]["info"].get("ratio_median"), TARGETS["warm_info_ratio"]),
        "warm_torch_ratio": check(kernels["uvkernel_warm"]["torch"].get("ratio_median"),
                                  TARGETS["warm_torch_ratio"]),
        "cold_torch_ratio": check(kernels["uvkernel_cold"]["torch"].get("ratio_median"),
                                  TARGETS["cold_torch_ratio"]),
        "disk_with_ipykernel_mb": check(bare["own_bytes"] / mb if "own_bytes" in bare else None,
                                        TARGETS["disk_with_ipykernel_mb"]),
        "disk_host_ipykernel_mb": check(disk["uvkernel_host_ipykernel"]["own_bytes"] / mb,
                                        TARGETS["disk_host_ipykernel_mb"]),
        "status_p99_ms": check(status.get("uvkernel_cold", {}).get("p99_ms"), TARGETS["status_p99_ms"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured starts per variant (default 5)")
    parser.add_argument("--status-runs", type=int, default=3, help="cold starts through the server (default 3)")
    parser.add_argument("--host", default=default_host(), help="host interpreter (default: the test host)")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--only", choices=["warm", "env"], default="",
                        help="warm: only the warm starts and their baselines (writes warm.json / warm.md); "
                             "env: only the real-project env build against the by-hand uv recipe (env_build.py)")
    args = parser.parse_args(argv)
    if args.only == "env":
        import env_build

        return env_build.main(["--runs", str(max(args.runs, 9)), "--host", args.host, "--out", args.out])

    def log(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    neighbour_version = ensure_neighbour() if args.only != "warm" else ""
    ws = Workspace(args.host, keep=args.keep)
    log(f"workspace {ws.root}; host {args.host}")
    try:
        ws.install_specs()
        t0 = time.monotonic()
        samples, round_ratios = asyncio.run(kernel_rounds(ws, args.runs, log, only=args.only))
        kernels = summarize(samples, round_ratios)
        large_env = {"distributions": len(list((ws.large_project / ".venv").glob("lib/python*/site-packages/*.dist-info"))),
                     "dependencies": LARGE_DEPENDENCIES,
                     "last_start": last_start(ws.large_project / ".venv")}
        if args.only == "warm":
            disk, status = {}, {}
        else:
            disk = disk_figures(ws)
            status = status_figures(ws, args.status_runs, log)
        elapsed = time.monotonic() - t0
    finally:
        ws.close()
    import importlib.metadata as md

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "host": args.host,
        "versions": {name: md.version(name) for name in ("jupyter-uvkernel", "jupyter_client", "jupyter_server",
                                                          "ipykernel", "uv")} | {
            "pyproject-local-kernel": neighbour_version},
        "runs": args.runs,
        "status_runs": args.status_runs,
        "project_dependencies": PROJECT_DEPENDENCIES,
        "large_env": large_env,
        "seconds": round(elapsed, 1),
        "kernels": kernels,
        "disk": disk,
        "status": status,
        "targets": warm_verdicts(kernels) if args.only == "warm" else verdicts(kernels, disk, status),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only == "warm":
        from report import warm_markdown

        (out / "warm.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "warm.md").write_text(warm_markdown(result))
        print((out / "warm.md").read_text())
        return 0
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    from report import chart, markdown

    (out / "results.md").write_text(markdown(result))
    chart(result, out / "chart.png")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
