"""The project's own editable is built once per unchanged source tree (uv's cache keys), and a deep verdict on a
companion belongs to its wheel, not to the env it was installed in."""

from __future__ import annotations

import subprocess
from pathlib import Path

from uvkernel.env import editables
from uvkernel.env.install import install_editable
from uvkernel.preflight import cache
from uvkernel.uvbin import find_uv as _find_uv

from helpers import run_async


def find_uv() -> str:
    return _find_uv()[0]

PYPROJECT = """\
[project]
name = "edpkg"
version = "0.1"
[project.scripts]
edpkg-hello = "edpkg:main"
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
"""


def _project(root: Path, extra: str = "") -> Path:
    (root / "src" / "edpkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT + extra)
    (root / "src" / "edpkg" / "__init__.py").write_text("def main():\n    print('hello from edpkg')\n")
    return root


def test_the_key_follows_uvs_default_cache_keys(tmp_path):
    root = _project(tmp_path / "p")
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    first = editables.cache_key(root, site)
    (root / "src" / "edpkg" / "__init__.py").write_text("VALUE = 2\n")  # the source: read through the .pth
    assert editables.cache_key(root, site) == first
    (root / "setup.cfg").write_text("[metadata]\n")
    second = editables.cache_key(root, site)
    assert second != first
    (root / "pyproject.toml").write_text(PYPROJECT.replace('"0.1"', '"0.2"'))
    assert editables.cache_key(root, site) not in (first, second)
    other_python = tmp_path / "env" / "lib" / "python3.12" / "site-packages"
    assert editables.cache_key(root, other_python) != editables.cache_key(root, site)


def test_the_projects_cache_keys_replace_the_default(tmp_path, monkeypatch):
    root = _project(tmp_path / "p", '[tool.uv]\ncache-keys = [{ file = "src/**/*.py" }, { env = "EDPKG_FLAVOUR" }, '
                                    '{ git = { commit = true, tags = true } }]\n')
    site = tmp_path / "site-packages"
    monkeypatch.delenv("EDPKG_FLAVOUR", raising=False)
    first = editables.cache_key(root, site)
    assert first is not None
    (root / "src" / "edpkg" / "__init__.py").write_text("VALUE = 2\n")
    second = editables.cache_key(root, site)
    assert second != first
    monkeypatch.setenv("EDPKG_FLAVOUR", "x")
    assert editables.cache_key(root, site) != second
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "one"], check=True)
    third = editables.cache_key(root, site)
    subprocess.run(["git", "-C", str(root), "tag", "v1"], check=True)
    assert editables.cache_key(root, site) != third  # hatch-vcs reads the tag into the version


def test_an_unknown_cache_key_is_never_reused(tmp_path):
    root = _project(tmp_path / "p", '[tool.uv]\ncache-keys = [{ something-new = "x" }]\n')
    assert editables.cache_key(root, tmp_path) is None


def _env(tmp_path: Path, name: str) -> Path:
    env = tmp_path / name
    subprocess.run([find_uv(), "venv", "-q", str(env)], check=True)
    return env


def test_a_second_env_installs_the_kept_build_and_a_changed_tree_builds_again(tmp_path):
    root = _project(tmp_path / "p")
    cache_root = tmp_path / "cache"
    calls: list[list[str]] = []

    def install(env: Path) -> list[str]:
        lines: list[str] = []
        run_async(install_editable(root, uv=find_uv(), env_python=str(env / "bin" / "python"), host={},
                                   log=lines.append, cache_root=cache_root))
        calls.append(lines)
        return lines

    first = _env(tmp_path, "one")
    assert not any("kept" in line for line in install(first))
    second = _env(tmp_path, "two")
    assert any("kept from an earlier env" in line for line in install(second))
    done = subprocess.run([str(second / "bin" / "edpkg-hello")], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "hello from edpkg"  # the console script, written for this env's python
    (root / "src" / "edpkg" / "__init__.py").write_text("def main():\n    print('changed')\n")
    done = subprocess.run([str(second / "bin" / "edpkg-hello")], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "changed"  # still editable: the source is read in place
    dist_info = next((second / "lib").glob("python3*/site-packages/edpkg-0.1.dist-info"))
    assert (dist_info / "direct_url.json").read_text() == \
        '{"url":"%s","dir_info":{"editable":true}}' % root.resolve().as_uri()
    listed = subprocess.run([find_uv(), "pip", "list", "--python", str(second / "bin" / "python"), "-e"],
                            capture_output=True, text=True, check=True).stdout
    assert "edpkg" in listed and str(root) in listed

    (root / "pyproject.toml").write_text(PYPROJECT.replace('"0.1"', '"0.2"'))
    third = _env(tmp_path, "three")
    assert not any("kept" in line for line in install(third))  # the tree changed: built again
    assert next((third / "lib").glob("python3*/site-packages/edpkg-0.2.dist-info"))


def _companion(env: str, wheel_id: str | None, mtime: int) -> dict:
    return {"name": "torchcomp", "version": "1.0", "wheel_tags": ["cp311-cp311-linux_x86_64"],
            "dist_info": f"{env}/lib/python3.11/site-packages/torchcomp-1.0.dist-info",
            "location": f"{env}/lib/python3.11/site-packages", "links_torch": ["torchcomp/_C.so"],
            "files": {"torchcomp/_C.so": [mtime, 100], "RECORD": [mtime, 10]}, "wheel_id": wheel_id,
            "sizes": {"torchcomp/_C.so": 100}}


def test_a_companion_verdict_belongs_to_its_wheel_not_its_env():
    request = {"init_cuda": False, "packages": ["torch"], "companions": ["torchcomp"]}

    def key(env: str, wheel_id: str | None, mtime: int, project: str = "/p") -> str:
        facts = {"sys_path": [f"{env}/lib/python3.11/site-packages", f"{project}/src"],
                 "companions": [_companion(env, wheel_id, mtime)]}
        return cache.key(facts, request, env, project)

    assert key("/a/.venv", "w1", 1) == key("/b/.venv", "w1", 2, project="/q")  # the same wheel, another env
    assert key("/a/.venv", "w1", 1) != key("/a/.venv", "w2", 1)  # another build of it
    assert key("/a/.venv", None, 1) != key("/a/.venv", None, 2)  # no hashes in RECORD: its files' stats



def test_a_workspace_members_editable_is_kept_too(tmp_path):
    # the resolution names the member as `-e file://…`: a kept build replaces that line, a new one is kept
    from uvkernel.env import install

    member = _project(tmp_path / "ws" / "packages" / "edpkg")
    cache_root = tmp_path / "cache"
    env = _env(tmp_path, "one")
    python = str(env / "bin" / "python")
    line = f"-e {member.resolve().as_uri()}"
    rest, hits, misses = run_async(install.kept_editables([line, "six==1.17.0"], python, cache_root))
    assert rest == [line, "six==1.17.0"] and not hits and misses == [member.resolve()]
    subprocess.run([find_uv(), "pip", "install", "-q", "--python", python, "--no-deps", "-e", str(member)],
                   check=True)
    run_async(install.keep_editables(misses, python, cache_root))

    second = _env(tmp_path, "two")
    python = str(second / "bin" / "python")
    rest, hits, misses = run_async(install.kept_editables([line, "six==1.17.0"], python, cache_root))
    assert rest == ["six==1.17.0"] and set(hits) == {"edpkg"} and not misses
    excludes = tmp_path / "none.txt"
    excludes.write_text("\n")
    run_async(install.install_kept_editables(hits, uv=find_uv(), env_python=python, excludes=excludes,
                                             cwd=tmp_path, timeout=120, log=lambda _m: None))
    done = subprocess.run([python, "-c", "import edpkg; print(edpkg.__file__)"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == str(member.resolve() / "src" / "edpkg" / "__init__.py")
