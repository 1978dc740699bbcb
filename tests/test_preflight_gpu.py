"""On a real NVIDIA GPU with a global CUDA build of torch (run with --gpu; deselected otherwise).

    UVKERNEL_TEST_HOST=/path/to/python-with-cuda-torch .venv/bin/python -m pytest tests/test_preflight_gpu.py --gpu
    (add UVKERNEL_RECORD=1 to save the probe's JSON into tests/doubles/recordings/)

Not yet run on a GPU: this project's machines so far had none (tests/doubles/README.md).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess

import pytest

from doubles import recording
from doubles.fixtures import debian_python, fake_nvml_dir, make_fake_host, probe_reports  # noqa: F401
from helpers import Kernel, make_project, run_async, uvkernel_cli
from uvkernel.preflight import policy
from uvkernel.preflight.runner import PROBE

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_host(host_python) -> str:
    done = subprocess.run([host_python, "-I", "-c", "import torch, json; print(json.dumps([torch.version.cuda, "
                           "torch.cuda.device_count()]))"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the host {host_python} cannot import torch: {done.stderr[-2000:]}", pytrace=False)
    cuda, count = json.loads(done.stdout.strip().splitlines()[-1])
    if not cuda or count < 1:
        pytest.fail(f"--gpu needs a host with a CUDA build of torch and a GPU; {host_python} has torch.version.cuda="
                    f"{cuda} and sees {count} GPU(s) (set UVKERNEL_TEST_HOST)", pytrace=False)
    return host_python


@pytest.fixture(scope="module")
def gpu_project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("gpu") / "proj")


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR",)}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env.update(extra)
    return env


def test_check_passes_on_a_real_gpu(cuda_host, gpu_project, tmp_path):
    done = uvkernel_cli("check", str(gpu_project), "--host-python", cuda_host, "--require-cuda", "--recheck", "--json",
                        env=_env(tmp_path))
    report = json.loads(done.stdout)
    pre = report["preflight"]
    facts = pre["facts"]
    assert report["ok"] and pre["gpu_expected"] and pre["deep"] == "ran"
    assert facts["torch"]["build"] == "cuda" and facts["nvml"]["loaded"] and facts["nvml"]["devices"]
    torch = facts["deep"]["torch"]
    assert torch["cuda_init"] == "ok" and torch["device_count"] == facts["visible"]["count"] >= 1
    assert all(d["smoke"] == "ok" for d in torch["devices"])
    assert all(policy.sass_supports(torch["arch_list"], d["capability"]) for d in torch["devices"])
    table = uvkernel_cli("check", str(gpu_project), "--host-python", cuda_host, env=_env(tmp_path)).stdout
    assert "deep checks" in table and "from the cache" in table and "GPU 0" in table


@pytest.mark.parametrize("cvd", ["", "-1", "0", "0,0", "NoDevFiles", "0,1", "1", "GPU-", "99"])
def test_visible_count_matches_torch_on_the_real_driver(cuda_host, cvd):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": cvd}
    done = subprocess.run([cuda_host, "-c", "import torch; print(torch.cuda.device_count())"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    torch_count = int(done.stdout.strip().splitlines()[-1])
    probe = subprocess.run([cuda_host, str(PROBE), "{}"], env=env, capture_output=True, text=True, timeout=600)
    cheap = probe_reports(probe.stdout)["cheap"]
    assert cheap["visible"]["count"] == torch_count, cheap["visible"]


def test_hidden_gpus_fail_with_the_fix(cuda_host, gpu_project, tmp_path):
    done = uvkernel_cli("check", str(gpu_project), "--host-python", cuda_host, env=_env(tmp_path, CUDA_VISIBLE_DEVICES=""),
                        check=False)
    assert done.returncode == 1 and "[NO_VISIBLE_DEVICES]" in done.stdout
    assert re.search(r"UUIDs \(e\.g\. GPU-[0-9a-f-]+\)", done.stdout)


def test_record_and_replay_real_gpu(cuda_host, uv_bin, debian_python, fake_nvml_dir, tmp_path):
    """Record the real probe's JSON (saved with UVKERNEL_RECORD=1) and replay it through the fakes."""
    config = {"packages": ["torch"], "deep": True, "deep_packages": ["torch"], "init_cuda": True}
    done = subprocess.run([cuda_host, str(PROBE), json.dumps(config)], capture_output=True, text=True, timeout=600)
    reports = probe_reports(done.stdout)
    assert "done" in reports, done.stderr
    rec = recording.make(reports["cheap"], reports["deep"], by="tests/test_preflight_gpu.py::test_record_and_replay_real_gpu",
                         note=f"host {cuda_host}")
    if os.environ.get("UVKERNEL_RECORD"):
        gpu = re.sub(r"[^a-z0-9]+", "-", (reports["cheap"]["nvml"]["devices"][0]["name"] or "gpu").lower()).strip("-")
        recording.save(rec, recording.FOLDER / f"{socket.gethostname()}-{gpu}.json")
    host = make_fake_host(tmp_path / "replay-host", uv_bin, debian_python)
    build, environ = recording.fakes_for(rec, tmp_path / "dev")
    from doubles import fake_torch

    fake_torch.set_build(host.site_packages, build["version"], build["cuda"], build["hip"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "UVKERNEL_FAKE"))}
    env.update(environ, LD_LIBRARY_PATH=str(fake_nvml_dir))
    replay = subprocess.run([str(host.python), str(PROBE), json.dumps(config)], capture_output=True, text=True,
                            env=env, timeout=120)
    replayed = probe_reports(replay.stdout)
    assert recording.comparable(replayed["cheap"], replayed["deep"]) == recording.comparable(rec["cheap"], rec["deep"])


def test_kernel_sees_the_gpu(cuda_host, gpu_project, install_spec):
    name = install_spec("uvk-gpu", host=cuda_host, require_cuda="true")

    async def scenario():
        async with Kernel(name, cwd=gpu_project) as kernel:
            count = await kernel.value("__import__('torch').cuda.device_count()")
            shown = await kernel.run("%uvkernel")
            return count, shown

    count, shown = run_async(scenario())
    assert count >= 1
    assert "GPU 0" in shown.data[0]["text/plain"] and "torch.cuda.init()" in shown.data[0]["text/html"]
