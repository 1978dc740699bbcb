"""Shared by the dependency tests: the CPU torch wheel, env listings, running the pipeline and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from uvkernel.env.protection import is_stack_package
from uvkernel.shared import canonical

TORCH_VERSION = "2.13.0"
WHEEL_DIR = REPO / ".whl"  # ignored by git; pip copies the wheel from its find-links once per machine


def torch_wheel_file(host_python: str) -> Path:
    """The host's CPU torch wheel, as ``pip download --no-deps torch==X`` yields it (no network on this kind of
    machine: pip's find-links holds it).  Fails loudly when it cannot be had."""
    from filelock import FileLock

    WHEEL_DIR.mkdir(exist_ok=True)
    with FileLock(str(WHEEL_DIR / ".download.lock")):  # xdist workers: one download, nobody sees half a file
        found = sorted(WHEEL_DIR.glob(f"torch-{TORCH_VERSION}*.whl"))
        if not found:
            done = subprocess.run([host_python, "-m", "pip", "download", "-q", "--no-deps",
                                   f"torch=={TORCH_VERSION}", "-d", str(WHEEL_DIR)],
                                  capture_output=True, text=True, timeout=1200)
            found = sorted(WHEEL_DIR.glob(f"torch-{TORCH_VERSION}*.whl"))
            if done.returncode != 0 or not found:
                pytest.fail(f"could not get the torch {TORCH_VERSION} wheel with pip download:\n"
                            f"{done.stderr[-2000:]}", pytrace=False)
    return found[0]


def site_packages(env: Path) -> Path:
    found = sorted(env.glob("lib/python3*/site-packages"))
    assert found, f"{env} has no site-packages"
    return found[0]


def dists(env: Path) -> dict[str, str]:
    """canonical name -> version of what the env itself holds (its own dist-info folders)."""
    from importlib import metadata

    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(site_packages(env))])}


def host_dists(python: str) -> dict[str, str]:
    code = ("import json; from importlib import metadata as m; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    return {canonical(k): v for k, v in json.loads(out).items()}


def assert_no_stack(env: Path) -> None:
    """No torch, nvidia-*, triton, cuda-* distribution and no torch package folder in the env."""
    stack = sorted(n for n in dists(env) if is_stack_package(n))
    assert not stack, f"the env holds host-stack wheels: {stack}"
    assert not (site_packages(env) / "torch").exists()
    assert not list(site_packages(env).glob("nvidia*"))


def uv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import uv as uv_pkg

    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([uv_pkg.find_uv_bin(), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)
    assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def cli(*args: str, check: bool | None = None) -> subprocess.CompletedProcess:
    """``uvkernel ARGS`` as a user runs it (its own process)."""
    done = subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=900)
    if check is not None:
        assert (done.returncode == 0) == check, f"uvkernel {' '.join(args)} -> {done.returncode}\n" \
                                                f"{done.stdout}\n{done.stderr}"
    return done
