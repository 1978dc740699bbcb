"""`uvkernel add` records what `uv add` would record, bounded only where the host must stay admissible.

On the real hosts of the corpus tier: a plain package is left to uv (its universal lock holds a version for every
Python requires-python admits); a companion of the host's torch is bounded by what the host's torch accepts; a
companion that cannot work on the host's build is refused and both project files come back byte for byte.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from corpus.support import SETUP, host_python
from helpers import make_project

pytestmark = pytest.mark.corpus


def _add(project: Path, host: str, *packages: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("UVKERNEL_SETTINGS", None)
    env.pop("UVKERNEL_KERNEL", None)
    return subprocess.run([sys.executable, "-m", "uvkernel", "add", *packages, "--project", str(project),
                           "--host-python", host], capture_output=True, text=True, env=env, timeout=900)


def _host(name: str) -> str:
    python = host_python(name)
    if not os.path.exists(python) or subprocess.run([python, "-I", "-c", "import torch"],
                                                    capture_output=True).returncode != 0:
        pytest.fail(f"the {name} host {python} is missing: run `{SETUP}`", pytrace=False)
    return python


def _dependencies(project: Path) -> list[str]:
    return tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]


def _locked(project: Path, name: str) -> list[str]:
    text = (project / "uv.lock").read_text()
    return re.findall(r'\[\[package\]\]\nname = "' + re.escape(name) + r'"\nversion = "([^"]+)"', text)


def test_a_plain_package_is_recorded_as_uv_records_it_for_every_python(tmp_path):
    host = _host("debian")  # Python 3.11
    project = make_project(tmp_path / "proj", [], requires_python=">=3.10")
    done = _add(project, host, "pandas", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    recorded = [d for d in _dependencies(project) if d.startswith("pandas")]
    assert recorded and recorded[0].startswith("pandas>="), recorded
    # pandas' newest release needs Python 3.11: the lock holds an older one for 3.10 beside it, as `uv add` makes it
    assert len(_locked(project, "pandas")) >= 2, _locked(project, "pandas")
    assert f"recorded {recorded[0]}" in done.stdout


def test_a_companion_is_bounded_by_the_hosts_torch_on_the_cuda_host(tmp_path):
    host = _host("pypi-cuda")  # torch 2.14.1 with torchvision 0.29.1 beside it
    project = make_project(tmp_path / "proj", [], requires_python=">=3.10")
    done = _add(project, host, "torchvision", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "torchvision>=0.29.1" in _dependencies(project)
    assert _locked(project, "torchvision") == ["0.29.1"]


def test_a_companion_the_cpu_host_cannot_use_is_refused_and_nothing_is_lost(tmp_path):
    host = _host("debian")  # torch 2.13.0+cpu: PyPI's torchvision is built for PyPI's torch
    project = make_project(tmp_path / "proj", ["tomli-w"], requires_python=">=3.10")
    subprocess.run([sys.executable, "-m", "uv", "lock", "-q", "--python", host], cwd=project, check=False,
                   capture_output=True)
    before = {name: (project / name).read_bytes() for name in ("pyproject.toml", "uv.lock")
              if (project / name).exists()}
    done = _add(project, host, "torchvision", cache=tmp_path / "cache")
    assert done.returncode != 0
    assert "COMPANION_BUILD_UNAVAILABLE" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    assert "torchvision" in done.stdout + done.stderr
    after = {name: (project / name).read_bytes() for name in before}
    assert after == before
