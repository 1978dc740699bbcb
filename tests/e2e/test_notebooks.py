"""The notebooks shipped in notebooks/, run through a uvkernel kernel with their outputs checked.

They run from a copy inside a fresh project: the repository itself is a project whose .venv is the
development env, which a kernel start there would repair (turn system site-packages on).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from helpers import REPO, make_project

# one worker runs the whole module (pytest -n with --dist loadgroup): its server is started once
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-notebooks")]

NOTEBOOKS = REPO / "notebooks"


def execute(name: str, kernel: str, project: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    copy = project / name
    shutil.copy(NOTEBOOKS / name, copy)
    nb = nbformat.read(str(copy), as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(project)}}).execute()
    return nb


_RUNS: dict[str, tuple[nbformat.NotebookNode, Path]] = {}


def executed(name: str, install_spec, tmp_path: Path) -> tuple[nbformat.NotebookNode, Path]:
    """Each notebook runs once per module; the tests that check it share that run."""
    if name not in _RUNS:
        project = make_project(tmp_path / "proj")
        _RUNS[name] = (execute(name, install_spec(), project), project)
    return _RUNS[name]


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def errors_in(nb) -> list:
    return [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_without_errors(name, install_spec, tmp_path):
    nb, _ = executed(name, install_spec, tmp_path)
    assert not errors_in(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)  # every code cell ran


def test_gpu_check_on_cpu_host(install_spec, tmp_path, host_torch_file, host_python):
    nb, project = executed("gpu_check.ipynb", install_spec, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    report, device, compute, advice = code
    html = [o["data"]["text/html"] for o in report.outputs if "data" in o and "text/html" in o["data"]]
    assert html and "uvkernel" in html[0] and host_torch_file.rsplit("/", 1)[0] in html[0]
    assert str(project / ".venv") in text_of(report)
    lines = text_of(device).splitlines()
    assert lines[0].endswith(f"from {host_torch_file}")
    assert "CUDA build: none (CPU-only build)" in lines
    assert "device: cpu" in lines
    assert "matmul 512x512 on cpu: max abs error" in text_of(compute)
    tip = text_of(advice)
    assert "is a CPU-only build" in tip
    assert f"{host_python} -m pip install torch --index-url https://download.pytorch.org/whl/cu" in tip


@pytest.mark.gpu
def test_gpu_check_on_gpu_host(install_spec, tmp_path):
    """On a machine with an NVIDIA GPU and a CUDA build of torch on the host: the tensor runs on CUDA."""
    nb = execute("gpu_check.ipynb", install_spec(), make_project(tmp_path / "proj"))
    assert not errors_in(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "device: cuda" in text_of(code[1]).splitlines()
    assert "matmul 512x512 on cuda" in text_of(code[2])
    assert "CUDA works: nothing to do." in text_of(code[3])
