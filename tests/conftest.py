"""Fixtures: a real host interpreter with CPU torch, isolated Jupyter folders, uvkernel specs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import REPO  # noqa: E402

os.environ["UV_PYTHON_DOWNLOADS"] = "never"
# As in an activated dev env: `jupyter X` dispatches to jupyter-X found on PATH, which must be the dev env's.
_BIN = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", help="run the tests that need a real NVIDIA GPU")


def pytest_collection_modifyitems(config, items):
    # GPU tests are deselected (not skipped) without --gpu: CI has no GPU; a lent GPU machine runs them.
    if config.getoption("--gpu"):
        return
    keep = [item for item in items if "gpu" not in item.keywords]
    dropped = [item for item in items if "gpu" in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _host_python() -> str:
    path = os.environ.get("UVKERNEL_TEST_HOST")
    marker = REPO / ".venv" / "uvkernel-test-host"
    if not path and marker.exists():
        path = marker.read_text().strip()
    if not path:
        pytest.fail("no host interpreter: run scripts/setup.sh (or set UVKERNEL_TEST_HOST)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def host_python() -> str:
    """The host interpreter: CPU torch and ipykernel in its own site-packages (scripts/setup.sh)."""
    path = _host_python()
    done = subprocess.run([path, "-I", "-c", "import torch, ipykernel, sys; print(torch.__file__); print(sys.prefix)"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"host {path} lacks torch/ipykernel: run scripts/setup.sh\n{done.stderr}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def host_torch_file(host_python) -> str:
    return subprocess.run([host_python, "-I", "-c", "import torch; print(torch.__file__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def uv_bin() -> str:
    import uv

    return uv.find_uv_bin()


@pytest.fixture(scope="session")
def uv_cache_dir(uv_bin) -> str:
    return subprocess.run([uv_bin, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch, uv_cache_dir):
    """Each test gets its own Jupyter folders and uvkernel cache; uv's download cache stays shared."""
    base = tmp_path_factory.mktemp("jupyter")
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "cache")):
        (base / sub).mkdir()
        monkeypatch.setenv(var, str(base / sub))
    monkeypatch.setenv("JUPYTER_PATH", str(base / "data"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("UV_CACHE_DIR", uv_cache_dir)
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    for var in ("UVKERNEL_HOST_PYTHON", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "UV_PYTHON"):
        monkeypatch.delenv(var, raising=False)
    return base


@pytest.fixture
def install_spec(host_python):
    """install_spec(name="uvk", **config) -> name: a spec written by uvkernel's own installer (user folder)."""
    from uvkernel import kernelspec

    def install(name: str = "uvk-test", host: str | None = None, env: dict | None = None, **config) -> str:
        kernelspec.install(name=name, host_python=host or host_python, env=env, config=config, user=True)
        return name

    return install
