"""The preflight probe: runs inside the env's python, with the kernel's exact environment.

Standard library only, and written for any Python 3 (no f-strings, no walrus, no annotations): it runs in
whatever interpreter the env was built on.  It is started as a script by path (never ``-c``) and removes
its own folder from ``sys.path`` at once, so a stray ``torch.py`` next to the notebook (the kernel's cwd)
cannot hijack it; such a file is *reported* instead, because the kernel itself will put the notebook's
folder first on ``sys.path``.

Two layers:

* cheap (every start, tens of ms): where each package resolves and every other copy on ``sys.path`` with
  its origin, torch's build facts read from ``torch/version.py`` as text, ``nvidia-*`` distributions, the
  env's ``pyvenv.cfg``, ``CUDA_VISIBLE_DEVICES`` parsed the way torch parses it, ``/dev/nvidia*`` access,
  and the driver through NVML (ctypes on ``libnvidia-ml.so.1``);
* deep (``"deep": true`` in the config; only when the cache misses): import the required packages,
  ``torch.cuda.init()`` so a failure's reason is caught (``is_available()`` would swallow it), cuDNN,
  device properties, capability vs ``get_arch_list()``, and one small operation per visible device.

Protocol: every line this probe writes to its stdout is ``UVKERNEL-PROBE <kind> <json>``; kinds are
``cheap`` (the cheap facts), ``stage`` (the step starting now, so a hang or crash names its step), ``deep``
(the deep facts) and ``done``.  Whatever else writes to stdout (torch, C libraries) goes to stderr.
"""

import json
import os
import re
import sys
import time

PROBE_FORMAT = 2
MARK = "UVKERNEL-PROBE"
_clock = getattr(time, "perf_counter", time.time)
_T0 = _clock()

# Variables that decide what the kernel imports or which GPUs it sees (reported and part of the cache key).
ENV_PREFIXES = ("CUDA_", "NVIDIA_", "PYTORCH_", "TORCH_", "UVKERNEL_", "HIP_", "ROCR_", "CUDNN_", "NCCL_")
ENV_NAMES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
             "VIRTUAL_ENV", "PATH", "HOME", "USER")
NVML_ERRORS = {1: "UNINITIALIZED", 2: "INVALID_ARGUMENT", 3: "NOT_SUPPORTED", 4: "NO_PERMISSION",
               6: "NOT_FOUND", 9: "DRIVER_NOT_LOADED", 12: "LIBRARY_NOT_FOUND", 13: "FUNCTION_NOT_FOUND",
               17: "GPU_IS_LOST", 18: "LIB_RM_VERSION_MISMATCH", 999: "UNKNOWN"}


# --- output -----------------------------------------------------------------------------------------
class Output(object):
    """Our own copy of stdout; fd 1 itself is pointed at stderr so nothing else can corrupt the protocol."""

    def __init__(self):
        self.fd = os.dup(1)
        os.dup2(2, 1)

    def emit(self, kind, data):
        line = "{} {} {}\n".format(MARK, kind, json.dumps(data, sort_keys=True, default=str))
        os.write(self.fd, line.encode("utf-8", "replace"))


# --- CUDA_VISIBLE_DEVICES, with the semantics of torch.cuda._parse_visible_devices -------------------------
def _leading_int(text):
    """The integer a C strtoul-like scan reads at the start of ``text``; -1 when none.

    A lone sign raises ValueError, as torch's parser does.
    """
    end = 0
    while end < len(text) and (text[end].isdigit() or (end == 0 and text[end] in "+-")):
        end += 1
    if end == 0:
        return -1
    return int(text[:end])


def _prefixed(value, prefix):
    kept = []
    for item in value.split(","):
        if item in kept:
            return []  # a repeated id hides every device
        if not item.startswith(prefix):
            break  # the list ends at the first entry of another kind
        kept.append(item)
    return kept


def parse_visible_devices(value):
    """Return (kind, devices): kind is unset | ordinals | uuids | mig | invalid.

    unset: every device; ordinals: ints; uuids/mig: prefixes of GPU-/MIG- UUIDs; invalid: torch raises.
    """
    if value is None:
        return "unset", None
    if value.startswith("GPU-"):
        return "uuids", _prefixed(value, "GPU-")
    if value.startswith("MIG-"):
        return "mig", _prefixed(value, "MIG-")
    ordinals = []
    for item in value.split(","):
        try:
            number = _leading_int(item.strip())
        except ValueError:
            return "invalid", "cannot read a device number from {!r}".format(item)
        if number in ordinals:
            return "ordinals", []  # a repeated ordinal hides every device
        if number < 0:
            break  # a negative or non-numeric entry ends the list
        ordinals.append(number)
    return "ordinals", ordinals


def _uuid_ordinals(prefixes, uuids):
    """Device indices the UUID prefixes select (ambiguous or unknown prefix ends the list; repeats: none)."""
    chosen = []
    for prefix in prefixes:
        matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(prefix)]
        if len(matches) != 1:
            break
        if matches[0] in chosen:
            return []
        chosen.append(matches[0])
    return chosen


def visible_devices(kind, parsed, devices):
    """NVML devices CUDA will show, in CUDA's order: a list of NVML indices (or MIG UUIDs for kind 'mig')."""
    if kind == "invalid":
        return []
    if kind == "unset":
        return list(range(len(devices)))
    if kind == "ordinals":
        shown = []
        for number in parsed:
            if number >= len(devices):
                break  # an ordinal past the last device ends the list
            shown.append(number)
        return shown
    if kind == "uuids":
        return _uuid_ordinals(parsed, [d.get("uuid") or "" for d in devices])
    mig_uuids = [m.get("uuid") or "" for d in devices for m in d.get("mig_devices") or []]
    return [mig_uuids[i] for i in _uuid_ordinals(parsed, mig_uuids)]


# --- where packages come from -----------------------------------------------------------------------
def _real(path):
    return os.path.realpath(path) if path else ""


def _inside(path, folder):
    return bool(folder) and (path == folder or path.startswith(folder.rstrip(os.sep) + os.sep))


class Origins(object):
    def __init__(self, env, host_dirs):
        self.env = _real(env)
        self.host = [_real(d) for d in host_dirs if d]
        try:
            import site

            self.user = _real(site.getusersitepackages())
        except Exception:
            self.user = ""

    def of(self, path):
        real = _real(path)
        for folder in self.host:  # before env: a layered host venv is never inside the env, but be exact
            if _inside(real, folder):
                return "host"
        if _inside(real, self.env):
            return "env"
        if _inside(real, self.user):
            return "user"
        return "other"


def _canonical(name):
    out = []
    for ch in name.lower():
        out.append("-" if ch in "_." else ch)
    text = "".join(out)
    while "--" in text:
        text = text.replace("--", "-")
    return text


_LISTINGS = {}  # type: dict


def _listing(folder):
    if folder not in _LISTINGS:
        try:
            _LISTINGS[folder] = sorted(os.listdir(folder))
        except OSError:
            _LISTINGS[folder] = []
    return _LISTINGS[folder]


def _dist_info(entry, name):
    """(version, dist-info path) of the distribution called ``name`` installed in ``entry``."""
    want = _canonical(name)
    for item in _listing(entry):
        for suffix in (".dist-info", ".egg-info"):
            if item.endswith(suffix):
                stem = item[: -len(suffix)]
                dist, _, version = stem.partition("-")
                if _canonical(dist) == want:
                    return version.split("-py")[0], os.path.join(entry, item)
    return None, None


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(getattr(st, "st_mtime_ns", st.st_mtime * 1e9)), st.st_size]


def _files_of(location, dist_info):
    """Identity of a copy (for the cache key): stats of the files that decide what importing it does."""
    files = {}
    if os.path.isdir(location):
        for item in _listing(location):
            if item in ("__init__.py", "version.py", "lib") or item.startswith("_C.") or item.endswith(".so"):
                files[item] = _stat(os.path.join(location, item))
        lib = os.path.join(location, "lib")
        if os.path.isdir(lib):
            for item in _listing(lib):
                files["lib/" + item] = _stat(os.path.join(lib, item))
    else:
        files[os.path.basename(location)] = _stat(location)
    if dist_info:
        files["RECORD"] = _stat(os.path.join(dist_info, "RECORD"))
    return files


def _spec_location(spec):
    if spec is None:
        return None
    if spec.submodule_search_locations is not None and (spec.origin in (None, "namespace") or not spec.origin):
        return None  # a namespace portion: a later regular package wins over it
    if spec.origin in (None, "built-in", "frozen"):
        return spec.origin
    if spec.submodule_search_locations is not None:
        return os.path.dirname(spec.origin)
    return spec.origin


def locate(name, entries, origins):
    """Where ``import name`` resolves, and every copy on sys.path (in sys.path order)."""
    import importlib.machinery
    import importlib.util

    copies = []
    for entry in entries:
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, [entry])
        except Exception:
            continue
        location = _spec_location(spec)
        if not location:
            continue
        version, dist = _dist_info(entry, name)
        copies.append({"location": location, "origin": origins.of(location), "version": version,
                       "entry": entry, "files": _files_of(location, dist)})
    try:
        resolved = _spec_location(importlib.util.find_spec(name))
    except Exception as exc:  # a broken finder hook (.pth) says so instead of crashing the probe
        return {"origin": "error", "location": None, "error": "{}: {}".format(type(exc).__name__, exc),
                "copies": copies}
    if not resolved:
        return {"origin": "missing", "location": None, "version": None, "copies": copies, "host_copy": None}
    chosen = None
    for copy in copies:
        if _real(copy["location"]) == _real(resolved):
            chosen = copy
            break
    host_copy = None
    for copy in copies:
        if copy["origin"] == "host":
            host_copy = copy["location"]
            break
    return {"origin": origins.of(resolved), "location": resolved,
            "version": chosen["version"] if chosen else None, "copies": copies, "host_copy": host_copy}


def local_shadows(folder, names):
    """Modules in the notebook's folder that the kernel (cwd first on sys.path) would import instead."""
    import importlib.machinery

    found = []  # type: list
    if not folder or not os.path.isdir(folder):
        return found
    for name in names:
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, [folder])
        except Exception:
            continue
        location = _spec_location(spec)
        if location:
            found.append({"package": name, "path": location})
    return found


def _literal(text):
    text = text.strip()
    if text in ("None", ""):
        return None
    if text in ("True", "False"):
        return text == "True"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def torch_build(location):
    """torch's build facts read from torch/version.py as text (nothing imported)."""
    if not location or not os.path.isdir(location):
        return None
    path = os.path.join(location, "version.py")
    facts = {"version_file": path}
    try:
        with open(path) as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        facts["error"] = "cannot read {}: {}".format(path, exc)
        return facts
    names = {"__version__": "version", "cuda": "cuda", "hip": "hip", "git_version": "git_version",
             "debug": "debug", "xpu": "xpu"}
    for line in text.splitlines():
        if "=" not in line or line.startswith((" ", "\t", "#")):
            continue
        left, _, right = line.partition("=")
        key = left.split(":")[0].strip()
        if key in names:
            facts[names[key]] = _literal(right.split("#")[0])
    cuda, hip = facts.get("cuda"), facts.get("hip")
    facts["build"] = "cuda" if cuda else ("rocm" if hip else ("xpu" if facts.get("xpu") else "cpu"))
    return facts


def nvidia_distributions(entries, origins):
    """Every nvidia-* distribution on sys.path (torch preloads the first CUDA library it finds)."""
    found = []
    for entry in entries:
        for item in _listing(entry):
            if item.startswith(("nvidia_", "nvidia-")) and item.endswith(".dist-info"):
                stem = item[: -len(".dist-info")]
                name, _, version = stem.partition("-")
                found.append({"name": _canonical(name), "version": version, "location": entry,
                              "origin": origins.of(os.path.join(entry, item)),
                              "mtime": _stat(os.path.join(entry, item))})
    return found


# --- torch companions: env distributions built against torch ----------------------------------------------
TORCH_LIBRARIES = ("libtorch", "libc10")  # DT_NEEDED prefixes of code compiled against torch's C++ API
STACK_PREFIXES = ("torch", "nvidia-", "triton", "cuda-", "pytorch-triton")  # torch and its closure: not companions


def elf_needed(path):
    """The DT_NEEDED entries of an ELF shared object, read with struct only; [] when it is not one."""
    import struct

    with open(path, "rb") as fh:
        ident = fh.read(64)
        if len(ident) < 52 or ident[:4] != b"\x7fELF":
            return []
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack(order + "Q", ident[32:40])
            phentsize, phnum = struct.unpack(order + "HH", ident[54:58])
        else:
            phoff, = struct.unpack(order + "I", ident[28:32])
            phentsize, phnum = struct.unpack(order + "HH", ident[42:46])
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
        loads, dynamic = [], None
        for i in range(phnum):
            entry = table[i * phentsize:(i + 1) * phentsize]
            if wide:
                p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack(order + "IIQQQQ", entry[:40])
            else:
                p_type, offset, vaddr, _paddr, filesz = struct.unpack(order + "IIIII", entry[:20])
            if p_type == 1:  # PT_LOAD: maps virtual addresses (DT_STRTAB) to file offsets
                loads.append((vaddr, offset, filesz))
            elif p_type == 2:  # PT_DYNAMIC
                dynamic = (offset, filesz)
        if dynamic is None:
            return []
        fh.seek(dynamic[0])
        data = fh.read(dynamic[1])
        size = 16 if wide else 8
        fmt = order + ("qQ" if wide else "iI")
        needed, strtab = [], None
        for i in range(0, len(data) - size + 1, size):
            tag, value = struct.unpack(fmt, data[i:i + size])
            if tag == 0:
                break
            if tag == 1:
                needed.append(value)
            elif tag == 5:
                strtab = value
        if strtab is None:
            return []
        base = None
        for vaddr, offset, filesz in loads:
            if vaddr <= strtab < vaddr + filesz:
                base = strtab - vaddr + offset
                break
        if base is None:
            return []
        names = []
        for value in needed:
            fh.seek(base + value)
            raw = fh.read(256)
            names.append(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        return names


def _read_text(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


def _torch_requirement(metadata):
    """The Requires-Dist line naming torch (unconditionally or under a python/platform marker), or None."""
    headers = metadata.split("\n\n", 1)[0]  # the headers end at the first blank line; the rest is the README
    if "torch" not in headers.lower():
        return None
    for line in headers.splitlines():
        if not line.lower().startswith("requires-dist:"):
            continue
        text = line.split(":", 1)[1].strip()
        name = text
        for stop in " ;[(<>=!~@":
            name = name.split(stop, 1)[0]
        if _canonical(name) != "torch":
            continue
        if ";" in text and "extra" in text.split(";", 1)[1]:
            continue  # only with an extra: the package works without torch
        head, sep, marker = text.partition(";")
        if "(" in head:  # the old "torch (==2.13.0)" spelling
            head = head.replace(" (", "").replace("(", "").replace(")", "")
        return head.strip() + (" ;" + marker if sep else "")
    return None


def _wheel_tags(dist_info):
    text = _read_text(os.path.join(dist_info, "WHEEL")) or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.lower().startswith("tag:")]


def _so_paths(record):
    """Paths in a RECORD that contain '.so', found without splitting it into lines (RECORDs can list thousands
    of files, e.g. jupyterlab's, and this runs at every start)."""
    paths = []
    start = record.find(".so")
    while start != -1:
        begin = record.rfind("\n", 0, start) + 1
        end = record.find("\n", start)
        end = len(record) if end == -1 else end
        path = record[begin:end].rsplit(",", 2)[0]
        if path not in paths:
            paths.append(path)
        start = record.find(".so", end)
    return paths


def _is_shared_object(path):
    base = os.path.basename(path)
    return base.endswith(".so") or ".so." in base


def _module_of(path, suffixes):
    """'pkg/sub/_C.cpython-311-x86_64-linux-gnu.so' -> 'pkg.sub._C' when it is an extension module, else None."""
    for suffix in sorted(suffixes, key=len, reverse=True):
        if path.endswith(suffix):
            parts = path[: -len(suffix)].split("/")
            if all(p.isidentifier() for p in parts):
                return ".".join(parts)
    return None


def _top_level(entry, dist_info, record_paths):
    text = _read_text(os.path.join(dist_info, "top_level.txt"))
    names = []
    if text is not None:
        names = [n.strip().replace("/", ".") for n in text.splitlines() if n.strip()]
    else:
        for path in record_paths:
            first = path.split("/", 1)[0]
            if "/" in path and first.isidentifier() and not first.endswith((".dist-info", ".data")):
                names.append(first)
            elif path.endswith(".py") and "/" not in path and path[:-3].isidentifier():
                names.append(path[:-3])
    out = []
    for name in names:
        head = name.split(".")[0]
        if name not in out and not head.startswith("_") and head != "tests" and \
                (os.path.isdir(os.path.join(entry, head)) or os.path.exists(os.path.join(entry, head + ".py"))):
            out.append(name)
    return out


def companions(entries, origins):
    """Env (and user-site) distributions built against torch: those requiring torch, and those whose shared
    objects link libtorch/libc10 (ELF DT_NEEDED).  Host distributions belong to the host's build: not listed."""
    import hashlib
    import importlib.machinery

    suffixes = list(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    seen = set()
    for entry in entries:
        if origins.of(entry) not in ("env", "user"):
            continue
        for item in _listing(entry):
            if not item.endswith(".dist-info"):
                continue
            dist, _, version = item[: -len(".dist-info")].partition("-")
            key = _canonical(dist)
            if key in seen or key == "torch" or key.startswith(STACK_PREFIXES[1:]):
                continue
            seen.add(key)
            dist_info = os.path.join(entry, item)
            metadata = _read_text(os.path.join(dist_info, "METADATA")) or ""
            requirement = _torch_requirement(metadata)
            record = _read_text(os.path.join(dist_info, "RECORD")) or ""
            # every start: RECORDs can list thousands of files (jupyterlab); only the .so lines are parsed
            objects = [p for p in _so_paths(record) if _is_shared_object(p) and not p.startswith("..")]
            linked, files = [], {}
            for path in objects:
                full = os.path.join(entry, path)
                files[path] = _stat(full)
                try:
                    needed = elf_needed(full)
                except Exception:  # unreadable or truncated: it cannot link torch as far as we can tell
                    needed = []
                if any(n.startswith(TORCH_LIBRARIES) for n in needed):
                    linked.append(path)
            if not linked:
                # requiring torch is not enough: pure-Python code (or code that loads torch only through
                # Python, like bitsandbytes) runs on any torch build; only code linked against libtorch/libc10
                # can mismatch the host's
                continue
            name = dist
            for line in metadata.splitlines():
                if line.lower().startswith("name:"):
                    name = line.split(":", 1)[1].strip()
                    break
            files["RECORD"] = _stat(os.path.join(dist_info, "RECORD"))
            files["dist-info"] = _stat(dist_info)
            # the wheel's identity: RECORD's lines (content hash and size) of the shared objects, the same in every
            # env the same wheel is installed into, where the files' stats are not
            lines = sorted(line for line in record.splitlines() if line.rsplit(",", 2)[0] in objects)
            hashed = len(lines) == len(objects) and all(",sha256=" in line for line in lines)
            wheel_id = hashlib.sha256("\n".join(lines).encode()).hexdigest() if hashed else None
            # what the deep layer loads: extension-module candidates and whatever links torch (vendored
            # libraries in *.libs/ come along as their dependencies)
            loads = []
            for path in objects:
                module = _module_of(path, suffixes)
                if module or path in linked:
                    loads.append({"path": path, "module": module})
            found.append({
                "name": name, "version": version, "local": version.partition("+")[2],
                "dist_info": dist_info, "location": entry, "origin": origins.of(dist_info),
                "requires_torch": requirement, "wheel_tags": _wheel_tags(dist_info),
                "links_torch": linked,
                "modules": _top_level(entry, dist_info, [line.rsplit(",", 2)[0] for line in record.splitlines()]),
                "shared_objects": loads,
                "files": files,
                "wheel_id": wheel_id,
                "sizes": {path: (files.get(path) or [0, None])[1] for path in objects},
            })
    return found


def read_pyvenv_cfg(prefix):
    values = {}
    try:
        with open(os.path.join(prefix, "pyvenv.cfg")) as fh:
            for line in fh:
                if "=" in line:
                    key, _, value = line.partition("=")
                    values[key.strip().lower()] = value.strip()
    except OSError:
        return None
    return values


def device_files(folder):
    """The NVIDIA device nodes: which exist, which this user may open for reading and writing."""
    out = {"dir": folder, "present": [], "inaccessible": []}
    for item in _listing(folder):
        if item.startswith("nvidia"):
            path = os.path.join(folder, item)
            out["present"].append(item)
            if not os.access(path, os.R_OK | os.W_OK):
                out["inaccessible"].append(item)
    return out


def relevant_environment():
    return dict((k, v) for k, v in os.environ.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES))


def identity():
    """Who and where: part of the cache key (a home folder shared by cluster nodes must not share results)."""
    import socket

    out = {"hostname": socket.gethostname(), "uid": os.getuid() if hasattr(os, "getuid") else None,
           "groups": sorted(os.getgroups()) if hasattr(os, "getgroups") else None}
    import hashlib

    for key, path in (("machine_id", "/etc/machine-id"), ("boot_id", "/proc/sys/kernel/random/boot_id")):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
        except OSError:
            out[key] = None
            continue
        # only a digest: machine-id is meant to stay private (machine-id(5))
        out[key] = hashlib.sha256(("uvkernel:" + raw).encode()).hexdigest()[:20]
    return out


# --- NVML ------------------------------------------------------------------------------------------
def _loaded_library(fragment):
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                if fragment in line:
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    return None


def nvml_facts():
    """The driver as NVML sees it (NVML ignores CUDA_VISIBLE_DEVICES; the mask is applied afterwards)."""
    import ctypes

    out = {"loaded": False}  # type: dict
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as exc:
        out["error"] = str(exc)
        return out
    out["loaded"] = True
    out["library"] = _loaded_library("libnvidia-ml")
    error_string = getattr(lib, "nvmlErrorString", None)
    if error_string is not None:
        error_string.restype = ctypes.c_char_p

    def describe(rc):
        text = None
        if error_string is not None:
            try:
                raw = error_string(rc)
                text = raw.decode("utf-8", "replace") if raw else None
            except Exception:
                text = None
        return "{}: {}".format(NVML_ERRORS.get(rc, "ERROR {}".format(rc)), text or "no description")

    init = getattr(lib, "nvmlInit_v2", None) or getattr(lib, "nvmlInit")
    rc = init()
    if rc != 0:
        out["init_error"] = rc
        out["init_error_name"] = NVML_ERRORS.get(rc, "ERROR")
        out["init_error_text"] = describe(rc)
        return out
    byref, c_uint, c_int = ctypes.byref, ctypes.c_uint, ctypes.c_int

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    def text_of(fn, handle, size=96):
        buf = ctypes.create_string_buffer(size)
        rc = fn(handle, buf, c_uint(size)) if handle is not None else fn(buf, c_uint(size))
        return buf.value.decode("utf-8", "replace") if rc == 0 else None

    try:
        out["driver_version"] = text_of(lib.nvmlSystemGetDriverVersion, None, 80)
        version = c_int(0)
        fn = getattr(lib, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(lib, "nvmlSystemGetCudaDriverVersion")
        if fn(byref(version)) == 0 and version.value > 0:
            out["cuda_driver_version"] = "{}.{}".format(version.value // 1000, (version.value % 1000) // 10)
        count = c_uint(0)
        fn = getattr(lib, "nvmlDeviceGetCount_v2", None) or getattr(lib, "nvmlDeviceGetCount")
        rc = fn(byref(count))
        if rc != 0:
            out["count_error"] = describe(rc)
        devices = []
        get_handle = getattr(lib, "nvmlDeviceGetHandleByIndex_v2", None) or getattr(lib, "nvmlDeviceGetHandleByIndex")
        for index in range(count.value):
            handle = ctypes.c_void_p()
            rc = get_handle(c_uint(index), byref(handle))
            if rc != 0:
                devices.append({"index": index, "error": describe(rc)})
                continue
            device = {"index": index, "name": text_of(lib.nvmlDeviceGetName, handle),
                      "uuid": text_of(lib.nvmlDeviceGetUUID, handle)}
            major, minor = c_int(0), c_int(0)
            if lib.nvmlDeviceGetCudaComputeCapability(handle, byref(major), byref(minor)) == 0:
                device["capability"] = "{}.{}".format(major.value, minor.value)
            memory = Memory()
            if lib.nvmlDeviceGetMemoryInfo(handle, byref(memory)) == 0:
                device["memory_total"] = int(memory.total)
            number = c_uint(0)
            if lib.nvmlDeviceGetMinorNumber(handle, byref(number)) == 0:
                device["minor_number"] = number.value
            current, pending = c_uint(0), c_uint(0)
            fn = getattr(lib, "nvmlDeviceGetMigMode", None)
            device["mig"] = False
            if fn is not None and fn(handle, byref(current), byref(pending)) == 0:
                device["mig"] = current.value == 1
            if device["mig"]:
                device["mig_devices"] = _mig_devices(lib, handle, text_of)
            devices.append(device)
        out["devices"] = devices
    finally:
        shutdown = getattr(lib, "nvmlShutdown", None)
        if shutdown is not None:
            shutdown()
    return out


def _mig_devices(lib, handle, text_of):
    import ctypes

    found = []  # type: list
    most = ctypes.c_uint(0)
    if lib.nvmlDeviceGetMaxMigDeviceCount(handle, ctypes.byref(most)) != 0:
        return found
    for slot in range(most.value):
        child = ctypes.c_void_p()
        if lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, ctypes.c_uint(slot), ctypes.byref(child)) != 0:
            continue
        found.append({"slot": slot, "uuid": text_of(lib.nvmlDeviceGetUUID, child),
                      "name": text_of(lib.nvmlDeviceGetName, child)})
    return found


# --- the layers --------------------------------------------------------------------------------------
def _guard(errors, section, fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # one broken section must not hide the others
        errors.append({"section": section, "error": "{}: {}".format(type(exc).__name__, exc)})
        return None


def cheap(config, out=None):
    started = _clock()
    stage = out.emit if out is not None else (lambda kind, data: None)
    errors = []  # type: list
    env = config.get("env") or sys.prefix
    origins = Origins(env, config.get("host_site_packages") or [])
    entries = [p for p in sys.path if p and os.path.isdir(p)]
    packages = {}
    names = list(config.get("packages") or [])
    if "torch" not in names:
        names.append("torch")  # torch's facts are always reported, required or not
    for name in names:
        packages[name] = _guard(errors, "locate " + name, locate, name, entries, origins)
    torch = packages.get("torch") or {}
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    kind, parsed = parse_visible_devices(cvd)
    stage("stage", "reading the driver through NVML (libnvidia-ml.so.1)")
    nvml = _guard(errors, "nvml", nvml_facts) or {"loaded": False, "error": "the NVML query failed"}
    visible = visible_devices(kind, parsed, nvml.get("devices") or [])
    facts = {
        "probe": PROBE_FORMAT,
        "python": {"executable": sys.executable, "version": ".".join(map(str, sys.version_info[:3])),
                   "implementation": sys.implementation.name if hasattr(sys, "implementation") else "cpython",
                   "prefix": sys.prefix, "base_prefix": getattr(sys, "base_prefix", sys.prefix),
                   "no_user_site": bool(sys.flags.no_user_site)},
        "sys_path": list(sys.path),
        "pyvenv_cfg": read_pyvenv_cfg(sys.prefix),
        "packages": packages,
        "local_shadows": _guard(errors, "notebook folder", local_shadows, config.get("notebook_dir") or os.getcwd(),
                                names) or [],
        "notebook_dir": config.get("notebook_dir") or os.getcwd(),
        "torch": _guard(errors, "torch/version.py", torch_build, torch.get("location")),
        "nvidia_distributions": _guard(errors, "nvidia distributions", nvidia_distributions, entries, origins) or [],
        "companions": _guard(errors, "torch companions", companions, entries, origins) or [],
        "environment": relevant_environment(),
        "visible": {"CUDA_VISIBLE_DEVICES": cvd, "kind": kind, "parsed": parsed, "devices": visible,
                    "count": len(visible)},
        "device_files": _guard(errors, "device files", device_files, os.environ.get("UVKERNEL_PROBE_DEV_DIR", "/dev")),
        "nvml": nvml,
        "identity": _guard(errors, "identity", identity),
        "errors": errors,
    }
    facts["timings"] = {"python_start_to_probe_ms": round((started - _T0) * 1000, 1),
                        "cheap_ms": round((_clock() - started) * 1000, 1)}
    return facts


def _error_text(exc):
    import traceback

    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()


def _traceback(lines=25):
    import traceback

    return "".join(traceback.format_exc().splitlines(True)[-lines:]).rstrip()


def deep(config, out):
    """Import the packages and initialise CUDA: only on a cache miss or a recheck."""
    import warnings

    started = _clock()
    facts = {"imports": {}, "warnings": []}  # type: dict
    modules = {}
    names = list(config.get("deep_packages") or [])
    names.sort(key=lambda n: n != "torch")  # torch first: the others usually import it
    for name in names:
        out.emit("stage", "import " + name)
        t = _clock()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                module = __import__(name)
                modules[name] = module
                facts["imports"][name] = {"ok": True, "version": str(getattr(module, "__version__", "") or ""),
                                          "file": getattr(module, "__file__", None)}
            except BaseException as exc:  # SystemExit and the like from a broken package still report
                if isinstance(exc, KeyboardInterrupt):
                    raise
                facts["imports"][name] = {"ok": False, "error": _error_text(exc), "traceback": _traceback()}
        facts["imports"][name]["ms"] = round((_clock() - t) * 1000, 1)
        facts["warnings"].extend(str(w.message) for w in caught)
    torch = modules.get("torch")
    if torch is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            facts["torch"] = torch_deep(torch, config, out)
        facts["warnings"].extend(str(w.message) for w in caught)
    if config.get("companions"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            facts["companions"] = load_companions(config["companions"], out)
        facts["warnings"].extend(str(w.message) for w in caught)
    facts["ms"] = round((_clock() - started) * 1000, 1)
    return facts


def load_companions(wanted, out):
    """Load every companion as the kernel would use it, after torch: its modules, its extension modules (they
    load lazily, e.g. torchvision's ops only at the first call) and every shared object it built against torch.

    Every step is recorded; a failed library load is named first (it explains the import errors it causes).
    ``wanted``: entries of the cheap facts' ``companions``."""
    import ctypes
    import importlib

    try:
        __import__("torch")  # companions resolve libtorch/libc10 through the already loaded torch
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {c["name"]: {"ok": False, "steps": [], "error": "import torch: " + _error_text(exc)} for c in wanted}
    results = {}
    for companion in wanted:
        name = companion["name"]
        out.emit("stage", "load companion " + name)
        t = _clock()
        steps = []
        for module in companion.get("modules") or []:
            steps.append(_step("import " + module, importlib.import_module, module))
        for item in companion.get("shared_objects") or []:
            full = os.path.join(companion["location"], item["path"])
            step = _step("load " + full, ctypes.CDLL, full)
            steps.append(step)
            module = item.get("module")
            # a Python extension (it exports PyInit_<name>) is imported too: its init runs as in the kernel;
            # a plain library (torch.ops.load_library style) is complete once loaded
            if step["ok"] and module and hasattr(step.pop("value"), "PyInit_" + module.rsplit(".", 1)[-1]):
                steps.append(_step("import " + module, importlib.import_module, module))
            step.pop("value", None)
        for step in steps:
            step.pop("value", None)
            if not step["ok"]:
                step["kind"], step["library"] = failure_kind(step.get("error") or "")
        # a system library the package's optional loaders need (one loader per FFmpeg major, say) is not a
        # mismatch with torch: those steps are reported, and the package passes when nothing else failed
        failed = [s for s in steps if not s["ok"] and s["kind"] != "system"]
        missing = sorted({s["library"] for s in steps if not s["ok"] and s["kind"] == "system" and s["library"]})
        results[name] = {"ok": not failed, "steps": steps, "ms": round((_clock() - t) * 1000, 1),
                         "missing_system_libraries": missing}
        if failed:
            # a library that does not load is the root cause of the import errors it brings: name it first
            loads = [s for s in failed if s["step"].startswith("load ")]
            first = (loads or failed)[0]
            results[name].update(error=first["error"], failed_step=first["step"])
    return results


# libraries that belong to torch's build or to CUDA: a companion that needs one the host lacks was built for
# another build of torch (a CUDA torchvision on a +cpu host needs libtorch_cuda.so)
# (torch's own: libtorch.so, libtorch_cpu.so, libtorch_cuda.so, libc10.so, libc10_cuda.so …; not a package's own
# library that merely starts with the same letters, such as torchcodec's libtorchcodec_core4.so)
_BUILD_LIBRARY = re.compile(r"^(libtorch(_[a-z]+(_[a-z]+)?)?|libc10(_[a-z]+)?|libshm|libcuda|libcudart|libcudnn[a-z_]*|"
                            r"libcublas(Lt)?|libcufft|libcurand|libcusolver|libcusparse(Lt)?|libnvrtc[a-z-]*|"
                            r"libnvJitLink|libnvjitlink|libnccl|libnvToolsExt|libcupti|libamdhip64|libhip[a-z]*|"
                            r"librocm[a-z_]*|libMIOpen|libgomp|libiomp5)\.so")
_MISSING_LIBRARY = re.compile(r"([A-Za-z0-9_.+-]+\.so(?:\.[0-9]+)*): cannot open shared object file")


def failure_kind(error):
    """('system', library) when a load failed only because a library outside torch and CUDA is missing (an
    optional native module of the package), ('abi', library or '') for a mismatch with the host's torch (an
    undefined libtorch/c10 symbol, a torch or CUDA library the host's build lacks), ('error', '') otherwise."""
    if "undefined symbol" in error:
        return "abi", ""
    found = _MISSING_LIBRARY.findall(error)
    if found:
        build = [lib for lib in found if _BUILD_LIBRARY.match(lib)]
        if build:
            return "abi", build[0]
        return "system", found[0]
    return "error", ""


def _step(what, fn, arg):
    try:
        return {"step": what, "ok": True, "value": fn(arg)}
    except BaseException as exc:  # SystemExit from a package's import still reports
        if isinstance(exc, KeyboardInterrupt):
            raise
        step = {"step": what, "ok": False, "error": _error_text(exc)}
        if not isinstance(exc, (ImportError, OSError)):
            step["traceback"] = _traceback(12)
        return step


def torch_deep(torch, config, out):
    version = getattr(torch, "version", None)
    facts = {"version": str(getattr(torch, "__version__", "")), "file": getattr(torch, "__file__", None),
             "cuda": getattr(version, "cuda", None), "hip": getattr(version, "hip", None)}  # type: dict
    try:
        facts["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:
        facts["cudnn_error"] = _error_text(exc)
    if not config.get("init_cuda") or not facts["cuda"]:
        return facts
    cuda = torch.cuda
    out.emit("stage", "torch.cuda.init()")
    try:
        cuda.init()
        facts["cuda_init"] = "ok"
    except Exception as exc:
        facts["cuda_init"] = "failed"
        facts["cuda_init_error"] = _error_text(exc)
        return facts
    out.emit("stage", "torch.cuda device properties")
    facts["device_count"] = cuda.device_count()
    try:
        facts["arch_list"] = list(cuda.get_arch_list())
    except Exception as exc:
        facts["arch_list_error"] = _error_text(exc)
    devices = []
    for index in range(facts["device_count"]):
        device = {"index": index}  # type: dict
        try:
            props = cuda.get_device_properties(index)
            device.update(name=props.name, capability="{}.{}".format(props.major, props.minor),
                          total_memory=int(props.total_memory),
                          multi_processor_count=getattr(props, "multi_processor_count", None),
                          uuid=str(getattr(props, "uuid", "") or "") or None)
        except Exception as exc:
            device["error"] = _error_text(exc)
        if config.get("smoke", True) and "error" not in device:
            out.emit("stage", "a first operation on cuda:{}".format(index))
            try:
                value = float((torch.ones(4, device="cuda:{}".format(index)) * 2).sum().item())
                device["smoke"] = "ok" if value == 8.0 else "wrong result {}".format(value)
            except Exception as exc:
                device["smoke"] = _error_text(exc)
        devices.append(device)
    facts["devices"] = devices
    return facts


def main(argv):
    out = Output()
    own = os.path.dirname(os.path.abspath(__file__))
    if sys.path and _real(sys.path[0] or os.getcwd()) == _real(own):
        del sys.path[0]  # our folder is no package source for the kernel
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    out.emit("stage", "the cheap checks")
    facts = cheap(config, out)
    out.emit("cheap", facts)
    if config.get("deep"):
        out.emit("deep", deep(config, out))
    out.emit("done", {"ms": round((_clock() - _T0) * 1000, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
