"""Built editables of the project's own code, kept in uvkernel's cache so a cold env need not build them again.

``uv pip install -e`` builds the editable wheel on every call (a build env and the backend's run: ~0.5 s for a
hatchling project), while ``uv sync`` reuses its build of a source tree whose cache keys did not change.  This
module gives an editable install the same reuse: after a build, the installed distribution is packed back into
a wheel (its dist-info and the files it put in site-packages: the ``.pth`` or the import hook pointing at the
source tree), kept under a key made the way uv makes its own: the folder, the interpreter's version and the
project's ``[tool.uv] cache-keys`` (by default pyproject.toml, setup.py and setup.cfg).  A later env of the
same unchanged tree installs that wheel (a copy, no build); a changed key builds again.

Only what the wheel can recreate is kept: an install that put files outside site-packages other than the
console scripts its entry points name (which the installer writes again for the env's own python) is not.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..files import write_atomic

DEFAULT_CACHE_KEYS: list[Any] = [{"file": "pyproject.toml"}, {"file": "setup.py"}, {"file": "setup.cfg"}]
# what the installer writes for this env, never part of the built wheel
INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json"}
FORMAT = "1"  # bumped when the kept wheel's layout or the key's inputs change


def cache_key(root: Path, site_packages: Path) -> str | None:
    """The key of ``root``'s editable build, or None when its cache keys cannot be honoured here (then it is
    built every time, as before)."""
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError, RecursionError):
        return None
    keys = ((data.get("tool") or {}).get("uv") or {}).get("cache-keys", DEFAULT_CACHE_KEYS)
    if not isinstance(keys, list):
        return None
    digest = hashlib.sha256()
    # the folder is in the built files (the .pth names it); the interpreter's version decides the wheel's tags
    for part in (FORMAT, str(root.resolve()), str(site_packages.parent.name)):
        digest.update(part.encode() + b"\0")
    for entry in keys:
        value = _key_value(root, entry)
        if value is _UNKNOWN:
            return None
        digest.update(json.dumps([entry, value], sort_keys=True, default=str).encode() + b"\0")
    return digest.hexdigest()[:32]


_UNKNOWN = object()


def _key_value(root: Path, entry: Any) -> Any:
    if isinstance(entry, str):
        entry = {"file": entry}
    if not isinstance(entry, dict) or len(entry) != 1:
        return _UNKNOWN
    (kind, spec), = entry.items()
    if kind == "file" and isinstance(spec, str):
        return [(str(p.relative_to(root)), _file_digest(p)) for p in sorted(root.glob(spec)) if p.is_file()]
    if kind == "dir" and isinstance(spec, str):
        try:
            return (root / spec).stat().st_mtime_ns  # uv keys a folder on its own timestamp too
        except OSError:
            return ""
    if kind == "env" and isinstance(spec, str):
        return os.environ.get(spec)
    if kind == "git":
        commit = spec is True or isinstance(spec, dict) and spec.get("commit", False)
        tags = isinstance(spec, dict) and spec.get("tags", False)
        if not isinstance(spec, (bool, dict)):
            return _UNKNOWN
        return [_git(root, "rev-parse", "HEAD") if commit else "",
                _git(root, "tag", "--points-at", "HEAD") if tags else ""]
    return _UNKNOWN  # a kind this version does not know: never reuse a build it cannot key


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "(no git)"
    return done.stdout.strip() if done.returncode == 0 else f"(git failed {done.returncode})"


def kept_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    return wheels[0] if wheels else None


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def keep(site_packages: Path, dist_info: Path, folder: Path) -> Path | None:
    """Pack the editable just installed (``dist_info`` in ``site_packages``) into a wheel in ``folder``; None
    when it cannot be recreated from a wheel (files outside site-packages other than its console scripts)."""
    try:
        rows = list(csv.reader(io.StringIO((dist_info / "RECORD").read_text(encoding="utf-8"))))
        entry_points = (dist_info / "entry_points.txt").read_text(encoding="utf-8") \
            if (dist_info / "entry_points.txt").exists() else ""
        wheel_meta = (dist_info / "WHEEL").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    if "Root-Is-Purelib: true" not in wheel_meta:
        return None
    scripts = {line.split("=", 1)[0].strip() for line in entry_points.splitlines() if "=" in line}
    files: list[tuple[str, bytes]] = []
    for row in rows:
        if not row or not row[0]:
            continue
        rel = row[0]
        target = (site_packages / rel).resolve()
        if not str(target).startswith(str(site_packages.resolve()) + os.sep):
            if target.parent.name == "bin" and target.name in scripts:
                continue  # a console script: the installer writes it again for the env it installs into
            return None
        if rel.startswith(dist_info.name + "/") and rel.split("/", 1)[1] in INSTALLER_FILES:
            continue
        try:
            files.append((rel, target.read_bytes()))
        except OSError:
            return None
    name, _, version = dist_info.name[:-len(".dist-info")].partition("-")
    tags = [line.split(":", 1)[1].strip().split("-") for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    # the file name's compressed tag set (py2.py3-none-any): a name with one of them only would not install
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags if len(t) == 3)) for i in range(3)) \
        if tags and all(len(t) == 3 for t in tags) else "py3-none-any"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as wheel:
        record = io.StringIO()
        writer = csv.writer(record, lineterminator="\n")
        for rel, data in files:
            wheel.writestr(rel, data)
            writer.writerow([rel, _record_hash(data), len(data)])
        writer.writerow([f"{dist_info.name}/RECORD", "", ""])
        wheel.writestr(f"{dist_info.name}/RECORD", record.getvalue())
    path = folder / f"{name}-{version}-{tag}.whl"
    try:
        write_atomic(path, buffer.getvalue(), make_parent=True)
    except OSError:
        return None
    return path


def mark_editable(dist_info: Path, root: Path) -> None:
    """The installed kept wheel says what it is: an editable of ``root`` (as ``uv pip install -e`` writes it), so
    uv, pip and uvkernel's own reading of the env see the project's editable, not a wheel from the cache."""
    text = json.dumps({"url": root.resolve().as_uri(), "dir_info": {"editable": True}}, separators=(",", ":"))
    write_atomic(dist_info / "direct_url.json", text)
    record = dist_info / "RECORD"
    try:
        rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
    except OSError:
        return
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        if row and row[0] == f"{dist_info.name}/direct_url.json":
            row = [row[0], _record_hash(text.encode()), str(len(text.encode()))]
        writer.writerow(row)
    write_atomic(record, out.getvalue())
