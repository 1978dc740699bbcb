"""`uvkernel run -- torchrun …` and `!torchrun …` in a kernel's cell, on both real hosts: the host's console
script, whose shebang runs the host's python, runs under the env's python, so the training script and every
worker torchrun starts see the project's dependencies (before: ModuleNotFoundError for them in each worker)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from corpus.test_add_records import _host
from helpers import Kernel, make_project, run_async

pytestmark = pytest.mark.corpus


@pytest.mark.parametrize("host_name", ["debian", "pypi-cuda"])
def test_torchrun_from_the_host_runs_its_workers_with_the_projects_dependencies(tmp_path, host_name):
    host = _host(host_name)
    project = make_project(tmp_path / "proj", ["tomli-w"])
    (project / "train.py").write_text(TRAIN)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "UV_PYTHON_DOWNLOADS": "never"}
    for var in ("UVKERNEL_SETTINGS", "UVKERNEL_KERNEL", "VIRTUAL_ENV"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-m", "uvkernel", "run", "--project", str(project), "--host-python", host,
                           "--", "torchrun", "--standalone", "--nproc-per-node", "2", "train.py"],
                          cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_workers(done.stdout, project)


# each worker's line in one write(2): with PYTHONUNBUFFERED, print() writes word by word, and two workers on the
# cell's terminal interleaved ("workerworker 1 …")
TRAIN = ("import os, sys, tomli_w, torch\n"
         "line = ' '.join(['worker', os.environ['LOCAL_RANK'], sys.prefix, tomli_w.__file__, torch.__file__])\n"
         "os.write(1, (line + '\\n').encode())\n")


def _assert_workers(stdout: str, project) -> None:
    workers = sorted(line.split() for line in stdout.splitlines() if line.startswith("worker "))
    venv = str(project / ".venv")
    assert [w[1] for w in workers] == ["0", "1"], stdout
    for _word, _rank, prefix, dep, torch_file in workers:
        assert prefix == venv and dep.startswith(venv + "/"), workers
        assert not torch_file.startswith(venv + "/"), f"torch must stay the host's: {torch_file}"


@pytest.mark.parametrize("host_name", ["debian", "pypi-cuda"])
def test_torchrun_in_a_cell_runs_its_workers_with_the_projects_dependencies(tmp_path, host_name, install_spec):
    """`!torchrun` in a notebook finds a stand-in that runs the host's torchrun under the kernel's python; the
    host's torchrun stays where it was, with its own shebang (the host is never changed)."""
    host = _host(host_name)
    project = make_project(tmp_path / "proj", ["tomli-w"])
    (project / "train.py").write_text(TRAIN)
    name = install_spec(host=host)
    env = {k: v for k, v in os.environ.items() if k not in ("UVKERNEL_SETTINGS", "UVKERNEL_KERNEL", "VIRTUAL_ENV")}
    # the host's scripts folder on the server's PATH, as on a machine whose jupyter runs from the host
    host_bin = subprocess.run([host, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['scripts'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    env["PATH"] = host_bin + os.pathsep + env.get("PATH", os.defpath)

    async def go():
        async with Kernel(name, cwd=project, env=env) as k:
            found = await k.run("!command -v torchrun")
            cell = await k.run("!torchrun --standalone --nproc-per-node 2 train.py", timeout=300)
            return found.stdout.strip(), cell

    found, cell = run_async(go())
    assert found != os.path.join(host_bin, "torchrun"), "the host's own torchrun came first on the kernel's PATH"
    with open(found) as fh:
        assert os.path.join(host_bin, "torchrun") in fh.read(), found
    _assert_workers(cell.stdout, project)
