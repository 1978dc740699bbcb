"""Run the probe in the env with the kernel's exact environment, consult the cache, apply the policy.

    cheap facts: reused when nothing they were read from changed (verdicts.py), else the cheap probe
                              -> policy on the cheap facts -> failures: stop here
                              -> cache hit (same key, young enough, no recheck): deep facts from the cache
                              -> else deep probe (imports torch, initialises CUDA) -> store when it passed

Nothing here imports torch or touches CUDA: the probe is a separate process (``env_python probe.py <json>``,
its own process group, killed with its children on timeout), and every subprocess call is async so the
Jupyter server's event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from filelock import FileLock, Timeout

from .. import process
from ..errors import notice
from . import cache, policy, verdicts
from .probe import MARK
from .result import Failure, PreflightResult

if TYPE_CHECKING:  # types only: the preflight imports nothing of the stages that hand it these
    from ..host import HostPython
    from ..settings import UvKernelSettings

PROBE = Path(__file__).with_name("probe.py")


class ProbeOutput:
    """What one probe run printed: its reports by kind, the last stage it started, and how it ended."""

    def __init__(self, done: process.Completed) -> None:
        self.done = done
        self.reports: dict[str, Any] = {}
        self.stage = "starting the env's python"
        self.bad_lines: list[str] = []
        for line in done.stdout.splitlines():
            if not line.startswith(MARK + " "):
                continue
            _, kind, payload = (line.split(" ", 2) + [""])[:3]
            try:
                data = json.loads(payload)
            except ValueError:
                self.bad_lines.append(line[:200])
                continue
            if kind == "stage":
                self.stage = str(data)
            else:
                self.reports[kind] = data
                if kind == "cheap":
                    self.stage = "the cheap checks (done)"

    @property
    def finished(self) -> bool:
        return "done" in self.reports

    def how_it_ended(self) -> str:
        code = self.done.returncode
        if code < 0:
            try:
                return f"it was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"it was killed by signal {-code}"
        return f"it exited with status {code}"


def _config(settings: UvKernelSettings, host: HostPython, env_path: Path, cwd: Path, *, deep: bool, init_cuda: bool,
            companions: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    required = list(settings.required_packages)
    needs_torch = (init_cuda or bool(companions)) and "torch" not in required
    return {"env": str(env_path), "host_site_packages": list(host.site_packages), "notebook_dir": str(cwd),
            "packages": required + [n for n in ["ipykernel"] if n not in required],
            "deep": deep, "deep_packages": required + (["torch"] if needs_torch else []),
            "init_cuda": init_cuda, "smoke": True, "companions": list(companions)}


def _request(settings: UvKernelSettings, verdict: policy.Verdict, facts: Mapping[str, Any], ctx: policy.Context,
             env_path: Path) -> dict[str, Any]:
    """What the deep layer is asked to do: part of the cache key.

    With companions in the env, the verdict belongs to their wheels (cache.key keys each on its RECORD's
    hashes): another env with the same wheels on the same host reuses it.  A companion whose RECORD carries no
    hashes cannot be told by its wheel: then the verdict belongs to this env alone (its own files decide it)."""
    request: dict[str, Any] = {"init_cuda": verdict.gpu_expected, "packages": list(settings.required_packages)}
    load = policy.companions_to_load(facts, ctx)
    if load:
        request["companions"] = [c.get("name") for c in load]
        if not all(c.get("wheel_id") for c in load):
            request["companions_env"] = hashlib.sha256(str(env_path).encode()).hexdigest()
    return request


async def _probe(python: Path, config: Mapping[str, Any], env: Mapping[str, str], cwd: Path,
                 timeout: float) -> ProbeOutput:
    args = [str(python), str(PROBE), json.dumps(config)]
    try:
        done = await process.run(args, env=env, cwd=cwd, timeout=max(timeout, 0.5))
    except OSError as exc:
        done = process.Completed(args, 127, "", f"{type(exc).__name__}: {exc}")
    return ProbeOutput(done)


def _problem(out: ProbeOutput, settings: UvKernelSettings, project: str, layer: str) -> Failure | None:
    """A failure for a probe run that did not finish, or None when it did."""
    if out.done.timed_out:
        return Failure("PROBE_TIMEOUT", {"timeout": _seconds(settings.preflight_timeout), "stage": out.stage},
                       [("layer", layer), ("stopped during", out.stage)],
                       detail=out.done.stderr.strip()[-2000:])
    if out.finished and "cheap" in out.reports:
        return None
    stderr = out.done.stderr.strip()
    last = stderr.splitlines()[-1] if stderr else "no error output"
    if "cheap" in out.reports and out.stage.startswith("import "):
        package = out.stage[len("import "):]
        return Failure("TORCH_IMPORT_FAILED", {"package": package, "error": f"the process died ({out.how_it_ended()})",
                                               "project": project},
                       [("stage", out.stage)], detail=stderr[-3000:])
    if "cheap" in out.reports and out.stage.startswith("load companion "):
        name = out.stage[len("load companion "):]
        found = [c for c in out.reports["cheap"].get("companions") or [] if c.get("name") == name]
        deep = {"companions": {name: {"ok": False, "failed_step": out.stage,
                                      "error": f"the process died while loading it ({out.how_it_ended()})"}}}
        verdict = policy.Verdict()
        ctx = policy.Context.from_settings(settings, host_python="", project=project)
        policy.check_companions({**out.reports["cheap"], "companions": found}, deep, ctx, verdict)
        if verdict.failures:
            verdict.failures[0].detail = stderr[-3000:]
            return verdict.failures[0]
    if "cheap" in out.reports and out.stage.startswith(("torch.cuda", "a first operation")):
        return Failure("CUDA_INIT_FAILED", {"error": f"the process died during {out.stage} ({out.how_it_ended()})"},
                       [("stage", out.stage)], detail=stderr[-3000:])
    return Failure("PROBE_FAILED", {"detail_line": f"{out.how_it_ended()} during {out.stage}: {last}",
                                    "project": project},
                   [("command", " ".join(out.done.args[:2]) + " <config>"), ("layer", layer)],
                   detail=stderr[-3000:])


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


async def run(*, python: Path, env: Mapping[str, str], cwd: Path, settings: UvKernelSettings, host: HostPython, env_path: Path,
              project_root: Path | None, cache_root: Path, recheck: bool = False) -> PreflightResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(settings.preflight_timeout)
    project = str(project_root or cwd)
    ctx = policy.Context.from_settings(settings, host_python=host.executable, project=project,
                                       env_python=str(python))
    result = PreflightResult()

    t0 = time.monotonic()
    cheap_config = _config(settings, host, env_path, cwd, deep=False, init_cuda=False)
    reuse = settings.preflight_cache_ttl > 0  # a TTL of 0 turns every preflight cache off
    facts = None
    if reuse and not recheck:
        facts = await asyncio.to_thread(verdicts.lookup, cache_root, env_path, cheap_config, env)
    if facts is not None:
        result.cheap = "reused"
    else:
        out = await _probe(python, cheap_config, env, cwd, deadline - loop.time())
        problem = _problem(out, settings, project, "cheap")
        if problem is not None:
            result.timings["cheap_s"] = round(time.monotonic() - t0, 3)
            result.failures.append(problem)
            result.facts = out.reports.get("cheap") or {}
            return result
        facts = out.reports["cheap"]
    result.timings["cheap_s"] = round(time.monotonic() - t0, 3)
    await _checked(result, facts, ctx, recheck=recheck, python=python, env=env, cwd=cwd, settings=settings,
                   host=host, env_path=env_path, project=project, cache_root=cache_root, deadline=deadline)
    if result.ok and result.cheap == "ran" and reuse:
        try:  # the next start reuses these facts while nothing they were read from changes
            await asyncio.to_thread(verdicts.store, cache_root, env_path, cheap_config, env, result.facts)
        except OSError as exc:
            result.notices.append(notice("PREFLIGHT_CACHE_UNWRITABLE", error=exc))
    return result


async def _checked(result: PreflightResult, facts: dict[str, Any], ctx: policy.Context, *, recheck: bool,
                   python: Path, env: Mapping[str, str], cwd: Path, settings: UvKernelSettings, host: HostPython, env_path: Path,
                   project: str, cache_root: Path, deadline: float) -> PreflightResult:
    """The policy on the cheap facts, then the deep layer (from the cache or a run)."""
    loop = asyncio.get_running_loop()
    verdict = policy.evaluate(facts, None, ctx)
    result.facts = facts
    result.gpu_expected, result.gpu_reason = verdict.gpu_expected, verdict.why
    if verdict.failures:
        result.failures, result.notices = verdict.failures, verdict.notices
        result.deep = "not run: the cheap checks already failed"
        return result

    request = _request(settings, verdict, facts, ctx, env_path)
    if not request["packages"] and not request["init_cuda"] and not request.get("companions"):
        result.notices = verdict.notices
        result.deep = "not run: nothing to import"
        return result
    cache_key = cache.key(facts, request, env_path, project)
    result.cache = {"key": cache_key, "ttl": settings.preflight_cache_ttl, "recheck": recheck}
    caching = settings.preflight_cache_ttl > 0
    entry = None if recheck else cache.lookup(cache_root, env_path, cache_key, settings.preflight_cache_ttl)
    lock = None
    if entry is None and caching:
        # Concurrent starts run the deep layer once: the others wait, then find it in the cache.
        lock = cache.lock_for(cache_root, env_path)
        try:
            await _acquire(lock, max(deadline - loop.time(), 0.1))
        except Timeout:
            result.failures.append(Failure(
                "PROBE_TIMEOUT", {"timeout": _seconds(settings.preflight_timeout),
                                  "stage": "waiting for another start's deep checks of this env"},
                [("lock", lock.lock_file)]))
            return result
        if not recheck:
            entry = cache.lookup(cache_root, env_path, cache_key, settings.preflight_cache_ttl)
    try:
        return await _finish(result, entry, facts, verdict, request, cache_key, ctx, python=python, env=env, cwd=cwd,
                             settings=settings, host=host, env_path=env_path, project=project, cache_root=cache_root,
                             remaining=deadline - loop.time(), caching=caching)
    finally:
        if lock is not None:
            lock.release()


async def _acquire(lock: FileLock, timeout: float) -> None:
    """Wait for the lock in a thread; if this start is cancelled meanwhile, the lock is released once taken."""
    acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire, timeout=timeout))
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        def release(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is None:
                lock.release()

        acquiring.add_done_callback(release)
        raise


async def _finish(result: PreflightResult, entry: dict[str, Any] | None, facts: dict[str, Any],
                  verdict: policy.Verdict, request: dict[str, Any], cache_key: str, ctx: policy.Context, *,
                  python: Path, env: Mapping[str, str], cwd: Path, settings: UvKernelSettings, host: HostPython, env_path: Path,
                  project: str, cache_root: Path, remaining: float, caching: bool) -> PreflightResult:
    """Deep facts from the cache entry or a deep probe run, then the policy on everything, then the store."""
    if entry is not None:
        deep = entry["deep"]
        result.cached = True
        result.deep = "cached"
        result.cache.update(hit=True, age_s=round(entry["age"], 1))
    else:
        t1 = time.monotonic()
        out = await _probe(python, _config(settings, host, env_path, cwd, deep=True, init_cuda=verdict.gpu_expected,
                                           companions=policy.companions_to_load(facts, ctx)), env, cwd, remaining)
        result.timings["deep_s"] = round(time.monotonic() - t1, 3)
        result.facts = out.reports.get("cheap") or facts
        problem = _problem(out, settings, project, "deep")
        if problem is not None:
            result.failures.append(problem)
            result.notices = verdict.notices
            result.deep = "failed"
            result.facts["deep"] = out.reports.get("deep")
            return result
        deep = out.reports.get("deep") or {}
        result.deep = "ran"
        result.cache.update(hit=False)
        facts = result.facts
        request = _request(settings, verdict, facts, ctx, env_path)
        cache_key = cache.key(facts, request, env_path, project)  # the facts this deep run saw
        result.cache["key"] = cache_key
    verdict = policy.evaluate(facts, deep, ctx)
    result.facts = {**facts, "deep": deep}
    result.failures, result.notices = verdict.failures, verdict.notices
    result.gpu_expected, result.gpu_reason = verdict.gpu_expected, verdict.why
    if result.ok and not result.cached and caching:
        try:
            cache.store(cache_root, env_path, cache_key, deep)
            result.cache["stored"] = True
        except OSError as exc:  # an unwritable cache costs time, never the start
            result.notices.append(notice("PREFLIGHT_CACHE_UNWRITABLE", error=exc))
    return result
