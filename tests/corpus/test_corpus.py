"""The real-project corpus tier: published uv projects started on two real hosts, as corpus.json expects.

Each case copies one project into its own folder, makes its package buildable (stubs, a tagged git repository),
runs `uvkernel check --json` on its notebook folder with a host and a private uvkernel cache (uv's own cache is
shared, so downloads are reused), and holds the report to corpus.json: a start with the host's torch, no GPU stack
in the env and every listed module importable in the env; or a refusal with the listed code and names.

The tier never skips: a missing corpus or host fails with the set-up command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from corpus.support import (SETUP, Case, corpus_dir, git_tag, gpu_stack_in, host_python,
                            load_cases, no_default_groups, tail, the_projects_own, write_readmes, write_stubs)
from helpers import REPO

pytestmark = pytest.mark.corpus

CASE_TIMEOUT = 900
SPEC = "uvkernel-corpus"


def _cases() -> list:
    try:
        cases = load_cases()
    except (OSError, ValueError, KeyError) as exc:
        # one case that fails, rather than none (which would pass unnoticed)
        return [pytest.param(repr(exc), id="corpus-missing")]
    return [pytest.param(case, id=case.id) for case in cases]


@pytest.fixture(scope="session")
def host_torch():
    """Per host: (interpreter, torch's folder, torch.__version__), asked of the host itself."""
    seen: dict[str, tuple[str, str, str]] = {}

    def get(host: str) -> tuple[str, str, str]:
        if host not in seen:
            python = host_python(host)
            done = subprocess.run([python, "-I", "-c", "import os, torch; print(os.path.dirname(torch.__file__));"
                                   " print(torch.__version__)"], capture_output=True, text=True) \
                if os.path.exists(python) else None
            if done is None or done.returncode != 0:
                pytest.fail(f"the {host} host {python} cannot import torch: run `{SETUP}`\n"
                            f"{tail(done.stderr) if done else 'no such interpreter'}", pytrace=False)
            folder, version = done.stdout.split()[-2:]
            seen[host] = (python, os.path.realpath(folder), version)
        return seen[host]

    return get


def _environ(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UVKERNEL_SETTINGS", "JUPYTER_PATH", "CONDA_PREFIX")}
    env.update(JUPYTER_DATA_DIR=str(tmp / "jupyter-data"), JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
               UV_PYTHON_DOWNLOADS="never", NO_COLOR="1")
    return env


def _prepare(case: Case, tmp: Path) -> Path:
    """The case's own copy of the project, made buildable; returns the notebook folder."""
    source = corpus_dir() / case.project
    root = tmp / case.project
    shutil.copytree(source, root, symlinks=True)
    for path in [root, *root.rglob("*")]:  # the corpus is read-only; the copy must not be
        path.chmod(path.stat().st_mode | 0o200)
    write_stubs(root, case.entry.get("stubs", []))
    write_readmes(root)
    if case.without_default_groups:
        no_default_groups(root / "pyproject.toml")
    if case.entry.get("git"):
        git_tag(root, case.entry["git"])
    notebooks = root / case.entry["notebooks"]
    notebooks.mkdir(parents=True, exist_ok=True)
    return notebooks


def _why(report: dict | None, done: subprocess.CompletedProcess | None) -> str:
    parts = []
    if report is not None:
        error = report.get("error") or {}
        parts.append(f"code: {error.get('code')}\nmessage: {(report.get('message') or '')[:2000]}")
        failures = (report.get("preflight") or {}).get("failures") or []
        for failure in failures:
            parts.append(f"preflight failure {failure.get('code')}: {(failure.get('message') or '')[:1000]}")
    if done is not None:
        parts.append(f"exit {done.returncode}; stderr tail:\n{tail(done.stderr)}")
        if report is None:
            parts.append(f"stdout tail:\n{tail(done.stdout)}")
    return "\n".join(parts)


def _check_started(case: Case, report: dict, notebooks: Path, host: tuple[str, str, str], environ: dict,
                   deadline: float, why: str) -> None:
    _, torch_dir, torch_version = host
    facts = (report.get("preflight") or {}).get("facts") or {}
    torch = (facts.get("packages") or {}).get("torch") or {}
    where = os.path.realpath(torch.get("location") or "")
    assert where == torch_dir, f"the kernel's torch is {where or 'missing'}, not the host's {torch_dir}\n{why}"
    version = (facts.get("torch") or {}).get("version") or torch.get("version")
    assert version == torch_version, f"the kernel's torch is {version}, the host's {torch_version}\n{why}"

    env = Path(report["env"]["path"])
    assert not gpu_stack_in(env), f"the env {env} holds its own GPU stack: {gpu_stack_in(env)}\n{why}"

    # as the kernel runs: the env's python, from the notebook folder, with the env's scripts first on PATH
    run_env = {**environ, "PATH": f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}", "PYTHONNOUSERSITE": "1"}
    broken = []
    for module in case.expect.get("imports", []):
        try:
            done = subprocess.run([str(env / "bin" / "python"), "-c", f"import {module}"], cwd=notebooks,
                                  env=run_env, capture_output=True, text=True,
                                  timeout=max(30.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            broken.append(f"{module}: import timed out")
            continue
        if done.returncode != 0:
            if allowed_mismatch(case, done.stderr, env):
                continue  # it needs a companion the case allows not to load on this torch build
            if the_projects_own(report, done.stderr, host_folders(host[0])):
                # the env holds exactly the lock's versions and the failure never touches the host: uv's own
                # env of that lock fails the same way; reported, not counted against uvkernel
                print(f"{case.id}: import {module} fails with the lock's own versions: "
                      f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            broken.append(f"{module}:\n{tail(done.stderr, 8)}")
    assert not broken, f"{len(broken)} module(s) do not import in {env}:\n" + "\n".join(broken)


def host_folders(python: str) -> list[str]:
    """The host interpreter's site-packages folders."""
    out = subprocess.run([python, "-I", "-c", "import site, json; print(json.dumps(site.getsitepackages()))"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def allowed_mismatch(case: Case, stderr: str, env: Path) -> bool:
    """Does an import fail because of a companion the case allows to mismatch (its traceback passes through it,
    or names one of its operators)?  Only in the cases that set allow_companion_mismatch."""
    import fnmatch

    patterns = case.settings.get("allow_companion_mismatch") or []
    if not patterns:
        return False
    site = next(iter(env.glob("lib/python3*/site-packages")), env)
    names = {p.name for p in site.iterdir() if p.is_dir() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)}
    return any(f"/{name}/" in stderr or f"{name}::" in stderr for name in names)


def _refused(report: dict | None, done: subprocess.CompletedProcess, code: str, names: list[str]) -> str:
    """Why this is not the expected refusal ('' when it is)."""
    if done.returncode == 0:
        return f"it started; expected a refusal {code}"
    got = ((report or {}).get("error") or {}).get("code")
    if got != code:
        return f"refused with {got}, expected {code}"
    message = (report or {}).get("message") or ""
    missing = [name for name in names if name not in message]
    return f"the {code} message does not name {missing}" if missing else ""


@pytest.mark.timeout(CASE_TIMEOUT)
@pytest.mark.parametrize("case", _cases())
def test_corpus(case: Case | str, tmp_path: Path, host_torch) -> None:
    if isinstance(case, str):
        pytest.fail(f"the corpus is missing at {corpus_dir()} ({case}): it lies beside "
                    f"the repository as shared/realworld, or set UVKERNEL_CORPUS", pytrace=False)
    deadline = time.monotonic() + CASE_TIMEOUT - 30
    host = host_torch(case.host)
    uvkernel = REPO / ".venv" / "bin" / "uvkernel"
    if not uvkernel.exists():
        pytest.fail(f"no {uvkernel}: run `bash scripts/setup.sh`", pytrace=False)
    environ = _environ(tmp_path)
    notebooks = _prepare(case, tmp_path)

    # a kernel spec carries what a user would set: the host, a private uvkernel cache, any allowed companions
    settings = {"cache_dir": str(tmp_path / "uvkernel-cache"), **case.settings}
    install = [str(uvkernel), "install", "--user", "--name", SPEC, "--host-python", host[0]]
    for key, value in settings.items():
        install += ["--set", f"{key}={json.dumps(value)}"]
    subprocess.run(install, env=environ, check=True, capture_output=True, text=True)

    try:
        done = subprocess.run([str(uvkernel), "check", str(notebooks), "--kernel", SPEC, "--host-python", host[0],
                               "--json"], cwd=notebooks, env=environ, capture_output=True, text=True,
                              timeout=max(30.0, deadline - time.monotonic() - 60))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"uvkernel check timed out; stderr tail:\n{tail(str(exc.stderr or ''))}", pytrace=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = None
    why = _why(report, done)
    if report is None:
        pytest.fail(f"uvkernel check printed no JSON report\n{why}", pytrace=False)

    expect = case.expect
    if "refuse" in expect:
        problem = _refused(report, done, expect["refuse"], expect["names"])
        assert not problem, f"{problem}\n{why}"
        return
    if done.returncode != 0 and expect.get("or_refuse"):
        problem = _refused(report, done, expect["or_refuse"], expect["or_names"])
        assert not problem, f"neither started nor the allowed refusal: {problem}\n{why}"
        return
    assert done.returncode == 0 and report.get("ok"), f"expected a start, got exit {done.returncode}\n{why}"
    _check_started(case, report, notebooks, host, environ, deadline, why)
