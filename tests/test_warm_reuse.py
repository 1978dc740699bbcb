"""A warm start reuses the cheap preflight facts and runs no Python; each change the cheap layer exists to catch
makes the very next start run the probe again.

On the fake GPU machine (tests/doubles: the fake torch in a real venv host, the fake libnvidia-ml.so.1, plain files
standing in for /dev/nvidia* and /proc/driver/nvidia), through the real pipeline and the real probe.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from doubles import fake_torch
from doubles.fixtures import (debian_python, fake_nvml_dir, gpu_world, make_fake_host,  # noqa: F401
                              GpuWorld)
from uvkernel import process
from uvkernel.preflight import verdicts


class Machine:
    """One fake machine state: an environment dict reused start after start, its /dev and /proc stand-ins."""

    def __init__(self, world: GpuWorld, tmp: Path):
        self.world = world
        self.environ = world.environ()
        self.dev = Path(self.environ["UVKERNEL_PROBE_DEV_DIR"])
        self.proc = tmp / "proc-driver-nvidia"
        (self.proc / "gpus" / "0000:00:04.0").mkdir(parents=True)
        (self.proc / "gpus" / "0000:00:05.0").mkdir(parents=True)
        for gpu in ("0000:00:04.0", "0000:00:05.0"):
            (self.proc / "gpus" / gpu / "information").write_text(f"Model: NVIDIA A100\nBus Location: {gpu}\n")
        (self.proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n")
        self.environ[verdicts.NVIDIA_PROC_VAR] = str(self.proc)
        # a private copy of the fake NVML library, so a test can replace it (a driver upgrade)
        self.lib = tmp / "nvml"
        shutil.copytree(world.nvml_dir, self.lib)
        self.environ["LD_LIBRARY_PATH"] = str(self.lib)
        self.home = tmp / "home"
        self.home.mkdir()
        self.environ["HOME"] = str(self.home)
        self.cache = tmp / "cache"
        self.notebooks = world.project / "notebooks"
        self.notebooks.mkdir(exist_ok=True)

    def start(self, cwd: Path | None = None):
        return self.world.check(self.environ, cwd=cwd or self.notebooks, cache_dir=self.cache)


@pytest.fixture
def machine(gpu_world, tmp_path) -> Machine:
    return Machine(gpu_world, tmp_path)


def _python_starts(monkeypatch) -> list[list[str]]:
    """Every subprocess uvkernel starts from here on (a spy around the real process.run)."""
    started: list[list[str]] = []
    real = process.run

    async def spy(args, *a: Any, **kw: Any):
        started.append(list(args))
        return await real(args, *a, **kw)

    monkeypatch.setattr(process, "run", spy)
    return started


def test_warm_start_runs_no_python(machine, monkeypatch):
    first = machine.start()
    assert first.error is None, first.message
    assert first.result.cheap == "ran" and first.result.deep == "ran" and first.result.gpu_expected
    started = _python_starts(monkeypatch)
    again = machine.start()
    assert again.error is None, again.message
    assert again.result.cheap == "reused" and again.result.deep == "cached"
    assert started == []  # no probe, no host interrogation, no uv: nothing but stats and small file reads
    assert again.result.facts["packages"]["torch"]["origin"] == "host"  # the same facts, and the same verdict
    assert again.result.gpu_expected and again.result.gpu_reason == first.result.gpu_reason
    assert again.prepared.env.reused and again.prepared.report()["preflight"]["cheap"] == "reused"
    # --recheck (uvkernel check --recheck) still runs everything
    rechecked = machine.world.check(machine.environ, cwd=machine.notebooks, cache_dir=machine.cache, recheck=True)
    assert rechecked.result.cheap == "ran" and rechecked.result.deep == "ran"


def _warm(machine: Machine) -> None:
    """Two starts: the second must have reused the facts (so the next one's probe is due to the change alone)."""
    assert machine.start().error is None
    warm = machine.start()
    assert warm.error is None, warm.message
    assert warm.result.cheap == "reused"


def _site(machine: Machine) -> Path:
    outcome = machine.start()
    assert outcome.error is None, outcome.message
    return outcome.prepared.env.site_packages


def test_torch_copy_in_the_env(machine):
    site = _site(machine)
    _warm(machine)
    fake_torch.install(site, version="2.15.0", cuda="12.8")
    try:
        outcome = machine.start()
        assert outcome.codes == ["TORCH_SHADOWED"], outcome.message
        assert outcome.result.cheap == "ran"
        # the env's shadowing list (kept between starts) sees it too
        from uvkernel import pipeline
        from uvkernel.settings import from_config
        import asyncio

        settings = from_config({"host_python": str(machine.world.host.python), "cache_dir": str(machine.cache)})
        prepared = asyncio.run(pipeline.prepare_env(settings, cwd=str(machine.notebooks), environ=machine.environ))
        assert [s["name"] for s in prepared.env.shadowing] == ["torch"]
    finally:
        fake_torch.remove(site)
    assert machine.start().error is None


def test_nvidia_wheel_in_the_env(machine):
    site = _site(machine)
    _warm(machine)
    info = fake_torch.install_dist(site, "nvidia-cudnn-cu12", "9.1.0.70")
    try:
        outcome = machine.start()
        assert outcome.result.cheap == "ran"
        assert "nvidia-cudnn-cu12" in [d["name"] for d in outcome.result.facts["nvidia_distributions"]]
    finally:
        shutil.rmtree(info)
        shutil.rmtree(site / "nvidia")


@pytest.mark.parametrize("what", ["torch", "nvidia-cublas-cu12"])
def test_copy_in_the_user_site(machine, what):
    _warm(machine)
    version = machine.start().result.facts["python"]["version"]
    user_site = Path(verdicts.user_site(machine.environ, version))
    user_site.mkdir(parents=True)  # the folder appearing is itself a change
    outcome = machine.start()
    assert outcome.error is None and outcome.result.cheap == "ran"
    assert machine.start().result.cheap == "reused"
    if what == "torch":
        fake_torch.install(user_site, version="2.12.0", cuda="12.1")
    else:
        fake_torch.install_dist(user_site, what, "12.4.5.8")
    outcome = machine.start()
    assert outcome.error is None, outcome.message  # the kernel runs with PYTHONNOUSERSITE=1: no harm, re-read
    assert outcome.result.cheap == "ran"


def test_host_site_packages_change(machine):
    _warm(machine)
    host_site = machine.world.host.site_packages
    info = fake_torch.install_dist(host_site, "some-host-addition", "1.0")
    try:
        outcome = machine.start()
        assert outcome.error is None, outcome.message
        assert outcome.result.cheap == "ran"
    finally:
        shutil.rmtree(info)
        shutil.rmtree(host_site / "nvidia")


def test_host_torch_rebuilt_in_place(machine):
    _warm(machine)
    version_py = machine.world.host.site_packages / "torch" / "version.py"
    before = version_py.read_text()
    version_py.write_text(before.replace("12.4", "12.6"))  # the folder's mtime stays; the file's changes
    try:
        outcome = machine.start()
        assert outcome.result.cheap == "ran"
        assert outcome.result.facts["torch"]["cuda"] == "12.6"
    finally:
        version_py.write_text(before)


@pytest.mark.parametrize("value, code", [("", "NO_VISIBLE_DEVICES"), ("1", None), ("GPU-9a8b", None)])
def test_cuda_visible_devices_change(machine, value, code):
    _warm(machine)
    machine.environ["CUDA_VISIBLE_DEVICES"] = value
    outcome = machine.start()
    assert outcome.result.cheap == "ran"
    assert outcome.codes == ([code] if code else []), outcome.message
    assert outcome.result.facts["visible"]["CUDA_VISIBLE_DEVICES"] == value


@pytest.mark.parametrize("name", ["PYTHONPATH", "LD_PRELOAD", "NVIDIA_VISIBLE_DEVICES", "TORCH_HOME"])
def test_other_environment_inputs(machine, name):
    _warm(machine)
    machine.environ[name] = str(machine.home)
    assert machine.start().result.cheap == "ran"


@pytest.mark.parametrize("make", [
    lambda d: (d / "torch.py").write_text("x = 1\n"),
    lambda d: ((d / "torch").mkdir(), (d / "torch" / "__init__.py").write_text("")),
])
def test_torch_module_in_the_notebook_folder(machine, make: Callable[[Path], Any]):
    _warm(machine)
    make(machine.notebooks)
    try:
        outcome = machine.start()
        assert outcome.codes == ["LOCAL_MODULE_SHADOWS"], outcome.message
        assert outcome.result.cheap == "ran"
    finally:
        for leftover in ("torch.py", "torch"):
            path = machine.notebooks / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert machine.start().error is None


def test_torch_package_completed_in_the_notebook_folder(machine):
    """A torch/ without __init__.py is a namespace portion (not reported); adding the file makes it a package."""
    (machine.notebooks / "torch").mkdir()
    try:
        _warm(machine)
        (machine.notebooks / "torch" / "__init__.py").write_text("")
        outcome = machine.start()
        assert outcome.codes == ["LOCAL_MODULE_SHADOWS"], outcome.message
    finally:
        shutil.rmtree(machine.notebooks / "torch")


def test_other_notebook_files_keep_the_reuse(machine):
    _warm(machine)
    (machine.notebooks / "analysis.ipynb").write_text("{}")  # saving a notebook is not a change that counts
    try:
        assert machine.start().result.cheap == "reused"
    finally:
        (machine.notebooks / "analysis.ipynb").unlink()


def test_device_file_vanishes(machine):
    _warm(machine)
    (machine.dev / "nvidia1").unlink()
    outcome = machine.start()
    assert outcome.codes == ["NO_DEVICE_FILES"], outcome.message
    assert outcome.result.cheap == "ran"


def test_device_file_appears(machine):
    _warm(machine)
    (machine.dev / "nvidia2").write_text("device node stand-in\n")
    outcome = machine.start()
    assert outcome.result.cheap == "ran"
    assert "nvidia2" in outcome.result.facts["device_files"]["present"]


def test_device_file_permissions_change(machine):
    _warm(machine)
    os.chmod(machine.dev / "nvidia0", 0o600)
    assert machine.start().result.cheap == "ran"


def test_gpu_list_change(machine):
    _warm(machine)
    shutil.rmtree(machine.proc / "gpus" / "0000:00:05.0")  # the driver lists one GPU fewer
    assert machine.start().result.cheap == "ran"
    _warm(machine)
    (machine.proc / "capabilities" / "gpu0" / "mig").mkdir(parents=True)
    (machine.proc / "capabilities" / "gpu0" / "mig" / "gi1").write_text("")  # a MIG instance made
    assert machine.start().result.cheap == "ran"


def test_kernel_module_upgrade(machine):
    _warm(machine)
    (machine.proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  560.28.03\n")
    assert machine.start().result.cheap == "ran"


def test_nvml_library_replaced(machine):
    """A driver package upgrade replaces libnvidia-ml.so.1 while the old kernel module still runs (error 18)."""
    _warm(machine)
    library = machine.lib / "libnvidia-ml.so.1"
    fresh = machine.lib / "new.so"
    shutil.copy(library, fresh)
    os.replace(fresh, library)
    outcome = machine.start()
    assert outcome.result.cheap == "ran"


def test_driver_behaviour_change_through_the_fake(machine):
    _warm(machine)
    from doubles import nvml

    machine.environ.update(nvml.behaviour([], init_error=18))
    outcome = machine.start()
    assert outcome.codes == ["DRIVER_MISMATCH"], outcome.message


def test_failed_facts_are_never_reused(machine):
    _warm(machine)
    (machine.notebooks / "torch.py").write_text("x = 1\n")
    try:
        assert machine.start().codes == ["LOCAL_MODULE_SHADOWS"]
        assert machine.start().result.cheap == "ran"  # a failure is read again every start
    finally:
        (machine.notebooks / "torch.py").unlink()


def test_cache_ttl_zero_turns_reuse_off(machine):
    for _ in range(2):
        outcome = machine.world.check(machine.environ, cwd=machine.notebooks, cache_dir=machine.cache,
                                      preflight_cache_ttl=0)
        assert outcome.error is None and outcome.result.cheap == "ran"
