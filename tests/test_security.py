"""Security: no shell ever sees a notebook path or a kernel.json value; folders uvkernel creates are private; no
secret ends up in kernel.json (jupyter_server serves it to browsers)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hardening_support import check
from helpers import REPO, make_project
from servers import JupyterServer

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox"}
HOSTILE = "x'; touch PWNED; echo \"$(touch PWNED2)\" `touch PWNED3` | cat > PWNED4 && $HOME\nnl é"


def test_the_source_never_asks_for_a_shell():
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|create_subprocess_shell|getoutput\(|"
                         r"getstatusoutput\(|pty\.spawn\(")
    hits = []
    for path in sorted((REPO / "src" / "uvkernel").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


_EVENTS: list[tuple[str, tuple]] = []
_RECORDING = False


def _audit(event: str, args: tuple) -> None:
    if _RECORDING and event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                                "os.startfile"):
        _EVENTS.append((event, args))


sys.addaudithook(_audit)  # cannot be removed: records only while _RECORDING is set


def test_no_process_uvkernel_starts_is_a_shell_even_with_hostile_paths_and_settings(tmp_path, host_python):
    """Every process the pipeline starts (audit events), with a hostile notebook folder and kernel.json values."""
    global _RECORDING
    from uvkernel import pipeline
    from uvkernel.settings import from_config

    project = make_project(tmp_path / HOSTILE, ["tomli-w"], name="hostile")
    cache = tmp_path / ("cache " + HOSTILE)
    hostile_extras = from_config({"host_python": host_python, "cache_dir": str(cache), "extras": ["a;b", "$(id)"]})
    settings = from_config({"host_python": host_python, "cache_dir": str(cache),
                            "required_packages": ["torch", "x$(touch PWNED5)"]})
    _EVENTS.clear()
    _RECORDING = True
    try:
        with pytest.raises(Exception) as refused:  # extras the project does not have: refused by name
            asyncio.run(pipeline.prepare(hostile_extras, cwd=str(project), environ=dict(os.environ)))
        with pytest.raises(Exception) as info:  # the made-up required package is reported missing, after all stages
            asyncio.run(pipeline.prepare(settings, cwd=str(project), environ=dict(os.environ)))
    finally:
        _RECORDING = False
    assert "DEPENDENCY_SELECTION_MISSING" in str(refused.value) and "a;b" in str(refused.value), str(refused.value)
    assert "TORCH_NOT_FOUND" in str(info.value) or "not importable" in str(info.value), str(info.value)
    assert _EVENTS, "no process was recorded: the audit hook saw nothing"
    programs = []
    for event, args in _EVENTS:
        assert event == "subprocess.Popen", (event, args)
        executable, argv = args[0], list(args[1])
        programs.append(os.path.basename(os.fsdecode(executable or argv[0])))
        assert os.path.basename(os.fsdecode(argv[0])) not in SHELLS, argv
        assert "-c" not in argv[:2] or os.path.basename(os.fsdecode(argv[0])).startswith("python"), argv
    assert "uv" in programs and any(p.startswith("python") for p in programs), programs
    assert (project / ".venv" / "pyvenv.cfg").exists(), "the env was not built in the hostile folder"
    assert cache.is_dir()
    leaked = [p for p in tmp_path.rglob("PWNED*")] + [p for p in Path.cwd().glob("PWNED*")]
    assert not leaked, leaked


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_env_and_cache_folders_uvkernel_creates_are_private(tmp_path, host_python):
    old_umask = os.umask(0o022)  # the usual umask would make them world-readable if uvkernel did nothing
    try:
        project = make_project(tmp_path / "proj", ["tomli-w"])
        loose = tmp_path / "notebooks"
        loose.mkdir()
        for folder in (project, loose):
            status, report, _ = check(folder, "--host-python", host_python)
            assert status == 0, report["message"]
    finally:
        os.umask(old_umask)
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
    cache_env = Path(report["project"]["env"])
    checked = [cache, cache / "locks", cache / "hosts", cache_env.parent, cache_env, project / ".venv"]
    loose_ones = [str(p) for p in checked if not _private(p)]
    assert not loose_ones, "readable by others: " + ", ".join(f"{p} ({oct(Path(p).stat().st_mode)})"
                                                             for p in loose_ones)
    assert cache in cache_env.parents


SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789", "HF_TOKEN": "hf_secret_tokenvalue",
           "GITHUB_TOKEN": "ghp_secretvalue0123", "OPENAI_API_KEY": "sk-secret-value-42",
           "MY_DB_PASSWORD": "hunter2-secret"}


@pytest.mark.e2e
def test_no_secret_reaches_kernel_json_or_the_browser(tmp_path, host_python, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    done = subprocess.run([sys.executable, "-m", "uvkernel", "install", "--user", "--name", "uvk-secret",
                           "--host-python", host_python], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spec_file = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / "uvk-secret" / "kernel.json"
    text = spec_file.read_text()
    spec = json.loads(text)
    assert spec["env"] == {}
    assert not [v for v in SECRETS.values() if v in text]

    project = make_project(tmp_path / "work" / "proj")
    status, report, _ = check(project, "--host-python", host_python)
    assert status == 0, report["message"]
    report_text = (project / ".venv" / ".uvkernel-report.json").read_text()  # shown by %uvkernel in notebooks
    assert not [v for v in SECRETS.values() if v in report_text]

    with JupyterServer(tmp_path / "work", extra_args=["--allow-root"]) as server:
        served = server.get("/api/kernelspecs").text
    assert "uvk-secret" in served
    assert not [v for v in SECRETS.values() if v in served], "a secret is served to browsers"
