"""The preflight and the two tiers against a real CUDA build of torch: PyPI's torch 2.14.1 (CUDA 13.0, with its
nvidia-*, cuda-* and triton wheels) and torchvision 0.29.1 in a venv, on a machine without a driver or a GPU.

What a GPU workstation's `pip install torch torchvision` gives: the stack is protected (torch, its CUDA closure,
the host's torchvision), everything else of the host (numpy, pillow, torch's pure-Python dependencies) is a
preference; PyPI's companions are made for this torch, so no other index is named for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpus.support import SETUP, gpu_stack_in, host_python
from helpers import make_project

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def cuda_host() -> str:
    python = host_python("pypi-cuda")
    done = subprocess.run([python, "-I", "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                          capture_output=True, text=True) if os.path.exists(python) else None
    if done is None or done.returncode != 0 or "+cu" not in done.stdout:
        pytest.fail(f"the PyPI CUDA host {python} is missing: run `{SETUP}`", pytrace=False)
    return python


def _check(folder: Path, host: str, *args: str, cache: Path) -> tuple[int, dict]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "UV_PYTHON_DOWNLOADS": "never"}
    done = subprocess.run([sys.executable, "-m", "uvkernel", "check", str(folder), "--host-python", host, "--json",
                           *args], capture_output=True, text=True, env=env, timeout=900)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"uvkernel check printed no report:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def test_require_cuda_without_a_driver_is_the_coded_driver_error(tmp_path, cuda_host):
    project = make_project(tmp_path / "proj", [])
    code, report = _check(project, cuda_host, "--require-cuda", cache=tmp_path / "cache")
    assert code != 0 and report["error"]["code"] == "NO_DRIVER", report["message"]
    facts = report["preflight"]["facts"]
    assert facts["torch"]["cuda"] == "13.0" and facts["packages"]["torch"]["origin"] == "host"
    # without require_cuda the CUDA build starts, saying why no GPU is expected
    code, report = _check(project, cuda_host, cache=tmp_path / "cache")
    assert code == 0, report["message"]
    assert report["preflight"]["gpu_expected"] is False


def test_the_hosts_stack_is_protected_and_pypi_companions_need_no_other_index(tmp_path, cuda_host):
    # a host torchvision is the host's; numpy (a preference) at another version is the env's own copy
    project = make_project(tmp_path / "proj", ["torchvision", "numpy<2"], requires_python=">=3.10")
    code, report = _check(project, cuda_host, cache=tmp_path / "cache")
    assert code == 0, report["message"]
    plan = report["env"]["dependencies"]
    assert {"torch", "torchvision"} <= set(plan["from_host"])
    assert plan["host_replaced"]["numpy"]["env"].startswith("1.")
    assert gpu_stack_in(project / ".venv") == []
    text = json.dumps(report)
    assert "download.pytorch.org" not in text  # no variant in the dist-info: PyPI's companions are made for it


def test_one_refusal_names_torch_and_torchvision_at_once(tmp_path, cuda_host):
    project = make_project(tmp_path / "proj", ["torch==2.7.1", "torchvision==0.22.1"], requires_python=">=3.10")
    code, report = _check(project, cuda_host, cache=tmp_path / "cache")
    assert code != 0 and report["error"]["code"] == "DEPENDENCY_CONFLICT", report["message"]
    for word in ("torch==2.7.1", "2.14.1", "torchvision==0.22.1", "0.29.1"):
        assert word in report["message"], word
    assert not (project / ".venv" / "lib").exists() or gpu_stack_in(project / ".venv") == []
