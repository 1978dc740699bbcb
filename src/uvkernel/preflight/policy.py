"""Facts + settings -> failures (stable codes) and notices.  Pure functions, no I/O.

``require_cuda``:
  * ``false``: no CUDA check at all;
  * ``true``: CUDA must work;
  * ``auto`` (default): a GPU is expected when the host torch is a CUDA build and the driver sees a device
    (or, when NVML itself fails, ``/dev/nvidia<N>`` device nodes exist: a GPU machine with a broken driver);
    otherwise the kernel starts on the CPU and the report says why.
  ``min_gpus`` > 0 expects a GPU whatever ``auto`` would decide.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from packaging.requirements import Requirement
from packaging.version import Version

from ..torch_builds import index_for, variant
from ..errors import notice
from ..shared import canonical
from .result import Failure

if TYPE_CHECKING:  # types only: the preflight imports nothing of the stages that hand it these
    from ..settings import UvKernelSettings


@dataclass
class Context:
    mode: str  # auto | true | false
    required: list[str]
    min_gpus: int
    allow_shadowing: list[str]
    host_python: str
    project: str  # folder for commands in messages (the project root, else the notebook's folder)
    allow_companion_mismatch: list[str] = field(default_factory=list)
    companion_index: str = ""  # "" : derived from the host torch's local version
    env_python: str = ""

    @classmethod
    def from_settings(cls, settings: UvKernelSettings, *, host_python: str, project: str, env_python: str = "") -> "Context":
        return cls(mode=settings.require_cuda_mode, required=list(settings.required_packages),
                   min_gpus=int(settings.min_gpus), allow_shadowing=list(settings.allow_shadowing),
                   host_python=host_python, project=project,
                   allow_companion_mismatch=list(getattr(settings, "allow_companion_mismatch", [])),
                   companion_index=str(getattr(settings, "companion_index", "") or ""), env_python=env_python)


@dataclass
class Verdict:
    failures: list[Failure] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    gpu_expected: bool = False
    why: str = ""  # why a GPU is (or is not) expected

    def fail(self, code: str, facts: list[tuple[str, Any]] | None = None, detail: str = "", **fields: Any) -> None:
        if not any(f.code == code and f.fields.get("package") == fields.get("package") for f in self.failures):
            self.failures.append(Failure(code, fields, list(facts or []), detail))


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    parts = re.findall(r"\d+", str(text))[:2]
    return tuple(int(p) for p in parts) if parts else None


def _shown(value: Any) -> str:
    return "(unset)" if value is None else repr(value)


def _copies(info: Mapping[str, Any]) -> str:
    return "; ".join(f"{c['location']} [{c['origin']}]" for c in info.get("copies") or []) or "none"


# --- cheap layer --------------------------------------------------------------------------------------
def check_packages(facts: Mapping[str, Any], ctx: Context, verdict: Verdict) -> None:
    packages = facts.get("packages") or {}
    allowed = {canonical(n) for n in ctx.allow_shadowing}
    for name in ctx.required:
        info = packages.get(name) or {"origin": "missing", "copies": []}
        origin = info.get("origin")
        listing = [("resolves to", info.get("location") or "nothing"), ("every copy on sys.path", _copies(info))]
        if origin == "error":
            verdict.fail("PROBE_FAILED", listing, detail=info.get("error", ""), project=ctx.project,
                         detail_line=f"finding {name} failed")
        elif origin == "missing":
            verdict.fail("TORCH_NOT_FOUND", [("host interpreter", ctx.host_python)] + listing, package=name,
                         host_python=ctx.host_python, elsewhere="")
        elif origin == "host":
            continue
        elif canonical(name) in allowed or "*" in allowed:
            verdict.notices.append(notice("SHADOWING_ALLOWED", name=name, location=info["location"], origin=origin))
        elif not info.get("host_copy"):
            verdict.fail("TORCH_NOT_FOUND", [("host interpreter", ctx.host_python)] + listing, package=name,
                         host_python=ctx.host_python,
                         elsewhere=f" (the kernel would import a copy from {origin}: {info['location']})")
        else:
            remedy = {
                "env": f"remove the env's copy and keep the host's: uvkernel unshadow {ctx.project}",
                "user": f"remove the user-site copy: {ctx.host_python} -m pip uninstall --user {name} "
                        "(or keep PYTHONNOUSERSITE=1 in the kernel's environment)",
            }.get(str(origin), f"remove {info['location']} from PYTHONPATH (or from the .pth file that adds it)")
            verdict.fail("TORCH_SHADOWED", listing + [("origin of that copy", origin),
                                                      ("host copy", info["host_copy"])],
                         package=name, found=info["location"], origin=origin, host=info["host_copy"], remedy=remedy)
    ipk = packages.get("ipykernel")
    if ipk is not None and ipk.get("origin") == "missing":
        verdict.fail("IPYKERNEL_MISSING", [("every copy on sys.path", _copies(ipk))], host_python=ctx.host_python)
    for shadow in facts.get("local_shadows") or []:
        name = shadow["package"]
        if name in ctx.required or name == "ipykernel":
            folder = facts.get("notebook_dir", "")
            verdict.fail("LOCAL_MODULE_SHADOWS", [("notebook folder", folder), ("file", shadow["path"])],
                         package=name, path=shadow["path"], folder=folder)


def check_nvidia_shadowing(facts: Mapping[str, Any], ctx: Context, verdict: Verdict) -> None:
    """An env copy of an nvidia-* wheel the host also has: torch loads the env's library first."""
    dists = facts.get("nvidia_distributions") or []
    host = {d["name"]: d for d in dists if d.get("origin") == "host"}
    clashes = [(d, host[d["name"]]) for d in dists if d.get("origin") != "host" and d["name"] in host]
    different = [(d, h) for d, h in clashes if d["version"] != h["version"]]
    if different:
        verdict.fail("NVIDIA_SHADOWED", [(d["name"], f"{d['version']} in {d['location']} hides the host's "
                                          f"{h['version']} in {h['location']}") for d, h in different],
                     names=", ".join(d["name"] for d, _ in different), project=ctx.project)
    elif clashes:
        verdict.notices.append(notice("NVIDIA_SAME_VERSION_COPY", names=", ".join(d["name"] for d, _ in clashes)))


def _gpu_device_nodes(files: Mapping[str, Any]) -> list[str]:
    return [n for n in files.get("present") or [] if re.fullmatch(r"nvidia\d+", n)]


def decide_gpu(facts: Mapping[str, Any], ctx: Context, verdict: Verdict) -> None:
    torch = facts.get("torch") or {}
    nvml = facts.get("nvml") or {}
    build = torch.get("build")
    devices = nvml.get("devices") or []
    if ctx.mode == "false":
        verdict.gpu_expected, verdict.why = False, "require_cuda = false"
        verdict.notices.append(notice("CUDA_NOT_CHECKED"))
        return
    if ctx.mode == "true":
        verdict.gpu_expected, verdict.why = True, "require_cuda = true"
        return
    if ctx.min_gpus > 0:
        verdict.gpu_expected, verdict.why = True, f"min_gpus = {ctx.min_gpus}"
        return
    if not build:
        verdict.why = "torch was not found"
        return
    version = torch.get("version")
    if build != "cuda":
        verdict.why = f"torch {version} is a {_build_name(torch)}"
        verdict.notices.append(notice("TORCH_WITHOUT_CUDA", version=version, build=_build_name(torch)))
        return
    if devices:
        verdict.gpu_expected, verdict.why = True, (f"torch is a CUDA {torch.get('cuda')} build and the driver sees "
                                                   f"{len(devices)} GPU(s)")
        return
    nodes = _gpu_device_nodes(facts.get("device_files") or {})
    if nvml.get("loaded") and nvml.get("init_error") and nodes:
        verdict.gpu_expected, verdict.why = True, (f"torch is a CUDA build and GPU device nodes exist "
                                                   f"({', '.join(nodes)}), but NVML failed")
        return
    reason = ("no NVIDIA driver is reachable" if not nvml.get("loaded") else
              f"NVML failed ({nvml.get('init_error_text')})" if nvml.get("init_error") else "the driver sees no GPU")
    verdict.why = f"torch is a CUDA build but {reason}"
    verdict.notices.append(notice("CUDA_BUILD_WITHOUT_GPU", version=version, cuda=torch.get("cuda"), reason=reason))


def _build_name(torch: Mapping[str, Any]) -> str:
    return {"cpu": "CPU-only build", "rocm": f"ROCm {torch.get('hip')} build",
            "xpu": "Intel XPU build"}.get(torch.get("build") or "", f"{torch.get('build')} build")


def check_cuda_cheap(facts: Mapping[str, Any], ctx: Context, verdict: Verdict) -> None:
    if not verdict.gpu_expected:
        return
    torch = facts.get("torch") or {}
    nvml = facts.get("nvml") or {}
    files = facts.get("device_files") or {"present": [], "inaccessible": [], "dir": "/dev"}
    visible = facts.get("visible") or {}
    if not torch.get("build"):
        return  # TORCH_NOT_FOUND already says it
    if torch.get("build") != "cuda":
        verdict.fail("TORCH_NOT_CUDA_BUILD", [("torch", torch.get("version")), ("torch.version.cuda", None),
                                              ("read from", torch.get("version_file")),
                                              ("CUDA expected because", verdict.why)],
                     version=torch.get("version"), build=_build_name(torch), why=verdict.why,
                     host_python=ctx.host_python)
        return
    library = nvml.get("library") or ("not loadable; LD_LIBRARY_PATH = "
                                      + ((facts.get("environment") or {}).get("LD_LIBRARY_PATH") or "(unset)"))
    driver_facts = [("NVML library", library),
                    ("device nodes", ", ".join(files.get("present") or []) or f"none in {files.get('dir')}")]
    if not nvml.get("loaded"):
        verdict.fail("NO_DRIVER", driver_facts + [("CUDA expected because", verdict.why)],
                     detail_line=nvml.get("error") or "libnvidia-ml.so.1 was not found")
        return
    if nvml.get("init_error"):
        code = nvml["init_error"]
        if code == 18:
            verdict.fail("DRIVER_MISMATCH", driver_facts, nvml_error=nvml.get("init_error_text"))
        elif "nvidiactl" not in (files.get("present") or []) or "nvidiactl" in (files.get("inaccessible") or []):
            verdict.fail("NO_DEVICE_FILES", driver_facts + [("NVML", nvml.get("init_error_text"))],
                         problem="/dev/nvidiactl is " + ("not accessible" if "nvidiactl" in (files.get("present") or [])
                                                         else "missing"), dev=files.get("dir"))
        else:
            verdict.fail("NO_DRIVER", driver_facts + [("CUDA expected because", verdict.why)],
                         detail_line=f"NVML could not start: {nvml.get('init_error_text')}")
        return
    devices = nvml.get("devices") or []
    driver_facts[0:0] = [("driver", nvml.get("driver_version")), ("driver supports CUDA", nvml.get("cuda_driver_version"))]
    if not devices:
        verdict.fail("NO_GPU", driver_facts + [("CUDA expected because", verdict.why)],
                     driver=nvml.get("driver_version"))
        return
    present, inaccessible = set(files.get("present") or []), set(files.get("inaccessible") or [])
    wanted = ["nvidiactl"] + [f"nvidia{d['minor_number']}" for d in devices if d.get("minor_number") is not None
                              and (visible.get("kind") == "mig" or d["index"] in (visible.get("devices") or []))]
    missing = [n for n in wanted if n not in present]
    denied = [n for n in wanted + ["nvidia-uvm"] if n in inaccessible]
    if missing or denied:
        problem = "; ".join(filter(None, [
            ("missing: " + ", ".join(f"{files.get('dir')}/{n}" for n in missing)) if missing else "",
            ("not readable and writable by this user: " + ", ".join(f"{files.get('dir')}/{n}" for n in denied))
            if denied else ""]))
        verdict.fail("NO_DEVICE_FILES", driver_facts, problem=problem, dev=files.get("dir"))
        return
    if "nvidia-uvm" not in present:
        verdict.notices.append(notice("NVIDIA_UVM_MISSING", dev=files.get("dir")))
    driver_cuda, torch_cuda = _version_tuple(nvml.get("cuda_driver_version")), _version_tuple(torch.get("cuda"))
    if driver_cuda and torch_cuda:
        if torch_cuda[0] > driver_cuda[0]:
            verdict.fail("DRIVER_TOO_OLD", driver_facts + [("torch built for CUDA", torch.get("cuda"))],
                         driver=nvml.get("driver_version"), driver_cuda=nvml.get("cuda_driver_version"),
                         torch_cuda=torch.get("cuda"), torch_major=torch_cuda[0])
            return
        if torch_cuda > driver_cuda:
            verdict.notices.append(notice("CUDA_MINOR_VERSION_COMPATIBILITY", torch_cuda=torch.get("cuda"),
                                          driver=nvml.get("driver_version"),
                                          driver_cuda=nvml.get("cuda_driver_version")))
    count = visible.get("count", 0)
    cvd = visible.get("CUDA_VISIBLE_DEVICES")
    if visible.get("kind") == "invalid" or count == 0:
        verdict.fail("NO_VISIBLE_DEVICES", driver_facts + [
            ("CUDA_VISIBLE_DEVICES", _shown(cvd)),
            ("read by torch as", visible.get("parsed") if visible.get("kind") != "invalid" else visible.get("parsed")),
            ("devices the driver sees", "; ".join(f"{d.get('index')}: {d.get('name')} {d.get('uuid')}"
                                                  for d in devices))],
                     driver_devices=len(devices), cvd=repr(cvd), first_uuid=devices[0].get("uuid") or "GPU-...")
        return
    if ctx.min_gpus and count < ctx.min_gpus:
        verdict.fail("TOO_FEW_GPUS", driver_facts + [("CUDA_VISIBLE_DEVICES", _shown(cvd)),
                                                     ("devices the driver sees", len(devices))],
                     visible=count, min_gpus=ctx.min_gpus)
    for d in devices:
        if d.get("mig") and visible.get("kind") != "mig":
            uuids = ", ".join(m.get("uuid") or "?" for m in d.get("mig_devices") or []) or "none created"
            verdict.notices.append(notice("MIG_MODE", index=d["index"], name=d.get("name"), uuids=uuids))


# --- deep layer ---------------------------------------------------------------------------------------
def sass_supports(arch_list: list[str], capability: str) -> bool:
    """Does a build with these -gencode targets run on a device of this compute capability?

    sm_XY cubins run on the same major with minor >= Y; compute_XY (PTX) is compiled by the driver for any
    device >= X.Y; 'a'/'f' arch-specific targets run only on their own capability.
    """
    try:
        major, minor = (int(x) for x in capability.split(".")[:2])
    except (ValueError, AttributeError):
        return True  # unknown capability: nothing to say
    device = major * 10 + minor
    if not arch_list:
        return True
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)([af]?)", arch.strip())
        if not m:
            continue
        kind, number, suffix = m.group(1), int(m.group(2)), m.group(3)
        if suffix == "a":
            if number == device:
                return True
            continue
        if kind == "compute" and device >= number:
            return True
        if kind == "sm" and number // 10 == major and number % 10 <= minor:
            return True
    return False


def check_deep(facts: Mapping[str, Any], deep: Mapping[str, Any] | None, ctx: Context, verdict: Verdict) -> None:
    if not deep:
        return
    for name, info in (deep.get("imports") or {}).items():
        if not info.get("ok"):
            error = info.get("error") or "unknown error"
            verdict.fail("TORCH_IMPORT_FAILED", [("package", name),
                                                 ("location", ((facts.get("packages") or {}).get(name) or {})
                                                  .get("location"))],
                         detail=info.get("traceback") or "", package=name, error=error.strip().splitlines()[-1][:300],
                         project=ctx.project)
    torch = deep.get("torch") or {}
    if not verdict.gpu_expected or not torch:
        return
    if torch.get("cuda_init") == "failed":
        error = torch.get("cuda_init_error") or ""
        nvml = facts.get("nvml") or {}
        if "insufficient" in error and "driver" in error.lower():
            verdict.fail("DRIVER_TOO_OLD", [("driver", nvml.get("driver_version")),
                                            ("driver supports CUDA", nvml.get("cuda_driver_version")),
                                            ("torch built for CUDA", torch.get("cuda"))], detail=error,
                         driver=nvml.get("driver_version"), driver_cuda=nvml.get("cuda_driver_version"),
                         torch_cuda=torch.get("cuda"), torch_major=(_version_tuple(torch.get("cuda")) or ("?",))[0])
        else:
            verdict.fail("CUDA_INIT_FAILED", [("torch", torch.get("version")), ("torch.version.cuda", torch.get("cuda")),
                                              ("driver", nvml.get("driver_version")),
                                              ("CUDA_VISIBLE_DEVICES", _shown((facts.get("visible") or {})
                                                                              .get("CUDA_VISIBLE_DEVICES")))],
                         detail=error if len(error.strip().splitlines()) > 1 else "", error=error.strip().splitlines()[-1][:300] if error.strip() else "no message")
        return
    if torch.get("cuda_init") != "ok":
        return
    count = torch.get("device_count") or 0
    if count == 0:
        cvd = (facts.get("visible") or {}).get("CUDA_VISIBLE_DEVICES")
        devices = (facts.get("nvml") or {}).get("devices") or []
        listing = [("torch.cuda.device_count()", 0), ("CUDA_VISIBLE_DEVICES", _shown(cvd)),
                   ("devices the driver sees", len(devices))]
        if cvd is not None:  # CUDA's own reading of the variable hid them
            verdict.fail("NO_VISIBLE_DEVICES", listing, driver_devices=len(devices), cvd=repr(cvd),
                         first_uuid=(devices[0].get("uuid") if devices else None) or "GPU-...")
        else:
            verdict.fail("CUDA_INIT_FAILED", listing, error="CUDA initialised but shows no GPU, although the driver "
                                                            f"sees {len(devices)}")
        return
    if ctx.min_gpus and count < ctx.min_gpus:
        verdict.fail("TOO_FEW_GPUS", [("torch.cuda.device_count()", count)], visible=count, min_gpus=ctx.min_gpus)
    arch_list = torch.get("arch_list") or []
    for device in torch.get("devices") or []:
        smoke = device.get("smoke")
        unsupported = not sass_supports(arch_list, device.get("capability", ""))
        no_image = isinstance(smoke, str) and "no kernel image" in smoke
        if unsupported or no_image:
            verdict.fail("ARCH_UNSUPPORTED", [("device", f"cuda:{device['index']} {device.get('name')}"),
                                              ("compute capability", device.get("capability")),
                                              ("torch.cuda.get_arch_list()", " ".join(arch_list) or "empty")],
                         detail=smoke if no_image else "", device=f"cuda:{device['index']} ({device.get('name')})",
                         capability=device.get("capability"), arch_list=" ".join(arch_list) or "nothing")
            return
        if smoke not in (None, "ok"):
            verdict.fail("CUDA_INIT_FAILED", [("device", f"cuda:{device['index']} {device.get('name')}")],
                         detail=str(smoke), error=f"a first operation on cuda:{device['index']} failed: "
                                                  + str(smoke).strip().splitlines()[-1][:300])
            return


# --- torch companions ---------------------------------------------------------------------------------
def torch_variant(version: str | None) -> str:
    """The local part of a torch version: 'cpu' for 2.13.0+cpu, 'cu128', 'rocm6.4', '' for a PyPI build."""
    return variant(version or "")


def companion_index(ctx: Context, torch_version: str | None) -> str:
    """Where builds for the host's torch variant live: the one rule the install step uses too."""
    return index_for(ctx.companion_index, torch_version or "")


def companion_allowed(name: str, ctx: Context) -> bool:
    key = canonical(name)
    return any(fnmatch.fnmatchcase(key, canonical(p)) for p in ctx.allow_companion_mismatch)


def companions_to_load(facts: Mapping[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """The companions the deep layer loads: every one the cheap layer found, less those allowed by name."""
    return [c for c in facts.get("companions") or [] if not companion_allowed(c.get("name", ""), ctx)]


def _build_text(companion: Mapping[str, Any]) -> str:
    tags = ", ".join(companion.get("wheel_tags") or []) or "no wheel tags"
    local = companion.get("local")
    return f"wheel {tags}, " + (f"build +{local}" if local else "no local version")


def _requirement_met(requirement: str | None, torch_version: str | None) -> bool | None:
    """Does the host's torch meet the companion's requirement on torch?  None: cannot tell."""
    if not requirement or not torch_version:
        return None
    try:
        req = Requirement(requirement.replace("(", "").replace(")", ""))
        return req.specifier.contains(Version(torch_version), prereleases=True)
    except Exception:
        return None


def check_companions(facts: Mapping[str, Any], deep: Mapping[str, Any] | None, ctx: Context,
                     verdict: Verdict) -> None:
    found = facts.get("companions") or []
    if not found:
        return
    torch = facts.get("torch") or {}
    # the variant is read from torch's dist-info, as the install step reads it: PyPI's CUDA torch says
    # 2.14.1+cu130 in torch.__version__ but 2.14.1 in its dist-info, and PyPI's companions are made for it
    torch_version = ((facts.get("packages") or {}).get("torch") or {}).get("version") or torch.get("version")
    variant = torch_variant(torch_version)
    loaded = (deep or {}).get("companions") or {}
    for companion in found:
        name = companion.get("name", "")
        if companion_allowed(name, ctx):
            verdict.notices.append(notice("COMPANION_MISMATCH_ALLOWED", name=name, version=companion.get("version")))
            continue
        result = loaded.get(name)
        if result is not None and result.get("missing_system_libraries"):
            verdict.notices.append(notice("COMPANION_SYSTEM_LIBRARIES_MISSING", name=name,
                                          version=companion.get("version"),
                                          libraries=", ".join(result["missing_system_libraries"])))
        if deep is None or result is None or result.get("ok"):
            continue
        version = str(companion.get("version") or "")
        public = version.partition("+")[0]
        index = companion_index(ctx, torch_version)
        met = _requirement_met(companion.get("requires_torch"), torch_version)
        python = ctx.env_python or "ENV/bin/python"
        if met is False:  # built for another torch release: a version pin of ours would be wrong
            command = (f"uv pip install --python {python} --no-deps" + (f" --index-url {index}" if index else "")
                       + f" '{name}==VERSION" + (f"+{variant}'" if variant else "'"))
        else:
            spec = f"{name}=={public}" + (f"+{variant}" if variant else "")
            command = (f"uv pip install --python {python} --no-deps" + (f" --index-url {index}" if index else "")
                       + f" '{spec}'")
        facts_list = [
            ("package", f"{name} {version} at {companion.get('dist_info')}"),
            ("its build", _build_text(companion)),
            ("its requirement on torch", companion.get("requires_torch") or "none declared"),
            ("built against torch (links libtorch/libc10)", ", ".join(companion.get("links_torch") or []) or "no"),
            ("host torch", f"{torch_version} ({'build +' + variant if variant else 'no local version'}, "
                           f"{torch.get('version_file')})"),
            ("failed", result.get("failed_step") or "?"),
        ]
        if met is False:
            facts_list.append(("note", f"{name} {version} requires {companion.get('requires_torch')}, the host has "
                                       f"{torch_version}: replace it with the {name} release made for that torch "
                                       f"(VERSION in the command below)"))
        others = [st for st in result.get("steps") or [] if not st.get("ok") and st.get("step") != result.get("failed_step")]
        detail = "\n".join(f"{st['step']}: {str(st.get('error', '')).strip().splitlines()[-1]}" for st in others)
        verdict.fail("COMPANION_BUILD_MISMATCH", facts_list, detail=detail, package=name, version=version,
                     build=_build_text(companion), torch_version=torch_version or "?",
                     torch_build=f"build +{variant}" if variant else "no local version",
                     error=str(result.get("error") or "it did not load").strip().splitlines()[-1][:300],
                     index_phrase=f" (from {index})" if index else "", command=command,
                     sources_hint=(f" (for every user of the project: declare that index for {name} under "
                                   "[tool.uv.sources] and [[tool.uv.index]] in pyproject.toml)"))


def evaluate(facts: Mapping[str, Any], deep: Mapping[str, Any] | None, ctx: Context) -> Verdict:
    verdict = Verdict()
    check_packages(facts, ctx, verdict)
    check_nvidia_shadowing(facts, ctx, verdict)
    decide_gpu(facts, ctx, verdict)
    check_cuda_cheap(facts, ctx, verdict)
    check_deep(facts, deep, ctx, verdict)
    check_companions(facts, deep, ctx, verdict)
    for error in facts.get("errors") or []:
        verdict.notices.append(notice("PROBE_SECTION_UNREAD", section=error.get("section"), error=error.get("error")))
    return verdict
