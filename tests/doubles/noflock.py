"""Build the no-flock LD_PRELOAD library (a TEST DOUBLE standing in for NFS without lockd) with gcc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("noflock.c")


def build(folder: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing: run scripts/setup.sh --e2e (it installs gcc for the test doubles)")
    target = folder / "libnoflock.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(target), str(SOURCE), "-ldl"], check=True)
    return target
