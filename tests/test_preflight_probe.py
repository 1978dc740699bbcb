"""The probe on its own: its CUDA_VISIBLE_DEVICES reading against the real torch's, its NVML reading against
the real torch's NVML helpers (both through the fake libnvidia-ml.so.1), old and new Pythons, its speed, and
what it reports about the notebook's folder."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from doubles import nvml
from doubles.fixtures import fake_nvml_dir  # noqa: F401
from uvkernel.preflight import probe
from uvkernel.preflight.runner import PROBE

# Inputs torch's parser sees in the wild, and the odd ones that show its exact semantics.
CVD_INPUTS = [
    None, "", "0", "1", "0,1", "1,0", " 0, 1", "0 ,1 ", "-1", "0,-1,1", "0,0", "1,0,1", "NoDevFiles", "nodevfiles",
    "1,foo", "foo,1", "1gpu2,2ampere", "+1", "-0", "+", "-", "0,+", "1,-x", "²", "٣", "0,,1", ",0", "0,", "00,0",
    "7", "0,7,1", "3,2,1,0", "GPU-", "GPU-abc", "GPU-abc,GPU-def", "GPU-abc,GPU-abc", "GPU-abc,1", "GPU-abc, GPU-def",
    " GPU-abc", "gpu-abc", "MIG-abc", "MIG-abc,MIG-def", "MIG-abc,GPU-def", "MIG-a,MIG-a", "0,GPU-abc", "\t2",
]

_TORCH_PARSER = r"""
import json, os, sys
import torch.cuda as c
out = []
for value in json.loads(sys.argv[1]):
    if value is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        out.append(["ok", c._parse_visible_devices()])
    except Exception as exc:
        out.append(["raises", type(exc).__name__])
print(json.dumps(out))
"""


def _ours(value):
    kind, parsed = probe.parse_visible_devices(value)
    if kind == "invalid":
        return ["raises", "ValueError"]
    if kind == "unset":
        return ["ok", list(range(64))]  # torch's spelling of "every device"
    return ["ok", parsed]


def test_cuda_visible_devices_parser_matches_real_torch(host_python):
    done = subprocess.run([host_python, "-I", "-c", _TORCH_PARSER, json.dumps(CVD_INPUTS)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    mismatches = [(v, t, _ours(v)) for v, t in zip(CVD_INPUTS, theirs) if t != _ours(v)]
    assert not mismatches, mismatches
    assert ["raises", "ValueError"] in theirs  # the table does reach torch's error branch


_TORCH_NVML = r"""
import json, os, sys
import torch.cuda as c
out = []
for value in json.loads(sys.argv[1]):
    if value is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = value
    out.append(c._device_count_nvml())
print(json.dumps({"counts": out, "uuids": c._raw_device_uuid_nvml()}))
"""

FAKE_GPUS = [nvml.gpu(uuid="GPU-aaaa1111-0000-0000-0000-000000000000"),
             nvml.gpu(uuid="GPU-aaaa2222-0000-0000-0000-000000000000"),
             nvml.gpu(uuid="GPU-bbbb3333-0000-0000-0000-000000000000")]
NVML_INPUTS = [None, "", "0", "2", "0,1,2", "0,1,2,3", "3", "1,3,0", "2,0", "0,0", "-1", "GPU-aaaa1111",
               "GPU-aaaa", "GPU-bbbb", "GPU-bbbb,GPU-aaaa2", "GPU-bbbb,GPU-cccc,GPU-aaaa1", "GPU-aaaa1,GPU-aaaa1",
               "GPU-aaaa1,GPU-aaaa", "GPU-", "GPU-bbbb3333-0000-0000-0000-000000000000"]


def test_visible_device_count_matches_real_torch_with_nvml(host_python, fake_nvml_dir):
    """torch's own NVML-based count, through the fake libnvidia-ml.so.1, equals the probe's."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_dir), **nvml.behaviour(FAKE_GPUS)}
    done = subprocess.run([host_python, "-I", "-c", _TORCH_NVML, json.dumps(NVML_INPUTS)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs["uuids"] == [g["uuid"] for g in FAKE_GPUS]  # torch read the fake library
    # ours, end to end: the probe reads the same fake library and applies the mask
    ours = []
    for value in NVML_INPUTS:
        run_env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
        if value is not None:
            run_env["CUDA_VISIBLE_DEVICES"] = value
        facts = run_probe(host_python, {}, env=run_env)["cheap"]
        assert [d["uuid"] for d in facts["nvml"]["devices"]] == theirs["uuids"]
        ours.append(facts["visible"]["count"])
    assert ours == theirs["counts"], list(zip(NVML_INPUTS, theirs["counts"], ours))


def run_probe(python: str, config: dict, env: dict | None = None, cwd: str | None = None) -> dict:
    done = subprocess.run([python, str(PROBE), json.dumps(config)], capture_output=True, text=True,
                          env=env or dict(os.environ), cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.splitlines():
        mark, kind, payload = line.split(" ", 2)
        assert mark == probe.MARK
        if kind != "stage":
            out[kind] = json.loads(payload)
    return out


def _pyenv(version: str) -> str:
    path = Path(f"/root/.pyenv/versions/{version}/bin/python3")
    if not path.exists():
        pytest.fail(f"{path} is missing: the probe must run on old and new Pythons (this machine kind has pyenv "
                    "3.6 to 3.13)", pytrace=False)
    return str(path)


@pytest.mark.parametrize("version", ["3.6.15", "3.13.0"])
def test_probe_runs_on_old_and_new_pythons(version, fake_nvml_dir, tmp_path):
    python = _pyenv(version)
    (tmp_path / "torch.py").write_text("raise SystemExit('the probe must never import this')\n")
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_dir), "CUDA_VISIBLE_DEVICES": "GPU-bbbb,GPU-aaaa2",
           **nvml.behaviour(FAKE_GPUS, driver="560.35.03", cuda="12.6")}
    out = run_probe(python, {"packages": ["torch", "json"], "notebook_dir": str(tmp_path)}, env=env,
                    cwd=str(tmp_path))
    facts = out["cheap"]
    assert facts["python"]["version"] == version
    assert facts["nvml"]["driver_version"] == "560.35.03" and facts["nvml"]["cuda_driver_version"] == "12.6"
    assert facts["visible"]["devices"] == [2, 1]
    assert facts["packages"]["torch"]["origin"] == "missing"
    assert facts["local_shadows"] == [{"package": "torch", "path": str(tmp_path / "torch.py")}]
    assert facts["errors"] == []
    assert "done" in out


def test_cheap_layer_is_fast(host_python):
    """Tens of ms per start: measured here, inside the probe and for the whole process."""
    import time

    config = {"packages": ["torch", "ipykernel"]}
    inside, wall = [], []
    for _ in range(7):
        started = time.perf_counter()
        out = run_probe(host_python, config)
        wall.append((time.perf_counter() - started) * 1000)
        inside.append(out["cheap"]["timings"]["cheap_ms"])
    print(f"\ncheap layer inside the probe: min {min(inside):.1f} ms, median {statistics.median(inside):.1f} ms; "
          f"whole probe process: min {min(wall):.0f} ms, median {statistics.median(wall):.0f} ms")
    assert min(inside) < 100, inside
    assert min(wall) < 1000, wall


def test_what_shadows_in_the_notebook_folder(host_python, tmp_path):
    # a module file and a regular package shadow; a bare folder (namespace portion) does not
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "torch.py").write_text("")
    (tmp_path / "b" / "torch").mkdir(parents=True)
    (tmp_path / "b" / "torch" / "__init__.py").write_text("")
    (tmp_path / "c" / "torch").mkdir(parents=True)
    (tmp_path / "c" / "torch" / "notes.txt").write_text("")
    found = {}
    for sub in "abc":
        folder = str(tmp_path / sub)
        found[sub] = run_probe(host_python, {"packages": ["torch"], "notebook_dir": folder},
                               cwd=folder)["cheap"]["local_shadows"]
    assert found["a"] == [{"package": "torch", "path": str(tmp_path / "a" / "torch.py")}]
    assert found["b"] == [{"package": "torch", "path": str(tmp_path / "b" / "torch")}]
    assert found["c"] == []
    # and that is what the kernel would do: the real interpreter with the folder first on sys.path
    for sub, shadowed in (("a", True), ("b", True), ("c", False)):
        folder = str(tmp_path / sub)
        where = subprocess.run([host_python, "-c", "import importlib.util as u; print(u.find_spec('torch').origin)"],
                               cwd=folder, capture_output=True, text=True, timeout=300).stdout.strip()
        assert where.startswith(folder) == shadowed, (sub, where)


def test_copies_and_origins(host_python, tmp_path):
    """A PYTHONPATH copy of a package wins over the host's: resolved 'other', host copy still listed."""
    (tmp_path / "ipykernel").mkdir()
    (tmp_path / "ipykernel" / "__init__.py").write_text("")
    site = subprocess.run([host_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    facts = run_probe(host_python, {"packages": ["ipykernel"], "host_site_packages": [site], "env": "/nonexistent"},
                      env=env)["cheap"]
    info = facts["packages"]["ipykernel"]
    assert info["origin"] == "other" and info["location"] == str(tmp_path / "ipykernel")
    assert info["host_copy"] == os.path.join(site, "ipykernel")
    assert [c["origin"] for c in info["copies"]] == ["other", "host"]
    assert info["copies"][1]["version"]  # read from the dist-info folder name
    assert facts["environment"]["PYTHONPATH"] == str(tmp_path)


def test_probe_is_stdlib_only():
    """Nothing but the standard library is imported by the probe's source."""
    import ast

    tree = ast.parse(PROBE.read_text())
    names = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    stdlib = set(sys.stdlib_module_names)
    assert names and names <= stdlib, names - stdlib
