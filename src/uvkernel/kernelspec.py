"""Writing, removing and listing uvkernel kernel specs where jupyter_client looks for them."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel, _is_valid_kernel_name

from . import host as host_mod
from .errors import SpecError, UvkernelError
from .files import read_input
from .settings import validate_config
from .shared import DEFAULT_DISPLAY_NAME, DEFAULT_NAME, LAUNCHER

PROVISIONER = "uvkernel"
LOGOS = Path(__file__).with_name("resources")




def launcher_argv(python: str, name: str) -> list[str]:
    return [python, "-c", LAUNCHER, "kernel", "--kernel", name, "-f", "{connection_file}"]


def spec_dict(*, display_name: str, config: dict[str, Any], env: dict[str, str], name: str,
              python: str | None = None) -> dict[str, Any]:
    """The kernel.json content.

    argv still starts a working kernel where a client ignores provisioners (VS Code): ``uvkernel kernel``
    runs the same pipeline, then replaces itself with the env's ipykernel.
    """
    return {
        "argv": launcher_argv(python or sys.executable, name),
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "env": dict(env),
        "metadata": {
            "debugger": True,
            "kernel_provisioner": {"provisioner_name": PROVISIONER, "config": dict(config)},
        },
    }


def validate_name(name: str) -> None:
    # "." and ".." pass Jupyter's own pattern, but as folder names they are the kernels folder or its parent
    if not _is_valid_kernel_name(name) or name.strip(".") == "":
        raise SpecError("KERNEL_NAME_INVALID", name=name)


def validate_env(env: dict[str, str]) -> None:
    """Every name a variable can have: not empty, no "=" and no NUL (the kernel's start would fail on each)."""
    for key, value in env.items():
        problem = ("the name is empty" if not key else "the name holds '='" if "=" in key
                   else "it holds a NUL character" if "\0" in key + value else "")
        if problem:
            raise SpecError("KERNEL_ENV_INVALID", key=key, value=value, problem=problem)


def install(
    *,
    name: str = DEFAULT_NAME,
    display_name: str | None = None,
    host_python: str | None = None,
    env: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install a spec; returns the folder it was written to."""
    validate_name(name)
    validate_env(env or {})
    settings = dict(config or {})
    if host_python:
        host = host_mod.inspect_sync(host_python, "uvkernel install --host-python")
        settings["host_python"] = host.path
    validate_config(settings)
    data = spec_dict(display_name=display_name or DEFAULT_DISPLAY_NAME, config=settings, env=env or {}, name=name)
    with tempfile.TemporaryDirectory(prefix="uvkernel-spec-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        (folder / "kernel.json").write_text(json.dumps(data, indent=1) + "\n")
        for logo in LOGOS.glob("logo-*"):
            shutil.copy(logo, folder / logo.name)
        return KernelSpecManager().install_kernel_spec(str(folder), name, user=user, prefix=prefix)


def uninstall(name: str, *, user: bool = False, prefix: str | None = None) -> str:
    """Remove a spec; with a location flag only from that location."""
    validate_name(name)  # the names install accepts: no "/", no "..", so nothing outside the kernels folder
    manager = KernelSpecManager()
    if user or prefix:
        base = (Path(manager.user_kernel_dir) if user or prefix is None
                else Path(prefix) / "share" / "jupyter" / "kernels")
        folder = base / name
        if not _inside(folder, base) or not (folder / "kernel.json").is_file():
            raise SpecError("KERNEL_NOT_FOUND", name=name, where=f" in {base}")
        shutil.rmtree(folder)
        return str(folder)
    try:
        found = manager.find_kernel_specs().get(name)
        if found is None or not any(_inside(Path(found), Path(d)) for d in manager.kernel_dirs):
            raise KeyError(name)
        return manager.remove_kernel_spec(name)
    except (NoSuchKernel, KeyError):
        raise SpecError("KERNEL_NOT_FOUND", name=name, where="") from None


def _inside(folder: Path, base: Path) -> bool:
    """Is ``folder`` a real folder directly inside ``base`` (no link leading elsewhere)?"""
    if os.path.islink(folder):
        return False
    return os.path.realpath(folder.parent) == os.path.realpath(base) and folder.name not in ("", ".", "..")


def find_specs() -> list[dict[str, Any]]:
    """Every installed spec that uses the uvkernel provisioner."""
    out = []
    for name, entry in sorted(KernelSpecManager().get_all_specs().items()):
        spec = entry.get("spec") or {}
        prov = (spec.get("metadata") or {}).get("kernel_provisioner") or {}
        if prov.get("provisioner_name") != PROVISIONER:
            continue
        config = prov.get("config") or {}
        host = config.get("host_python") or (
            f"${host_mod.HOST_ENV_VAR}" if os.environ.get(host_mod.HOST_ENV_VAR) else "the server's interpreter")
        out.append({"name": name, "display_name": spec.get("display_name"), "resource_dir": entry["resource_dir"],
                    "host_python": host, "config": config, "stale": stale_reason(spec, config)})
    return out


def stale_reason(spec: dict[str, Any], config: dict[str, Any]) -> str | None:
    """Why a spec can no longer start a kernel: its host interpreter (or the python its argv runs) is gone."""
    host = config.get("host_python")
    if isinstance(host, str) and host and not os.path.exists(os.path.expanduser(host)):
        return f"host interpreter {host} no longer exists"
    argv = spec.get("argv") or []
    if argv and os.path.isabs(str(argv[0])) and not os.path.exists(str(argv[0])):
        return f"the launcher's python {argv[0]} no longer exists"
    return None


def remove_stale(*, user: bool = False, prefix: str | None = None) -> list[dict[str, Any]]:
    """Remove every uvkernel spec whose interpreter is gone (with a location flag: only from there)."""
    base = None
    if user:
        base = os.path.realpath(KernelSpecManager().user_kernel_dir)
    elif prefix:
        base = os.path.realpath(os.path.join(prefix, "share", "jupyter", "kernels"))
    removed = []
    for spec in find_specs():
        folder = os.path.realpath(spec["resource_dir"])
        if not spec["stale"] or (base and not folder.startswith(base + os.sep)):
            continue
        if not os.path.isfile(os.path.join(folder, "kernel.json")):
            continue  # only a kernel spec folder, never anything else
        shutil.rmtree(folder)
        removed.append(spec)
    return removed


def load_config(name: str) -> tuple[dict[str, Any], dict[str, str], str]:
    """(provisioner config, env, kernel.json path) of a spec by name."""
    manager = KernelSpecManager()
    folder = manager.find_kernel_specs().get(name)
    if folder:
        try:
            read_input(Path(folder) / "kernel.json")  # a FIFO or a device would block or never end reading
        except UvkernelError as exc:
            raise SpecError("KERNEL_SPEC_INVALID", spec=os.path.join(folder, "kernel.json"), name=name,
                            detail=exc.summary) from None
        except OSError:
            pass  # jupyter_client says what is wrong below
    try:
        spec = manager.get_kernel_spec(name)
    except NoSuchKernel:
        raise SpecError("KERNEL_NOT_FOUND", name=name, where="") from None
    except Exception as exc:  # noqa: BLE001 - a hand-edited kernel.json: not JSON, or fields of the wrong type
        folder = manager.find_kernel_specs().get(name, "")
        raise SpecError("KERNEL_SPEC_INVALID", spec=os.path.join(folder, "kernel.json") if folder else name,
                        name=name, detail=f"{type(exc).__name__}: {exc}"[:300]) from None
    path = os.path.join(spec.resource_dir, "kernel.json")
    metadata = spec.metadata if isinstance(spec.metadata, dict) else {}
    prov = metadata.get("kernel_provisioner") or {}
    config = prov.get("config") if isinstance(prov, dict) else None
    if not isinstance(prov, dict) or not isinstance(config or {}, dict):
        raise SpecError("KERNEL_SPEC_INVALID", spec=path, name=name,
                        detail="metadata.kernel_provisioner must be a table with a config table")
    return dict(config or {}), dict(spec.env or {}), path
