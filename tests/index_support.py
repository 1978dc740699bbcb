"""Local package indexes the tests build, standing in for download.pytorch.org and private indexes.

The PyTorch indexes (and every index but PyPI) are unreachable here, so the tests make small wheels of their
own (real wheels: a dist-info with METADATA, WHEEL and RECORD, and a module) and serve them as a PEP 503
``file://`` simple index, or as a flat find-links folder.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import re
import threading
import zipfile
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, version: str, *, requires: list[str] = (), module: str | None = None,
               code: str | None = None, extra: dict[str, bytes] | None = None, requires_python: str = "") -> Path:
    """A wheel ``name-version-py3-none-any.whl`` whose module records where it came from; ``extra``: more files
    (relative path -> bytes), e.g. a shared object that makes it a compiled companion."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "_", name).lower()
    module = module or stem
    info = f"{stem}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": (code if code is not None else
                                  f"BUILD = {version!r}\nFROM = 'test index wheel {name} {version}'\n").encode(),
        f"{info}/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                             + (f"Requires-Python: {requires_python}\n" if requires_python else "")
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: uvkernel-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": f"{module}\n".encode(),
        **(extra or {}),
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for p, d in files.items():
            whl.writestr(p, d)
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def simple_index(root: Path, wheels: list[Path]) -> str:
    """A PEP 503 simple index of ``wheels`` under ``root``; returns its ``file://`` URL."""
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        projects.setdefault(project, []).append(wheel)
    root.mkdir(parents=True, exist_ok=True)
    for project, files in projects.items():
        page = root / project
        page.mkdir(exist_ok=True)
        links = []
        for wheel in files:
            target = page / wheel.name
            if not target.exists():
                target.write_bytes(wheel.read_bytes())
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            links.append(f'<a href="{wheel.name}#sha256={digest}">{wheel.name}</a>')
        (page / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    (root / "index.html").write_text("<html><body>\n" + "\n".join(
        f'<a href="{p}/">{p}</a>' for p in sorted(projects)) + "\n</body></html>\n")
    return root.as_uri()


def serve(folder: Path, handler: type[http.server.SimpleHTTPRequestHandler] = http.server.SimpleHTTPRequestHandler
          ) -> http.server.ThreadingHTTPServer:
    """A loopback HTTP server for ``folder`` (in a thread, stopped by the caller); ``handler`` may change what it
    sends.  Its requests are not logged unless ``handler`` logs them."""
    quiet = handler if "log_message" in vars(handler) else type("Quiet", (handler,), {
        "log_message": lambda *a, **k: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tiny_shared_object(folder: Path) -> bytes:
    """A real, loadable shared object (one C function, built with gcc): what makes a test wheel "compiled"."""
    import shutil
    import subprocess

    gcc = shutil.which("gcc")
    assert gcc, "gcc is missing: run scripts/setup.sh --e2e (it installs gcc for the test doubles)"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.c").write_text("int uvkernel_test_double(void) { return 42; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(folder / "tiny.so"), str(folder / "tiny.c")], check=True)
    return (folder / "tiny.so").read_bytes()


_SLOW_BACKEND = '''\
"""A PEP 517 backend in the sdist itself (no build requirement to download): sleeps, then writes the wheel."""
import base64, hashlib, os, time, zipfile

NAME, VERSION, SLEEP, COUNTER, FAIL = {name!r}, {version!r}, {sleep!r}, {counter!r}, {fail!r}
META = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(folder, config_settings=None, metadata_directory=None):
    if COUNTER:  # one line per build, for the tests that count builds
        with open(COUNTER, "a") as out:
            out.write(f"{{os.getpid()}}\\n")
    time.sleep(SLEEP)
    if FAIL:
        raise RuntimeError(FAIL)
    info = f"{{NAME}}-{{VERSION}}.dist-info"
    files = {{f"{{NAME}}/__init__.py": b"BUILT_SLOWLY = True\\n", f"{{info}}/METADATA": META.encode(),
             f"{{info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = [f"{{p}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()}},{{len(d)}}"
              for p, d in files.items()] + [f"{{info}}/RECORD,,"]
    wheel = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(folder, wheel), "w") as whl:
        for p, d in files.items():
            whl.writestr(p, d)
        whl.writestr(f"{{info}}/RECORD", "\\n".join(record) + "\\n")
    return wheel
'''


def slow_sdist(folder: Path, name: str, version: str, sleep: float, counter: Path | None = None,
               fail: str = "") -> Path:
    """An sdist whose build takes ``sleep`` seconds: a long first env build, offline.  uv keeps built wheels in
    its cache, so each test run gives it a version of its own.  ``counter``: a file each build adds a line to;
    ``fail``: the build then fails with this message."""
    import io
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{version}"
    files = {
        "pyproject.toml": f'[build-system]\nrequires = []\nbuild-backend = "slow_backend"\nbackend-path = ["."]\n'
                          f'[project]\nname = "{name}"\nversion = "{version}"\n',
        "slow_backend.py": _SLOW_BACKEND.format(name=name, version=version, sleep=sleep,
                                                  counter=str(counter) if counter else "", fail=fail),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    path = folder / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{stem}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def torch_linked_object(folder: Path, host_python: str, needs: str = "") -> bytes:
    """A real shared object whose ELF DT_NEEDED names the host torch's libc10 (what makes a wheel a torch
    companion), and ``needs`` too when given: a system library built here as a stub and then left behind, so the
    object cannot load (an optional loader whose system library is missing)."""
    import shutil
    import subprocess

    gcc = shutil.which("gcc")
    assert gcc, "gcc is missing: run scripts/setup.sh --e2e (it installs gcc for the test doubles)"
    torch_dir = subprocess.run([host_python, "-I", "-c", "import os, torch; print(os.path.dirname(torch.__file__))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c.c").write_text("int uvkernel_companion_double(void) { return 7; }\n")
    out = folder / "linked.so"
    argv = [gcc, "-shared", "-fPIC", "-o", str(out), str(folder / "c.c"), f"-L{torch_dir}/lib", "-Wl,--no-as-needed",
            "-lc10"]
    if needs:
        (folder / "stub.c").write_text("int uvkernel_missing_lib(void) { return 1; }\n")
        subprocess.run([gcc, "-shared", "-fPIC", "-Wl,-soname," + needs, "-o", str(folder / needs),
                        str(folder / "stub.c")], check=True)
        argv.append(str(folder / needs))
    subprocess.run(argv, check=True)
    return out.read_bytes()
