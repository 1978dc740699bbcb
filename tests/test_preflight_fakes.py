"""Every preflight code on a fake GPU machine: the fake torch and the fake libnvidia-ml.so.1 (test doubles,
tests/doubles/) driven through the real probe, the real uv env and the real pipeline.

One fake host and one project env serve the whole module; each test changes only the server's environment
(what the fakes report) and uses a fresh preflight cache unless it tests the cache.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from doubles import fake_torch, nvml
from doubles.fixtures import (A100, UUIDS, debian_python, fake_nvml_dir, gpu_world,  # noqa: F401
                              import_count, read_json)


def test_healthy_gpu_machine_passes_with_every_fact(gpu_world):
    outcome = gpu_world.check(gpu_world.environ())
    assert outcome.error is None, outcome.message
    result = outcome.result
    assert result.ok and result.gpu_expected and result.deep == "ran"
    assert "driver sees 2 GPU(s)" in result.gpu_reason
    facts = result.facts
    assert facts["packages"]["torch"]["origin"] == "host"
    assert facts["packages"]["torch"]["location"] == str(gpu_world.host.site_packages / "torch")
    assert facts["packages"]["ipykernel"]["origin"] == "env"  # the fake host has none: uvkernel installed it
    assert facts["torch"]["build"] == "cuda" and facts["torch"]["cuda"] == "12.4"
    assert facts["nvml"]["driver_version"] == "550.54.15" and facts["nvml"]["cuda_driver_version"] == "12.4"
    assert [d["uuid"] for d in facts["nvml"]["devices"]] == [UUIDS[0][:-1] + "0", UUIDS[1][:-1] + "1"]
    assert facts["visible"] == {"CUDA_VISIBLE_DEVICES": None, "kind": "unset", "parsed": None, "devices": [0, 1],
                                "count": 2}
    deep = facts["deep"]["torch"]
    assert deep["cuda_init"] == "ok" and deep["device_count"] == 2 and deep["cudnn"] == 90100
    assert [d["smoke"] for d in deep["devices"]] == ["ok", "ok"]
    # the report the kernel's %uvkernel reads holds the same facts
    report = read_json(outcome.prepared.env.path / ".uvkernel-report.json")
    assert report["ok"] and report["preflight"]["facts"]["deep"]["torch"]["device_count"] == 2
    # torch and the driver were touched only by the probe's process, never by this (the server's) one
    assert "torch" not in sys.modules
    assert "libnvidia-ml" not in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("mode", ["auto", "true"])
def test_no_driver(gpu_world, mode):
    outcome = gpu_world.check(gpu_world.environ(library=False, nodes=[]), require_cuda=mode)
    if mode == "auto":  # a CUDA torch on a machine without a driver: starts on the CPU, says so
        assert outcome.error is None, outcome.message
        assert any("no NVIDIA driver is reachable" in n for n in outcome.result.notices)
        assert not outcome.result.gpu_expected
        assert "cuda_init" not in outcome.result.facts["deep"]["torch"]  # CUDA not initialised when not expected
    else:
        assert outcome.codes == ["NO_DRIVER"]
        assert "libnvidia-ml.so.1: cannot open shared object file" in outcome.message
        assert "How to fix: run on a machine or container with the NVIDIA driver" in outcome.message


def test_driver_library_mismatch_after_upgrade(gpu_world):
    # NVML init returns 18; the device nodes say this is a GPU machine, so auto expects a GPU
    outcome = gpu_world.check(gpu_world.environ(init_error=18))
    assert outcome.codes == ["DRIVER_MISMATCH"]
    assert "LIB_RM_VERSION_MISMATCH: Driver/library version mismatch" in outcome.message
    assert "reboot the machine" in outcome.message
    assert outcome.result.deep.startswith("not run")  # no torch import after a cheap failure


def test_device_files_missing_for_a_visible_gpu(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(nodes=["nvidiactl", "nvidia-uvm", "nvidia0"]))
    assert outcome.codes == ["NO_DEVICE_FILES"]
    assert "missing: " in outcome.message and "/nvidia1" in outcome.message
    assert "--gpus all" in outcome.message
    # hiding the GPU whose node is missing makes it start
    assert gpu_world.check(gpu_world.environ(nodes=["nvidiactl", "nvidia-uvm", "nvidia0"], cvd="0")).error is None


def test_nvml_fails_without_nvidiactl(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(init_error=9, nodes=[]), require_cuda=True)
    assert outcome.codes == ["NO_DEVICE_FILES"]
    assert "/dev/nvidiactl is missing" in outcome.message


def test_driver_too_old_for_torch_cuda_major(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(driver="470.256.02", driver_cuda="11.4"))
    assert outcome.codes == ["DRIVER_TOO_OLD"]
    msg = outcome.message
    assert "driver 470.256.02 supports CUDA up to 11.4, but torch was built for CUDA 12.4" in msg
    assert "upgrade the NVIDIA driver" in msg


def test_driver_older_minor_is_a_notice(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(driver="535.183.01", driver_cuda="12.2"))
    assert outcome.error is None, outcome.message
    assert any("minor version compatibility" in n for n in outcome.result.notices)


@pytest.mark.parametrize("cvd, parsed", [("", []), ("-1", []), ("0,0", []), ("NoDevFiles", []),
                                         ("GPU-does-not-exist", ["GPU-does-not-exist"]), ("7", [7])])
def test_cuda_visible_devices_hiding_every_gpu(gpu_world, cvd, parsed):
    outcome = gpu_world.check(gpu_world.environ(cvd=cvd))
    assert outcome.codes == ["NO_VISIBLE_DEVICES"], outcome.message
    assert outcome.result.facts["visible"]["parsed"] == parsed
    assert f"CUDA_VISIBLE_DEVICES={cvd!r} hides every one" in outcome.message
    assert UUIDS[0][:-1] + "0" in outcome.message  # the fix names a real UUID to use


def test_cuda_visible_devices_by_uuid_prefix(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(cvd="GPU-9a8b"))  # second GPU, by a unique UUID prefix
    assert outcome.error is None, outcome.message
    assert outcome.result.facts["visible"]["devices"] == [1]


def test_too_few_gpus(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(cvd="1"), min_gpus=2)
    assert outcome.codes == ["TOO_FEW_GPUS"]
    assert "the kernel sees 1 GPU(s), but min_gpus is 2" in outcome.message
    assert gpu_world.check(gpu_world.environ(), min_gpus=2).error is None


def test_no_gpu_reported_by_the_driver(gpu_world):
    auto = gpu_world.check(gpu_world.environ(gpus=0, nodes=["nvidiactl"]))
    assert auto.error is None and any("the driver sees no GPU" in n for n in auto.result.notices)
    required = gpu_world.check(gpu_world.environ(gpus=0, nodes=["nvidiactl"]), require_cuda="true")
    assert required.codes == ["NO_GPU"] and "driver 550.54.15 is loaded but reports no GPU" in required.message


def test_arch_unsupported_from_the_arch_list(gpu_world):
    blackwell = [nvml.gpu(name="NVIDIA B200", capability="10.0", uuid="GPU-b200")]
    outcome = gpu_world.check(gpu_world.environ(gpus=blackwell))
    assert outcome.codes == ["ARCH_UNSUPPORTED"]
    assert "GPU cuda:0 (NVIDIA B200) has compute capability 10.0" in outcome.message
    assert "sm_90" in outcome.message


def test_arch_unsupported_at_the_first_operation(gpu_world):
    text = "CUDA error: no kernel image is available for execution on the device"
    outcome = gpu_world.check(gpu_world.environ(torch={"kernel_error": text}))
    assert outcome.codes == ["ARCH_UNSUPPORTED"] and text in outcome.message


def test_torch_import_failed(gpu_world):
    text = "libcudnn.so.9: cannot open shared object file: No such file or directory"
    outcome = gpu_world.check(gpu_world.environ(torch={"import_error": text}))
    assert outcome.codes == ["TORCH_IMPORT_FAILED"]
    assert f"import torch failed in the kernel's environment: ImportError: {text}" in outcome.message
    assert f"uvkernel check {gpu_world.project} --recheck" in outcome.message


def test_torch_import_crash(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(torch={"import_crash": True}))
    assert outcome.codes == ["TORCH_IMPORT_FAILED"]
    assert "the process died (it was killed by signal SIGSEGV)" in outcome.message


def test_cuda_init_failed_keeps_the_reason(gpu_world):
    text = "CUDA driver initialization failed, you might not have a CUDA gpu. (cuInit 999)"
    outcome = gpu_world.check(gpu_world.environ(torch={"init_error": text}))
    assert outcome.codes == ["CUDA_INIT_FAILED"]
    assert f"torch could not initialise CUDA: RuntimeError: {text}" in outcome.message
    assert "sudo modprobe nvidia_uvm" in outcome.message


def test_cuda_init_driver_insufficient_is_driver_too_old(gpu_world):
    text = "The NVIDIA driver on your system is too old... CUDA driver version is insufficient for CUDA runtime version"
    outcome = gpu_world.check(gpu_world.environ(torch={"init_error": text}))
    assert outcome.codes == ["DRIVER_TOO_OLD"] and text in outcome.message


def test_hang_is_stopped_with_its_process_group(gpu_world, tmp_path):
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    outcome = gpu_world.check(gpu_world.environ(torch={"hang": "init", "hang_pid_file": str(pid_file)}),
                              preflight_timeout=5)
    assert time.monotonic() - started < 30
    assert outcome.codes == ["PROBE_TIMEOUT"]
    assert "did not finish within 5 seconds and was stopped (it was at: torch.cuda.init())" in outcome.message
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the probe's child process survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_nvml_hang_in_the_cheap_layer_times_out(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(nvml_hang=True), preflight_timeout=3)
    assert outcome.codes == ["PROBE_TIMEOUT"]
    assert "it was at: reading the driver through NVML (libnvidia-ml.so.1)" in outcome.message


def test_probe_failure_is_reported(gpu_world, tmp_path):
    (tmp_path / "json.py").write_text("raise RuntimeError('a json.py on PYTHONPATH broke the stdlib')\n")
    outcome = gpu_world.check(gpu_world.environ(extra={"PYTHONPATH": str(tmp_path)}))
    assert outcome.codes == ["PROBE_FAILED"]
    assert "RuntimeError: a json.py on PYTHONPATH broke the stdlib" in outcome.message
    assert f"uvkernel check {gpu_world.project} --recheck" in outcome.message


def test_noise_on_stdout_does_not_confuse_the_probe(gpu_world, tmp_path):
    (tmp_path / "sitecustomize.py").write_text("print('hello from sitecustomize {not json')\n")
    outcome = gpu_world.check(gpu_world.environ(extra={"PYTHONPATH": str(tmp_path)}))
    assert outcome.error is None, outcome.message


def test_mig_notice_and_mig_uuid_selection(gpu_world):
    gpus = [nvml.gpu(name="NVIDIA H100 80GB HBM3", capability="9.0", uuid="GPU-h100", mig=True,
                     mig_devices=[("MIG-1111aaaa", "1g.10gb"), ("MIG-2222bbbb", "3g.40gb")])]
    torch = {"devices": [{"name": "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "capability": "9.0"}]}
    plain = gpu_world.check(gpu_world.environ(gpus=gpus, torch=torch))
    assert plain.error is None, plain.message
    assert any("MIG mode" in n and "MIG-1111aaaa" in n for n in plain.result.notices)
    chosen = gpu_world.check(gpu_world.environ(gpus=gpus, torch=torch, cvd="MIG-2222"))
    assert chosen.error is None, chosen.message
    assert chosen.result.facts["visible"]["devices"] == ["MIG-2222bbbb"]
    assert not any("MIG mode" in n for n in chosen.result.notices)


def test_nvidia_wheels_in_the_env_shadowing_the_hosts(gpu_world):
    host_dist = fake_torch.install_dist(gpu_world.host.site_packages, "nvidia-cudnn-cu12", "9.1.0.70")
    env_site = None
    try:
        first = gpu_world.check(gpu_world.environ())
        assert first.error is None, first.message
        env_site = first.prepared.env.site_packages
        env_dist = fake_torch.install_dist(env_site, "nvidia-cudnn-cu12", "9.5.1.17")
        outcome = gpu_world.check(gpu_world.environ())
        assert outcome.codes == ["NVIDIA_SHADOWED"]
        assert "nvidia-cudnn-cu12: 9.5.1.17 in " + str(env_site) in outcome.message
        assert f"uvkernel unshadow {gpu_world.project}" in outcome.message
        _remove_dist(env_dist)
        fake_torch.install_dist(env_site, "nvidia-cudnn-cu12", "9.1.0.70")
        same = gpu_world.check(gpu_world.environ())
        assert same.error is None and any("same version" in n for n in same.result.notices)
    finally:
        _remove_dist(host_dist)
        if env_site is not None:
            for d in env_site.glob("nvidia_cudnn_cu12-*.dist-info"):
                _remove_dist(d)


def _remove_dist(dist: Path) -> None:
    import shutil

    shutil.rmtree(dist, ignore_errors=True)
    shutil.rmtree(dist.parent / "nvidia", ignore_errors=True)


def test_cpu_and_rocm_builds(gpu_world):
    site = gpu_world.host.site_packages
    try:
        fake_torch.set_build(site, "2.13.0+cpu", None)
        auto = gpu_world.check(gpu_world.environ())
        assert auto.error is None and any("CPU-only build" in n for n in auto.result.notices)
        required = gpu_world.check(gpu_world.environ(), require_cuda="true")
        assert required.codes == ["TORCH_NOT_CUDA_BUILD"]
        assert "torch 2.13.0+cpu is a CPU-only build, but CUDA is required (require_cuda = true)" in required.message
        gpus = gpu_world.check(gpu_world.environ(), min_gpus=1)
        assert gpus.codes == ["TORCH_NOT_CUDA_BUILD"] and "(min_gpus = 1)" in gpus.message
        fake_torch.set_build(site, "2.13.0+rocm6.4", None, hip="6.4.43482")
        rocm = gpu_world.check(gpu_world.environ())
        assert rocm.error is None and any("ROCm 6.4.43482 build" in n for n in rocm.result.notices)
    finally:
        fake_torch.set_build(site, "2.13.0+cu124", "12.4")


def test_require_cuda_false_checks_nothing_about_cuda(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(library=False, nodes=[]), require_cuda=False)
    assert outcome.error is None, outcome.message
    assert not outcome.result.gpu_expected
    assert "CUDA is not checked (require_cuda = false)" in outcome.result.notices


def test_required_packages_each_checked(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(), required_packages=["torch", "torchvision"])
    assert outcome.codes == ["TORCH_NOT_FOUND"]
    assert f"torchvision is not importable from the host interpreter {gpu_world.host.python}" in outcome.message
    assert f"{gpu_world.host.python} -m pip install torchvision" in outcome.message


def test_messages_name_every_failure_and_avoid_percent(gpu_world):
    outcome = gpu_world.check(gpu_world.environ(driver_cuda="11.8", cvd=""), required_packages=["torch", "nosuchpkg"])
    assert outcome.codes == ["TORCH_NOT_FOUND", "DRIVER_TOO_OLD"]
    assert "also: the NVIDIA driver 550.54.15 supports CUDA up to 11.8, but torch was built for CUDA 12.4 " \
           "[DRIVER_TOO_OLD]" in outcome.message
    assert "%" not in outcome.message
    lines = outcome.message.splitlines()
    assert lines[0].startswith("uvkernel: ") and lines[0].endswith("[TORCH_NOT_FOUND]")
    assert lines[-1].startswith("How to fix: ")


# --- the cache ------------------------------------------------------------------------------------------
def test_cache_hit_skips_the_torch_import(gpu_world, tmp_path):
    log = tmp_path / "imports.log"
    cache = tmp_path / "cache"
    env = gpu_world.environ(torch={"import_log": str(log)})
    first = gpu_world.check(env, cache_dir=cache)
    assert first.error is None and first.result.deep == "ran" and import_count(log) == 1
    assert first.result.cache["stored"]
    second = gpu_world.check(env, cache_dir=cache)
    assert second.error is None and second.result.cached and second.result.deep == "cached"
    assert import_count(log) == 1, "a cache hit imported torch"
    assert second.result.facts["deep"]["torch"]["device_count"] == 2  # deep facts come back from the cache
    recheck = gpu_world.check(env, cache_dir=cache, recheck=True)
    assert recheck.result.deep == "ran" and import_count(log) == 2


def test_cache_key_follows_what_the_cheap_layer_sees(gpu_world, tmp_path):
    log = tmp_path / "imports.log"
    cache = tmp_path / "cache"
    env = gpu_world.environ(torch={"import_log": str(log)})
    gpu_world.check(env, cache_dir=cache)
    assert import_count(log) == 1
    # another CUDA_VISIBLE_DEVICES, another driver, a touched torch: each a miss
    gpu_world.check({**env, "CUDA_VISIBLE_DEVICES": "1"}, cache_dir=cache)
    assert import_count(log) == 2
    gpu_world.check({**env, **nvml.behaviour([nvml.gpu(uuid=UUIDS[0][:-1] + "0", **A100),
                                              nvml.gpu(uuid=UUIDS[1][:-1] + "1", **A100)],
                                             driver="550.90.07")}, cache_dir=cache)
    assert import_count(log) == 3
    gpu_world.check({**env, "CUDA_VISIBLE_DEVICES": "1"}, cache_dir=cache)
    assert import_count(log) == 3  # the earlier setting is still a hit (several entries per env)
    version_py = gpu_world.host.site_packages / "torch" / "version.py"
    stat = version_py.stat()
    os.utime(version_py, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    gpu_world.check(env, cache_dir=cache)
    assert import_count(log) == 4


def test_failures_are_not_cached_and_ttl_expires(gpu_world, tmp_path):
    log = tmp_path / "imports.log"
    cache = tmp_path / "cache"
    failing = gpu_world.environ(torch={"import_log": str(log), "init_error": "boom"})
    assert gpu_world.check(failing, cache_dir=cache).codes == ["CUDA_INIT_FAILED"]
    assert gpu_world.check(failing, cache_dir=cache).codes == ["CUDA_INIT_FAILED"]
    assert import_count(log) == 2  # a failure is looked at again on every start
    ok = gpu_world.environ(torch={"import_log": str(log)})
    gpu_world.check(ok, cache_dir=cache, preflight_cache_ttl=0)
    gpu_world.check(ok, cache_dir=cache, preflight_cache_ttl=0)
    assert import_count(log) == 4  # ttl 0: never cached
    gpu_world.check(ok, cache_dir=cache, preflight_cache_ttl=1)
    time.sleep(1.2)
    gpu_world.check(ok, cache_dir=cache, preflight_cache_ttl=1)
    assert import_count(log) == 6  # expired
    files = list((cache / "preflight").glob("*.json"))
    assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == "0o600"
    assert oct((cache / "preflight").stat().st_mode & 0o777) == "0o700"


def test_concurrent_starts_import_torch_once(gpu_world, tmp_path):
    """Three starts of one env at the same time: one deep run, the other two wait and take it from the cache."""
    import asyncio

    from uvkernel import pipeline
    from uvkernel.settings import from_config

    log = tmp_path / "imports.log"
    env = gpu_world.environ(torch={"import_log": str(log)})
    settings = from_config({"host_python": str(gpu_world.host.python), "cache_dir": str(tmp_path / "cache")})

    async def three():
        return await asyncio.gather(*(pipeline.prepare(settings, cwd=str(gpu_world.project), environ=env,
                                                       log=lambda _m: None) for _ in range(3)))

    results = [p.preflight for p in asyncio.run(three())]
    assert all(r.ok for r in results)
    assert import_count(log) == 1
    assert sorted(r.deep for r in results) == ["cached", "cached", "ran"]
