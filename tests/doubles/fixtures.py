"""Fixtures for the preflight tests: the fake NVML library, a fake GPU host, and one call to run a start.

The fake host is a real venv made by ``uv venv`` (no system site-packages) from Debian's /usr/bin/python3,
which has no torch; the fake torch (real dist-info) goes into its site-packages.  uvkernel treats it like
any venv host: the project env is built on the base interpreter and the host venv is layered below it with a
.pth file (venv.layer_line), so the fake torch has origin "host" exactly as a real one would.
ipykernel is not in the fake host, so uvkernel installs it into the env (install_ipykernel = true).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import fake_torch, nvml

DEBIAN_PYTHON = "/usr/bin/python3"
HEALTHY_ARCH = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
A100 = dict(name="NVIDIA A100-SXM4-80GB", capability="8.0")
UUIDS = ["GPU-6f1b2c3d-0000-1111-2222-333344445555", "GPU-9a8b7c6d-0000-1111-2222-333344445555"]
# Variables of the developer's shell that would change what the probe sees.
_SCRUB = ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "UVKERNEL_FAKE_TORCH",
          "UVKERNEL_FAKE_NVML", "UVKERNEL_PROBE_DEV_DIR", "NVIDIA_VISIBLE_DEVICES")


@pytest.fixture(scope="session")
def fake_nvml_dir(tmp_path_factory) -> Path:
    """A folder holding the fake libnvidia-ml.so.1, compiled with gcc for this run."""
    try:
        return nvml.build(tmp_path_factory.mktemp("fake-nvml"))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot build the fake NVML library: {exc} {getattr(exc, 'stderr', '')}", pytrace=False)


@pytest.fixture(scope="session")
def debian_python() -> str:
    if not os.path.exists(DEBIAN_PYTHON):
        pytest.fail(f"{DEBIAN_PYTHON} is missing: the fake GPU host is built on an interpreter without torch",
                    pytrace=False)
    # The fake hosts are venvs without system site-packages made from it: they see its standard library only,
    # never its dist-packages (where the real-project tier installs a real torch with pip), so what must hold is
    # that its standard library itself carries no torch.
    done = subprocess.run([DEBIAN_PYTHON, "-I", "-S", "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                          capture_output=True, text=True)
    if done.returncode != 0 or done.stdout.strip() != "None":
        pytest.fail(f"{DEBIAN_PYTHON}'s standard library must not hold torch (found: {done.stdout.strip()} "
                    f"{done.stderr.strip()})", pytrace=False)
    return DEBIAN_PYTHON


@dataclass
class FakeHost:
    python: Path
    site_packages: Path


def make_fake_host(folder: Path, uv_bin: str, base_python: str, version: str = "2.13.0+cu124",
                   cuda: str | None = "12.4") -> FakeHost:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([uv_bin, "venv", "-q", "--no-project", "--python", base_python, str(folder)], env=env,
                   check=True, capture_output=True, text=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    fake_torch.install(Path(site), version=version, cuda=cuda)
    return FakeHost(python, Path(site))


@dataclass
class Outcome:
    result: Any  # PreflightResult
    error: Any = None  # PreflightError or other UvkernelError
    prepared: Any = None

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.result.failures] if self.result is not None else [self.error.code]

    @property
    def message(self) -> str:
        return str(self.error) if self.error is not None else ""


@dataclass
class GpuWorld:
    """A fake GPU machine: fake host, one project (its env reused by every test of the module)."""

    host: FakeHost
    project: Path
    nvml_dir: Path
    tmp: Path
    counter: list[int] = field(default_factory=lambda: [0])

    def fresh(self, name: str) -> Path:
        self.counter[0] += 1
        path = self.tmp / f"{name}-{self.counter[0]}"
        path.mkdir(parents=True, mode=0o700)  # a cache folder must be the user's own (uvkernel refuses others)
        return path

    def environ(self, *, gpus: int | list[dict[str, Any]] = 2, driver: str = "550.54.15", driver_cuda: str = "12.4",
                init_error: int = 0, nvml_hang: bool = False, library: bool = True,
                nodes: list[str] | None = None, cvd: str | None = None, torch: dict[str, Any] | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment on this fake machine (the kernel env is built from it)."""
        devices = gpus if isinstance(gpus, list) else [nvml.gpu(uuid=UUIDS[i % 2][:-1] + str(i), **A100)
                                                       for i in range(gpus)]
        base = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        dev = self.fresh("dev")
        if nodes is None:
            nodes = ["nvidiactl", "nvidia-uvm"] + [f"nvidia{i}" for i in range(len(devices))]
        for node in nodes:
            (dev / node).write_text("device node stand-in\n")
        base["UVKERNEL_PROBE_DEV_DIR"] = str(dev)
        if library:
            base["LD_LIBRARY_PATH"] = str(self.nvml_dir)
        base.update(nvml.behaviour(devices, driver=driver, cuda=driver_cuda, init_error=init_error, hang=nvml_hang))
        behaviour = {"devices": [{"name": d["name"], "capability": d["capability"], "uuid": d["uuid"],
                                  "total_memory": d["memory_total"], "multi_processor_count": 108}
                                 for d in devices],
                     "arch_list": HEALTHY_ARCH, "cudnn": 90100}
        behaviour.update(torch or {})
        base.update(fake_torch.behaviour(**behaviour))
        if cvd is not None:
            base["CUDA_VISIBLE_DEVICES"] = cvd
        base.update(extra or {})
        return base

    def check(self, environ: dict[str, str], *, cwd: Path | None = None, recheck: bool = False,
              cache_dir: Path | None = None, **settings: Any) -> Outcome:
        """One kernel start's preparation and preflight (the provisioner's code path, without Jupyter)."""
        from uvkernel import pipeline
        from uvkernel.errors import PreflightError, UvkernelError
        from uvkernel.settings import from_config

        config = {"host_python": str(self.host.python), "cache_dir": str(cache_dir or self.fresh("cache"))}
        config.update(settings)
        try:
            prepared = asyncio.run(pipeline.prepare(from_config(config), cwd=str(cwd or self.project),
                                                    environ=environ, recheck=recheck, log=lambda _m: None))
        except PreflightError as exc:
            return Outcome(exc.result, exc)
        except UvkernelError as exc:
            return Outcome(None, exc)
        return Outcome(prepared.preflight, None, prepared)


@pytest.fixture(scope="module")
def gpu_world(tmp_path_factory, uv_bin, debian_python, fake_nvml_dir) -> GpuWorld:
    from helpers import make_project

    tmp = tmp_path_factory.mktemp("gpu-world")
    host = make_fake_host(tmp / "host-venv", uv_bin, debian_python)
    project = make_project(tmp / "proj")
    return GpuWorld(host, project, fake_nvml_dir, tmp)


def import_count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def probe_reports(stdout: str) -> dict[str, Any]:
    """The probe's reports by kind (cheap, deep, done) from its stdout; stage lines are skipped."""
    from uvkernel.preflight.probe import MARK

    out: dict[str, Any] = {}
    for line in stdout.splitlines():
        mark, kind, payload = (line.split(" ", 2) + ["", ""])[:3]
        if mark == MARK and kind != "stage":
            out[kind] = json.loads(payload)
    return out
