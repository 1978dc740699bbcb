"""The test doubles themselves: the fake torch is a real distribution, and a probe recording replayed
through the fakes gives back the same facts (every file in tests/doubles/recordings/ plus one made now)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from doubles import fake_torch, nvml, recording
from doubles.fixtures import debian_python, fake_nvml_dir, make_fake_host, probe_reports  # noqa: F401
from uvkernel.preflight import policy
from uvkernel.preflight.runner import PROBE


@pytest.fixture(scope="module")
def replay_host(tmp_path_factory, uv_bin, debian_python):
    return make_fake_host(tmp_path_factory.mktemp("replay") / "host", uv_bin, debian_python)


def test_fake_torch_is_a_real_distribution(replay_host, uv_bin):
    code = ("import importlib.metadata as m, json; d = m.distribution('torch'); "
            "print(json.dumps([d.version, d.read_text('INSTALLER'), len(d.files)]))")
    version, installer, files = json.loads(subprocess.run([str(replay_host.python), "-c", code], capture_output=True,
                                                          text=True, check=True).stdout)
    assert version == "2.13.0+cu124" and installer.strip() == "uvkernel-tests" and files > 5
    listed = subprocess.run([uv_bin, "pip", "list", "--python", str(replay_host.python), "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    assert {"name": "torch", "version": "2.13.0+cu124"} in json.loads(listed)
    # uv checks RECORD's hashes when it uninstalls; a dry-run uninstall reads the whole RECORD
    done = subprocess.run([uv_bin, "pip", "uninstall", "--dry-run", "--python", str(replay_host.python), "torch"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _probe(python: Path, env: dict[str, str]) -> tuple[dict, dict]:
    config = {"packages": ["torch"], "deep": True, "deep_packages": ["torch"], "init_cuda": True}
    done = subprocess.run([str(python), str(PROBE), json.dumps(config)], capture_output=True, text=True, env=env,
                          timeout=120)
    out = probe_reports(done.stdout)
    assert "done" in out, done.stderr
    return out["cheap"], out["deep"]


def _scrubbed() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("UVKERNEL_FAKE", "CUDA_", "LD_LIBRARY"))}


def _made_now(host, nvml_dir: Path, tmp: Path) -> dict:
    """A recording of the fakes in a rich state (MIG, UUID selection, cuDNN, arch list), made by the real probe."""
    gpus = [nvml.gpu(name="NVIDIA A100-SXM4-40GB", uuid="GPU-0a0a0a0a-1111", capability="8.0",
                     memory_total=40960 * 2 ** 20),
            nvml.gpu(name="NVIDIA H100 80GB HBM3", uuid="GPU-0b0b0b0b-2222", capability="9.0", mig=True,
                     mig_devices=[("MIG-0c0c0c0c-3333", "1g.10gb")])]
    env = {**_scrubbed(), "LD_LIBRARY_PATH": str(nvml_dir), "CUDA_VISIBLE_DEVICES": "GPU-0b0b,GPU-0a0a",
           **nvml.behaviour(gpus, driver="550.127.05", cuda="12.4"),
           **fake_torch.behaviour(devices=[{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0",
                                            "uuid": "0b0b0b0b-2222", "total_memory": 85_000_000_000,
                                            "multi_processor_count": 132},
                                           {"name": "NVIDIA A100-SXM4-40GB", "capability": "8.0",
                                            "uuid": "0a0a0a0a-1111", "total_memory": 42_000_000_000,
                                            "multi_processor_count": 108}],
                                  arch_list=["sm_80", "sm_90"], cudnn=90100)}
    dev = tmp / "recorded-dev"
    dev.mkdir()
    for node in ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1", "nvidia-caps"):
        (dev / node).write_text("")
    env["UVKERNEL_PROBE_DEV_DIR"] = str(dev)
    cheap, deep = _probe(host.python, env)
    return recording.make(cheap, deep, by="test_preflight_doubles.py (fakes, not a real GPU)")


def test_recordings_replay(replay_host, fake_nvml_dir, tmp_path):
    recordings = [("made now from the fakes", _made_now(replay_host, fake_nvml_dir, tmp_path))]
    recordings += [(p.name, recording.load(p)) for p in sorted(recording.FOLDER.glob("*.json"))]
    ctx = policy.Context(mode="auto", required=["torch"], min_gpus=0, allow_shadowing=[], host_python="host",
                         project="proj")
    try:
        for name, rec in recordings:
            build, environ = recording.fakes_for(rec, tmp_path / f"dev-{len(name)}")
            fake_torch.set_build(replay_host.site_packages, build["version"], build["cuda"], build["hip"])
            cheap, deep = _probe(replay_host.python, {**_scrubbed(), "LD_LIBRARY_PATH": str(fake_nvml_dir),
                                                      **environ})
            assert recording.comparable(cheap, deep) == recording.comparable(rec["cheap"], rec["deep"]), name
            recorded = policy.evaluate(rec["cheap"], rec["deep"], ctx)
            replayed = policy.evaluate(cheap, deep, ctx)
            assert [f.code for f in replayed.failures] == [f.code for f in recorded.failures], name
            assert replayed.notices == recorded.notices, name
    finally:
        fake_torch.set_build(replay_host.site_packages, "2.13.0+cu124", "12.4")


def test_recording_file_round_trip(tmp_path):
    rec = recording.make({"torch": {"version": "x"}}, {"imports": {}}, by="test")
    path = recording.save(rec, tmp_path / "r.json")
    assert recording.load(path) == json.loads(path.read_text())
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a uvkernel-probe-recording/1 file"):
        recording.load(tmp_path / "bad.json")
