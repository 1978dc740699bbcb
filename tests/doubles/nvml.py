"""Build the fake libnvidia-ml.so.1 (a TEST DOUBLE) with gcc, and write its behaviour variable.

    build(folder)            -> folder holding libnvidia-ml.so.1 (put it on LD_LIBRARY_PATH)
    behaviour(devices=[...]) -> {"UVKERNEL_FAKE_NVML": "..."}   (format: fake_nvml.c)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

SOURCE = Path(__file__).with_name("fake_nvml.c")
ENV_VAR = "UVKERNEL_FAKE_NVML"
LIBRARY = "libnvidia-ml.so.1"


def build(folder: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing: run scripts/setup.sh --e2e (it installs gcc for the fake NVML library)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(folder / LIBRARY), str(SOURCE)],
                   check=True, capture_output=True, text=True)
    return folder


def gpu(name: str = "NVIDIA A100-SXM4-80GB", uuid: str = "GPU-11111111-2222-3333-4444-555555555555",
        capability: str = "8.0", mig: bool = False, memory_total: int = 81920 * 2 ** 20,
        minor_number: int | None = None, mig_devices: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """One GPU as NVML reports it; mig_devices: (uuid, name) of its MIG instances."""
    return {"name": name, "uuid": uuid, "capability": capability, "mig": mig, "memory_total": memory_total,
            "minor_number": minor_number, "mig_devices": list(mig_devices)}


def behaviour(devices: Iterable[dict[str, Any]] = (), driver: str = "550.54.15", cuda: str = "12.4",
              init_error: int = 0, hang: bool = False) -> dict[str, str]:
    major, minor = (int(x) for x in cuda.split("."))
    items = [f"init={init_error}", f"driver={driver}", f"cuda={major * 1000 + minor * 10}"]
    if hang:
        items.append("hang=1")
    migs = []
    for index, d in enumerate(devices):
        cap_major, cap_minor = d["capability"].split(".")
        minor_number = index if d.get("minor_number") is None else d["minor_number"]
        items.append(f"dev={d['name']},{d['uuid']},{cap_major},{cap_minor},{int(bool(d.get('mig')))},"
                     f"{d.get('memory_total', 81920 * 2 ** 20)},{minor_number}")
        migs += [f"mig={index},{uuid},{name}" for uuid, name in d.get("mig_devices") or []]
    return {ENV_VAR: ";".join(items + migs)}
