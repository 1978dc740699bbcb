"""The real-project corpus: where it is, its cases, the two hosts, and how one case's project is laid out.

The corpus is a folder of published uv projects beside the repository (shared/realworld), with corpus.json saying
what a kernel start in each project's notebook folder must do on each host. Nothing here decides an outcome: the
expectations are read from corpus.json and the outcomes come from the real CLI, real uv and real hosts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import REPO

SETUP = "bash scripts/setup.sh --corpus"
HOSTS = ("debian", "pypi-cuda")
# Distributions of the host's GPU stack: the env must take them from the host, never hold its own copy.
GPU_STACK = re.compile(r"^(torch|triton|nvidia[-_].*|cuda[-_].*)$")


def corpus_dir() -> Path:
    """Beside the repository in CI (shared/realworld), or wherever UVKERNEL_CORPUS points."""
    beside = REPO.parent / "shared" / "realworld"
    if (beside / "corpus.json").is_file():
        return beside
    return Path(os.environ.get("UVKERNEL_CORPUS") or beside)


def host_python(name: str) -> str:
    if name == "debian":
        return "/usr/bin/python3.11"
    return os.path.join(os.environ.get("UVKERNEL_CUDA_HOST") or "/opt/uvkernel-hosts/pypi-cuda", "bin", "python")


@dataclass
class Case:
    id: str
    project: str
    host: str
    entry: dict[str, Any]  # the project's corpus.json entry (notebooks, stubs, git)
    expect: dict[str, Any]  # start/imports, refuse/names, or_refuse/or_names
    without_default_groups: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # extra kernel-spec settings


def load_cases() -> list[Case]:
    """Every project x host; the without_default_groups variants; and, where the Debian host may refuse for want
    of a companion build from the (unreachable) PyTorch index, the same start with that companion allowed, so the
    rest of the project's start is still exercised on that host."""
    data = json.loads((corpus_dir() / "corpus.json").read_text())
    cases = []
    for project, entry in data["projects"].items():
        for host in HOSTS:
            cases.append(Case(f"{project}-{host}", project, host, entry, entry[host]))
        if "without_default_groups" in entry:
            for host in HOSTS:
                cases.append(Case(f"{project}-nodefaultgroups-{host}", project, host, entry,
                                  entry["without_default_groups"], without_default_groups=True))
        debian = entry["debian"]
        if debian.get("or_refuse"):
            # the PyTorch index is unreachable here, so every companion built for PyPI's CUDA torch (the ones
            # or_names stands for: torchaudio, and torchcodec beside it) is allowed to mismatch: the start is
            # what this case exercises on the Debian host
            companions = ["torch*"]
            expect = {"start": True, "imports": debian["imports"]}
            cases.append(Case(f"{project}-debian-allowcompanion", project, "debian", entry, expect,
                              settings={"allow_companion_mismatch": companions}))
    return cases


def write_stubs(root: Path, stubs: list[str]) -> None:
    """The published repositories' package sources are not part of the corpus: one line is enough for a build.
    A version in each Python stub serves builds that read it as an attribute."""
    for rel in stubs:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('__version__ = "0.0.0"\n' if path.suffix == ".py" else "")


def write_readmes(root: Path) -> None:
    """The corpus keeps each project's build files, not its README; a checkout has one, and hatchling refuses to
    build without the readme its metadata names (setuptools does not mind). An empty one stands in for it, for
    the root project and every workspace member."""
    for pyproject in root.rglob("pyproject.toml"):
        readme = tomllib.loads(pyproject.read_text()).get("project", {}).get("readme")
        name = readme.get("file") if isinstance(readme, dict) else readme
        if isinstance(name, str) and not (pyproject.parent / name).exists():
            (pyproject.parent / name).parent.mkdir(parents=True, exist_ok=True)
            (pyproject.parent / name).write_text("")


def git_tag(root: Path, tag: str) -> None:
    """hatch-vcs reads the version from the latest tag: a repository with one commit, tagged."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "corpus", "GIT_AUTHOR_EMAIL": "corpus@example.invalid",
           "GIT_COMMITTER_NAME": "corpus", "GIT_COMMITTER_EMAIL": "corpus@example.invalid"}
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "--no-gpg-sign", "-m", "corpus"],
                 ["git", "tag", tag]):
        subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True, text=True)


def no_default_groups(pyproject: Path) -> None:
    """Set [tool.uv] default-groups = []: appended as a new table, or put into the [tool.uv] table the file has
    (a second [tool.uv] header would be invalid TOML), replacing a default-groups it already sets."""
    lines = pyproject.read_text().splitlines(keepends=True)
    header = next((i for i, line in enumerate(lines) if re.match(r"^\s*\[tool\.uv\]\s*(#.*)?$", line)), None)
    if header is None:
        text = "".join(lines)
        if text and not text.endswith("\n"):
            text += "\n"
        pyproject.write_text(text + "\n[tool.uv]\ndefault-groups = []\n")
    else:
        end = next((i for i in range(header + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
        out = lines[:header + 1] + ["default-groups = []\n"]
        i = header + 1
        while i < end:
            if re.match(r"^\s*default-groups\s*=", lines[i]):
                # skip the old value, which may span lines until its brackets close
                depth = lines[i].count("[") - lines[i].count("]")
                i += 1
                while depth > 0 and i < end:
                    depth += lines[i].count("[") - lines[i].count("]")
                    i += 1
                continue
            out.append(lines[i])
            i += 1
        pyproject.write_text("".join(out + lines[end:]))
    data = tomllib.loads(pyproject.read_text())
    assert data["tool"]["uv"]["default-groups"] == [], f"could not set default-groups in {pyproject}"


def gpu_stack_in(env: Path) -> list[str]:
    """Names of GPU-stack distributions installed in the env itself (not the host's, which it inherits)."""
    found = []
    for info in env.glob("lib/python3*/site-packages/*.dist-info"):
        name = info.name[: -len(".dist-info")].split("-")[0]
        if GPU_STACK.match(name.lower()):
            found.append(info.name)
    return sorted(found)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])



def the_projects_own(report: dict, stderr: str, host_dirs: list[str]) -> bool:
    """Is a failed import the project's own breakage, the same under a plain ``uv sync``?  It is when the env
    holds exactly the lock's versions (no deviation for the host) and the traceback passes through none of the
    host's folders: then uv's own env of that lock fails the same way (a lock whose transformers no longer has
    what another locked package imports)."""
    plan = (report.get("env") or {}).get("dependencies") or {}
    if "uv sync" not in str(plan.get("how", "")) or plan.get("lock_deviations"):
        return False
    return not any(folder and folder in stderr for folder in host_dirs)
