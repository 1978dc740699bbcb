"""Install the fake torch (a TEST DOUBLE) with a real dist-info, and build its behaviour variable.

    install(site_packages, version="2.13.0+cu128", cuda="12.8")   -> the torch/ folder
    behaviour(devices=[...], init_error=..., ...)                  -> {"UVKERNEL_FAKE_TORCH": json}
    install_dist(site_packages, "nvidia-cudnn-cu12", "9.1.0.70")   -> a real dist-info for any name
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).with_name("fake_torch") / "torch"
ENV_VAR = "UVKERNEL_FAKE_TORCH"

VERSION_PY = """\
from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'rocm', 'xpu']
__version__ = {version!r}
debug = False
cuda: Optional[str] = {cuda!r}
git_version = 'uvkernel-test-double'
hip: Optional[str] = {hip!r}
rocm: Optional[str] = {hip!r}
xpu: Optional[str] = None
"""


def _record_line(root: Path, path: Path) -> str:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(root).as_posix()},sha256={digest},{len(data)}"


def _dist_info(site_packages: Path, name: str, version: str, files: list[Path], summary: str) -> Path:
    folder = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n")
    (folder / "INSTALLER").write_text("uvkernel-tests\n")
    (folder / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: uvkernel-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    lines = [_record_line(site_packages, f) for f in files + [folder / "METADATA", folder / "INSTALLER",
                                                              folder / "WHEEL"]]
    lines.append(f"{folder.name}/RECORD,,")
    (folder / "RECORD").write_text("\n".join(lines) + "\n")
    return folder


def install(site_packages: Path, version: str = "2.13.0+cu128", cuda: str | None = "12.8",
            hip: str | None = None) -> Path:
    """Copy the fake torch into site_packages with a version.py describing this build; return torch/."""
    site_packages = Path(site_packages)
    remove(site_packages)
    target = site_packages / "torch"
    shutil.copytree(TEMPLATE, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "version.py").write_text(VERSION_PY.format(version=version, cuda=cuda, hip=hip))
    files = sorted(p for p in target.rglob("*") if p.is_file())
    _dist_info(site_packages, "torch", version, files, "TEST DOUBLE of torch (uvkernel tests), not PyTorch")
    return target


def set_build(site_packages: Path, version: str, cuda: str | None, hip: str | None = None) -> None:
    """Rewrite version.py in place (what the cheap layer reads), as a reinstall of another build would."""
    (Path(site_packages) / "torch" / "version.py").write_text(VERSION_PY.format(version=version, cuda=cuda, hip=hip))


def remove(site_packages: Path) -> None:
    site_packages = Path(site_packages)
    shutil.rmtree(site_packages / "torch", ignore_errors=True)
    for folder in site_packages.glob("torch-*.dist-info"):
        shutil.rmtree(folder)


def install_dist(site_packages: Path, name: str, version: str) -> Path:
    """A real (empty) distribution, e.g. an nvidia-* wheel stand-in with one library file."""
    site_packages = Path(site_packages)
    package = site_packages / "nvidia" / name.replace("-", "_")
    (package / "lib").mkdir(parents=True, exist_ok=True)
    lib = package / "lib" / f"lib{name}.so.1"
    lib.write_bytes(b"not a library: uvkernel test double\n")
    return _dist_info(site_packages, name, version, [lib], f"TEST DOUBLE of {name}")


def behaviour(**settings: Any) -> dict[str, str]:
    """The environment variable that drives the fake (keys: see torch/__init__.py)."""
    return {ENV_VAR: json.dumps(settings)}


def device(name: str = "NVIDIA A100-SXM4-80GB", capability: str = "8.0", uuid: str = "GPU-11111111-2222-3333-4444-555555555555",
           total_memory: int = 85_100_000_000, multi_processor_count: int = 108) -> dict[str, Any]:
    return {"name": name, "capability": capability, "uuid": uuid, "total_memory": total_memory,
            "multi_processor_count": multi_processor_count}


def matches(site_packages: Path, version: str, cuda: str | None, hip: str | None = None) -> bool:
    """Is this build of the fake, from the current template, what site_packages holds?"""
    target = Path(site_packages) / "torch"
    for source in TEMPLATE.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            copy = target / source.relative_to(TEMPLATE)
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                return False
    version_py = target / "version.py"
    return (version_py.is_file() and version_py.read_text() == VERSION_PY.format(version=version, cuda=cuda, hip=hip)
            and (Path(site_packages) / f"torch-{version}.dist-info" / "RECORD").is_file())


def main(argv: list[str] | None = None) -> int:
    """``python tests/doubles/fake_torch.py SITE_PACKAGES [--version V] [--cuda C|none]``: make the fake a host's
    torch (scripts/setup.sh, for the interpreters no real torch wheel is on disk for); nothing when it already is."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("site_packages", type=Path)
    parser.add_argument("--version", default="2.13.0+cpu")
    parser.add_argument("--cuda", default="none", help="torch.version.cuda, or none for a CPU build")
    args = parser.parse_args(argv)
    cuda = None if args.cuda.lower() == "none" else args.cuda
    if matches(args.site_packages, args.version, cuda):
        print(f"fake torch {args.version} already in {args.site_packages}")
    else:
        install(args.site_packages, version=args.version, cuda=cuda)
        print(f"installed the fake torch {args.version} (TEST DOUBLE) into {args.site_packages}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
