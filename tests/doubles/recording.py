"""Probe recordings: the probe's JSON from a real machine, replayed through the fakes.

Format (one JSON file per machine in tests/doubles/recordings/, written by the GPU tests with --gpu and
UVKERNEL_RECORD=1):

    {
      "format": "uvkernel-probe-recording/1",
      "recorded": {"date": ISO-8601, "uvkernel": version, "by": test id, "note": free text},
      "cheap": <the probe's "cheap" report>,     # as src/uvkernel/preflight/probe.py prints it
      "deep":  <the probe's "deep" report>
    }

``fakes_for`` turns a recording into the fake torch's build + behaviour, the fake NVML's behaviour, the
device-node stand-ins and CUDA_VISIBLE_DEVICES; running the real probe under them must give back the same
``comparable`` facts.  That is what keeps the fakes honest against a real GPU stack.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any, Mapping

from . import fake_torch, nvml

FORMAT = "uvkernel-probe-recording/1"
FOLDER = Path(__file__).with_name("recordings")


def make(cheap: Mapping[str, Any], deep: Mapping[str, Any] | None, by: str, note: str = "") -> dict[str, Any]:
    from uvkernel import __version__

    return {"format": FORMAT,
            "recorded": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                         "uvkernel": __version__, "by": by, "note": note},
            "cheap": dict(cheap), "deep": dict(deep or {})}


def save(recording: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recording, indent=1, sort_keys=True) + "\n")
    return path


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    return data


def _message(error: str | None) -> str | None:
    """'RuntimeError: text' -> 'text' (the fakes raise their own exception type)."""
    if not error:
        return None
    last = error.strip().splitlines()[-1]
    return re.sub(r"^[A-Za-z_.]+(Error|Exception|Warning): ", "", last)


def fakes_for(recording: Mapping[str, Any], dev_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(fake torch build for fake_torch.install/set_build, environment for the kernel)."""
    cheap, deep = recording["cheap"], recording.get("deep") or {}
    build = cheap.get("torch") or {}
    torch_build = {"version": build.get("version"), "cuda": build.get("cuda"), "hip": build.get("hip")}
    deep_torch = deep.get("torch") or {}
    behaviour: dict[str, Any] = {
        "devices": [{k: d.get(k) for k in ("name", "capability", "total_memory", "multi_processor_count", "uuid")}
                    for d in deep_torch.get("devices") or []],
        "arch_list": deep_torch.get("arch_list") or [],
        "cudnn": deep_torch.get("cudnn"),
    }
    imported = (deep.get("imports") or {}).get("torch") or {}
    if imported and not imported.get("ok"):
        behaviour["import_error"] = _message(imported.get("error"))
    if deep_torch.get("cuda_init") == "failed":
        behaviour["init_error"] = _message(deep_torch.get("cuda_init_error"))
    for d in deep_torch.get("devices") or []:
        if d.get("smoke") not in (None, "ok"):
            behaviour["kernel_error"] = _message(d["smoke"])
    environ = dict(fake_torch.behaviour(**behaviour))
    facts = cheap.get("nvml") or {}
    if facts.get("loaded"):
        devices = [nvml.gpu(name=d.get("name") or "", uuid=d.get("uuid") or "", capability=d.get("capability") or "0.0",
                            mig=bool(d.get("mig")), memory_total=int(d.get("memory_total") or 0),
                            minor_number=d.get("minor_number"),
                            mig_devices=[(m.get("uuid"), m.get("name")) for m in d.get("mig_devices") or []])
                   for d in facts.get("devices") or []]
        environ.update(nvml.behaviour(devices, driver=facts.get("driver_version") or "",
                                      cuda=facts.get("cuda_driver_version") or "0.0",
                                      init_error=int(facts.get("init_error") or 0)))
    dev_dir.mkdir(parents=True, exist_ok=True)
    for name in (cheap.get("device_files") or {}).get("present") or []:
        (dev_dir / name).write_text("device node stand-in\n")
    environ["UVKERNEL_PROBE_DEV_DIR"] = str(dev_dir)
    cvd = (cheap.get("visible") or {}).get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        environ["CUDA_VISIBLE_DEVICES"] = cvd
    return torch_build, environ


def comparable(cheap: Mapping[str, Any], deep: Mapping[str, Any] | None) -> dict[str, Any]:
    """The facts a replay must reproduce (paths, timings and identity left out)."""
    build = cheap.get("torch") or {}
    nvml_facts = {k: v for k, v in (cheap.get("nvml") or {}).items() if k not in ("library", "error")}
    deep = deep or {}
    torch = {k: v for k, v in (deep.get("torch") or {}).items() if k not in ("file",)}
    if "cuda_init_error" in torch:
        torch["cuda_init_error"] = _message(torch["cuda_init_error"])
    torch["devices"] = [{**d, "smoke": d["smoke"] if d.get("smoke") in (None, "ok") else _message(d["smoke"])}
                        for d in torch.get("devices") or []]
    imports = {name: {"ok": i.get("ok"), "error": _message(i.get("error"))}
               for name, i in (deep.get("imports") or {}).items()}
    return {"torch_build": {k: build.get(k) for k in ("version", "cuda", "hip", "build")},
            "nvml": nvml_facts, "visible": cheap.get("visible"),
            "device_files": sorted((cheap.get("device_files") or {}).get("present") or []),
            "deep_torch": torch, "imports": imports}
