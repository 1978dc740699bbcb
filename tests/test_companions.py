"""Torch companions: env packages built against torch must load on the host's torch.

The mismatch case is the real torchvision 0.28.0 from PyPI on the real ``2.13.0+cpu`` host: its compiled ops
link libc10_cuda/libtorch_cuda, which a CPU build does not have.  The passing and cache cases use small real
wheels this file builds (a package that requires torch and really imports it), installed by real uv.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

from deps_support import cli, uv
from helpers import make_project
from index_support import torch_linked_object

from uvkernel.preflight import probe

TORCHVISION = "torchvision==0.28.0"


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str | bytes], requires: list[str]) -> Path:
    """A minimal, valid pure-python wheel (METADATA, WHEEL, top_level.txt, RECORD with hashes)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = "\n".join(meta) + "\n"
    contents[f"{dist_info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: uvkernel-tests\nRoot-Is-Purelib: true\n" \
                                     "Tag: py3-none-any\n"
    contents[f"{dist_info}/top_level.txt"] = "\n".join(sorted({p.split("/")[0] for p in files})) + "\n"
    record = []
    for path, text in contents.items():
        data = text if isinstance(text, bytes) else text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def _pip_install(env: Path, *args: str) -> None:
    uv("pip", "install", "-q", "--python", str(env / "bin" / "python"), "--no-deps", *args)


def _check(project: Path, host_python: str, *extra: str):
    done = cli("check", str(project), "--host-python", host_python, "--json", *extra)
    report = json.loads(done.stdout)
    return done.returncode, report


def _companion(report: dict, name: str) -> dict:
    found = [c for c in report["preflight"]["facts"].get("companions") or [] if c["name"] == name]
    assert found, f"{name} was not found as a companion: {report['preflight']['facts'].get('companions')}"
    return found[0]


def test_real_pypi_torchvision_on_the_cpu_host_is_refused_with_the_fix(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["pillow"])
    code, report = _check(project, host_python)
    assert code == 0, report["message"]
    env = project / ".venv"
    _pip_install(env, TORCHVISION)  # as `uv add torchvision` (PyPI's build) would bring it

    code, report = _check(project, host_python)
    assert code == 1
    error = report["error"]
    assert error["code"] == "COMPANION_BUILD_MISMATCH", report["message"]
    message = report["message"]
    # the package, its version and build; the host's torch and build; the exact fix
    assert "torchvision 0.28.0 in the env" in message
    assert "cp311-cp311-manylinux_2_28_x86_64" in message and "no local version" in message
    assert "host's torch 2.13.0+cpu (build +cpu)" in message
    assert "libc10_cuda.so" in message  # why: the wheel's ops link CUDA parts of torch that a CPU build lacks
    assert (f"`uv pip install --python {env}/bin/python --no-deps --index-url https://download.pytorch.org/whl/cpu "
            "'torchvision==0.28.0+cpu'`") in message
    assert "allow_companion_mismatch" in message and "allow_shadowing" not in error["fix"]
    assert "[tool.uv.sources]" in message
    # part 4: the report's companion facts
    tv = _companion(report, "torchvision")
    assert tv["version"] == "0.28.0" and tv["wheel_tags"] == ["cp311-cp311-manylinux_2_28_x86_64"]
    assert tv["requires_torch"] == "torch==2.13.0"
    assert "torchvision/_C.so" in tv["links_torch"]
    loaded = report["preflight"]["facts"]["deep"]["companions"]["torchvision"]
    assert loaded["ok"] is False
    assert any(s["step"] == "import torchvision" and "torchvision::nms" in s["error"] for s in loaded["steps"])

    text = cli("check", str(project), "--host-python", host_python).stdout
    assert "companions" in text and "loaded: NO" in text and "requires torch==2.13.0" in text


def test_companion_allowed_by_name_in_tool_uvkernel_starts_and_says_so(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["pillow"],
                           extra='\n[tool.uvkernel]\nallow_companion_mismatch = ["torchvision"]\n')
    code, report = _check(project, host_python)
    assert code == 0, report["message"]
    _pip_install(project / ".venv", TORCHVISION)
    code, report = _check(project, host_python)
    assert code == 0, report["message"]
    assert any("torchvision 0.28.0 was not loaded: allowed by allow_companion_mismatch" in n
               for n in report["preflight"]["notices"])
    assert "torchvision" not in (report["preflight"]["facts"].get("deep") or {}).get("companions", {})
    assert report["settings"]["allow_companion_mismatch"] == {
        "value": ["torchvision"], "from": f"[tool.uvkernel] in {project}/pyproject.toml"}
    text = cli("check", str(project), "--host-python", host_python).stdout
    assert "loaded: not checked" in text and "[tool.uvkernel] in" in text


def test_a_companion_that_loads_passes_and_its_verdict_is_cached_per_env(tmp_path, host_python):
    wheels = tmp_path / "wheels"
    linked = torch_linked_object(tmp_path / "so", host_python)  # what makes it a companion: it links libc10
    good = make_wheel(wheels, "torchbuddy", "0.1", {
        "torchbuddy/__init__.py": "import torch\nVALUE = int(torch.ones(3).sum())\nassert VALUE == 3\n",
        "torchbuddy/_C.so": linked},
        ["torch>=2.0"])
    bad = make_wheel(wheels, "torchbuddy", "0.2", {
        "torchbuddy/__init__.py": "raise ImportError('torchbuddy 0.2 was built for torch 9')\n",
        "torchbuddy/_C.so": linked}, ["torch>=2.0"])

    # a plain project first: its deep result goes to the per-host cache entry
    plain = make_project(tmp_path / "plain", [])
    code, report = _check(plain, host_python)
    assert code == 0 and report["preflight"]["deep"] == "ran", report["message"]
    code, report = _check(make_project(tmp_path / "plain2", []), host_python)
    assert report["preflight"]["deep"] == "cached"  # another env without companions reuses it (as before)

    project = make_project(tmp_path / "proj", [])
    _check(project, host_python)
    env = project / ".venv"
    _pip_install(env, str(good))
    code, report = _check(project, host_python)
    assert code == 0, report["message"]
    assert report["preflight"]["deep"] == "ran"  # the per-host entry is not the companion's verdict
    buddy = _companion(report, "torchbuddy")
    assert buddy["requires_torch"] == "torch>=2.0" and buddy["links_torch"] == ["torchbuddy/_C.so"]
    assert buddy["wheel_tags"] == ["py3-none-any"]
    assert report["preflight"]["facts"]["deep"]["companions"]["torchbuddy"]["ok"] is True
    assert "loaded: yes" in cli("check", str(project), "--host-python", host_python).stdout

    code, report = _check(project, host_python)  # nothing changed: nothing is loaded again
    assert code == 0 and report["preflight"]["deep"] == "cached"
    assert report["preflight"]["facts"]["deep"]["companions"]["torchbuddy"]["ok"] is True

    _pip_install(env, str(bad))  # the companion's files change: the verdict is made again
    code, report = _check(project, host_python)
    assert code == 1 and report["preflight"]["deep"] == "ran"
    assert report["error"]["code"] == "COMPANION_BUILD_MISMATCH"
    assert "torchbuddy 0.2" in report["message"] and "built for torch 9" in report["message"]
    assert "'torchbuddy==0.2+cpu'" in report["message"]


def test_elf_needed_reads_the_dynamic_section_of_real_libraries(host_python):
    import subprocess

    torch_dir = Path(subprocess.run([host_python, "-I", "-c", "import torch, os; print(os.path.dirname(torch.__file__))"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    needed = probe.elf_needed(str(torch_dir / "lib" / "libtorch_cpu.so"))
    assert "libc10.so" in needed
    assert probe.elf_needed(str(torch_dir / "__init__.py")) == []
    python_lib = [p for p in (torch_dir / "lib").iterdir() if p.name.startswith("libtorch_python")]
    assert python_lib and "libtorch.so" in probe.elf_needed(str(python_lib[0]))


def test_torch_requirement_reading():
    text = "Metadata-Version: 2.1\nName: x\nRequires-Dist: numpy\nRequires-Dist: torch (==2.13.0)\n\nbody"
    assert probe._torch_requirement(text) == "torch==2.13.0"
    assert probe._torch_requirement("Requires-Dist: torchvision>=0.2\n") is None
    assert probe._torch_requirement("Requires-Dist: torch>=2; extra == 'gpu'\n") is None
    assert probe._torch_requirement("Requires-Dist: torch>=2 ; python_version >= '3.9'\n") is not None



def test_a_companion_that_kills_the_probe_is_a_companion_mismatch(tmp_path, host_python):
    crash = make_wheel(tmp_path / "wheels", "torchcrash", "1.0", {
        "torchcrash/__init__.py": "import os, signal, torch\nos.kill(os.getpid(), signal.SIGSEGV)\n",
        "torchcrash/_C.so": torch_linked_object(tmp_path / "so", host_python)}, ["torch"])
    project = make_project(tmp_path / "proj", [])
    _check(project, host_python)
    _pip_install(project / ".venv", str(crash))
    code, report = _check(project, host_python)
    assert code == 1 and report["error"]["code"] == "COMPANION_BUILD_MISMATCH", report["message"]
    assert "torchcrash 1.0" in report["message"] and "the process died while loading it" in report["message"]
    assert "SIGSEGV" in report["message"]
