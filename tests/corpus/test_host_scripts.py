"""`uvkernel run -- torchrun …` on both real hosts: the host's console script, whose shebang runs the host's
python, runs under the env's python, so the training script and every worker torchrun starts see the project's
dependencies (before: ModuleNotFoundError for them in each worker)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from corpus.test_add_records import _host
from helpers import make_project

pytestmark = pytest.mark.corpus


@pytest.mark.parametrize("host_name", ["debian", "pypi-cuda"])
def test_torchrun_from_the_host_runs_its_workers_with_the_projects_dependencies(tmp_path, host_name):
    host = _host(host_name)
    project = make_project(tmp_path / "proj", ["tomli-w"])
    (project / "train.py").write_text(
        "import os, sys, tomli_w, torch\n"
        "print('worker', os.environ['LOCAL_RANK'], sys.prefix, tomli_w.__file__, torch.__file__)\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "UV_PYTHON_DOWNLOADS": "never"}
    for var in ("UVKERNEL_SETTINGS", "UVKERNEL_KERNEL", "VIRTUAL_ENV"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-m", "uvkernel", "run", "--project", str(project), "--host-python", host,
                           "--", "torchrun", "--standalone", "--nproc-per-node", "2", "train.py"],
                          cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    workers = sorted(line.split() for line in done.stdout.splitlines() if line.startswith("worker "))
    venv = str(project / ".venv")
    assert [w[1] for w in workers] == ["0", "1"], done.stdout
    for _word, _rank, prefix, dep, torch_file in workers:
        assert prefix == venv and dep.startswith(venv + "/"), workers
        assert not torch_file.startswith(venv + "/"), f"torch must stay the host's: {torch_file}"
