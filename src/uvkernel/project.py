"""Stage 1: find the notebook's project and where its env lives.

Where the notebook is: the provisioner's ``cwd`` (absolute from JupyterLab and ``jupyter execute``,
relative from ``nbconvert --execute sub/nb.ipynb``, None from papermill and ``jupyter console``), else the
folder of ``JPY_SESSION_NAME``, else the server's working directory.  Relative paths resolve against
the server's working directory.

A project is the nearest folder, walking up, holding a ``uv.lock`` or a ``pyproject.toml`` with a
``[project]`` or ``[tool.uv]`` table (a pyproject.toml that only configures tools, e.g. black, is not a
project).  As uv does, a project that is a member of a uv workspace (an ancestor's ``[tool.uv.workspace]``
``members`` globs match it and its ``exclude`` globs do not) shares the workspace's env and lock: ``.venv``
and ``uv.lock`` at the workspace root.  The env is ``.venv`` there, or ``UV_PROJECT_ENVIRONMENT`` (relative
to the workspace root).
A notebook outside any project gets an env in the per-user cache keyed by its folder and the host, so
nothing is written into a folder that is not a project.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import EnvError, ProjectError, note, notice
from .files import read_input
from .shared import canonical

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib


@dataclass
class Project:
    notebook_dir: Path  # where the notebook (and the kernel's cwd) is
    root: Path | None  # the project folder, None for a notebook outside any project
    env_path: Path  # the env the kernel runs from
    env_reason: str  # why that env path
    pyproject: dict[str, Any] = field(default_factory=dict)
    in_cache: bool = False  # the env lives in the per-user cache (no project, or a read-only project folder)
    workspace_root: Path | None = None  # where uv.lock and the env live: the workspace's root, else ``root``
    workspace: dict[str, Any] = field(default_factory=dict)  # the workspace root's pyproject.toml
    notices: list[str] = field(default_factory=list)  # facts for the report (a member's stray .venv …)

    @property
    def top(self) -> Path | None:
        """The folder uv treats as the workspace root (the project itself when it is not a member)."""
        return self.workspace_root or self.root

    @property
    def pyproject_path(self) -> Path:
        """The project's pyproject.toml: asked only of a project, never of a notebook outside one."""
        if self.root is None:
            raise ValueError(f"{self.notebook_dir} is not in a project: it has no pyproject.toml")
        return self.root / "pyproject.toml"

    @property
    def lock_path(self) -> Path | None:
        return self.top / "uv.lock" if self.top is not None else None

    @property
    def has_lock(self) -> bool:
        return self.lock_path is not None and self.lock_path.is_file()

    @property
    def requires_python(self) -> str | None:
        return (self.pyproject.get("project") or {}).get("requires-python")

    def tool_uv(self, *, top: bool = False) -> dict[str, Any]:
        data = self.workspace if (top and self.workspace_root is not None) else self.pyproject
        value = (data.get("tool") or {}).get("uv") or {}
        return value if isinstance(value, dict) else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook_dir": str(self.notebook_dir),
            "root": str(self.root) if self.root else None,
            "env": str(self.env_path),
            "env_reason": self.env_reason,
            "workspace_root": str(self.workspace_root) if self.workspace_root else None,
            "has_lock": self.has_lock,
            "notices": self.notices,
        }


def notebook_folder(cwd: str | os.PathLike[str] | None, environ: Mapping[str, str], base: str | None = None) -> Path:
    """Where the notebook is, from what the front end gave us."""
    base_dir = Path(base or os.getcwd())
    if cwd:
        start = Path(cwd)
    else:
        session = environ.get("JPY_SESSION_NAME", "")
        start = Path(session).parent if session and "/" in session.replace(os.sep, "/") else Path(".")
    if not start.is_absolute():
        start = base_dir / start
    start = Path(os.path.normpath(start))
    # a folder that vanished (renamed while the server ran): use its nearest existing parent
    while not start.is_dir() and start != start.parent:
        start = start.parent
    return start


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        raw = read_input(path)  # a regular file of sane size only: a FIFO or /dev/zero would hang the server
    except OSError as exc:
        raise ProjectError("PYPROJECT_INVALID", path=str(path), detail=exc.strerror or str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProjectError("PYPROJECT_INVALID", path=str(path),
                           detail=f"the file is not UTF-8 text (TOML must be): byte 0x{raw[exc.start]:02x} on line "
                                  f"{line} cannot be decoded; save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError("PYPROJECT_INVALID", path=str(path), detail=str(exc)) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ProjectError("PYPROJECT_INVALID", path=str(path),
                           detail="arrays or inline tables are nested too deeply to be read") from None


def _is_project(folder: Path) -> tuple[bool, dict[str, Any]]:
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        data = read_pyproject(pyproject)
        tool = data.get("tool")
        if "project" in data or (isinstance(tool, dict) and "uv" in tool):
            return True, data
        if (folder / "uv.lock").is_file():
            return True, data
        return False, {}
    if (folder / "uv.lock").is_file():
        return True, {}
    return False, {}


def find_root(start: Path) -> tuple[Path | None, dict[str, Any]]:
    for folder in (start, *start.parents):
        found, data = _is_project(folder)
        if found:
            return folder, data
    return None, {}


def workspace_globs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _pattern_parts(root: Path, pattern: str) -> list[str] | None:
    """A workspace glob as path components relative to ``root``, as uv evaluates it (the pattern joined to the
    root, so an absolute one stands alone; ``.`` and ``./`` name the root itself), or None when it reaches
    outside the root: members are bounded to the workspace, so ``../../**`` never walks the disk."""
    joined = os.path.normpath(os.path.join(str(root), pattern.strip()))
    base = os.path.normpath(str(root))
    if joined == base:
        return []
    if not joined.startswith(base.rstrip(os.sep) + os.sep):
        return None
    return [p for p in joined[len(base):].split(os.sep) if p]


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    """glob matching by components: ``*``, ``?`` and ``[...]`` within one component, ``**`` across any number."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(parts[1:], pattern[1:])


def matches_workspace_glob(folder: Path, root: Path, patterns: list[str]) -> bool:
    """Does ``folder`` match one of the workspace globs (relative to ``root``), as uv matches members?

    Matched on the path alone, never by listing the disk: a glob is answered at once whatever it names."""
    try:
        rel = Path(os.path.normpath(folder)).relative_to(os.path.normpath(root)).parts
    except ValueError:
        return False
    for pattern in patterns:
        parts = _pattern_parts(root, pattern)
        if parts is not None and _match_parts(list(rel), parts):
            return True
    return False


def member_folders(root: Path, pattern: str) -> list[Path]:
    """The folders a workspace ``members`` glob names, inside ``root`` only (uv's evaluation, bounded)."""
    parts = _pattern_parts(root, pattern)
    if parts is None:
        return []
    if not parts:
        return [root]
    return [p for p in root.glob("/".join(parts)) if p.is_dir()]


def find_workspace(project_root: Path, data: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The uv workspace ``project_root`` belongs to: (root, its pyproject), or None for a lone project.

    uv's rule: the project's own ``[tool.uv.workspace]`` makes it a root; otherwise the nearest ancestor with
    one whose ``members`` globs match the project and whose ``exclude`` globs do not.
    """
    if isinstance(((data.get("tool") or {}).get("uv") or {}).get("workspace"), dict):
        return project_root, data
    for folder in project_root.parents:
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        try:
            candidate = read_pyproject(pyproject)
        except ProjectError:
            continue  # uv skips an unreadable ancestor too; the member's own file is what we report
        table = ((candidate.get("tool") or {}).get("uv") or {}).get("workspace")
        if not isinstance(table, dict):
            continue
        if matches_workspace_glob(project_root, folder, workspace_globs(table.get("members"))) and not matches_workspace_glob(
                project_root, folder, workspace_globs(table.get("exclude"))):
            return folder, candidate
    return None


def cache_env_path(cache_root: Path, notebook_dir: Path, host_key: str) -> Path:
    """An env in the per-user cache for a folder that is not a project."""
    digest = hashlib.sha256(f"{notebook_dir}\0{host_key}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", notebook_dir.name or "root").strip("-")[:40] or "folder"
    return cache_root / "envs" / f"{slug}-{digest}"


def find_project(
    cwd: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    *,
    cache_root: Path,
    host_key: str,
    base: str | None = None,
) -> Project:
    notebook_dir = notebook_folder(cwd, environ, base)
    root, data = find_root(notebook_dir)
    if root is not None and data:
        validate_pyproject(data, root / "pyproject.toml")
    if root is None:
        env = cache_env_path(cache_root, notebook_dir, host_key)
        refuse_linked_cache_env(env)
        return Project(notebook_dir, None, env, "per-user cache (the notebook's folder is not in a project)",
                       in_cache=True)
    found = find_workspace(root, data)
    top, workspace = found if found else (root, data)
    notices = []
    if top != root and os.path.lexists(root / ".venv"):
        notices.append(notice("MEMBER_VENV_UNUSED", member_env=root / ".venv", workspace_env=top / ".venv"))

    def make(env_path: Path, reason: str, in_cache: bool = False) -> Project:
        return Project(notebook_dir, root, env_path, reason, data, in_cache=in_cache,
                       workspace_root=top if found else None, workspace=workspace, notices=notices)

    override = environ.get("UV_PROJECT_ENVIRONMENT")
    if override:
        env_path = Path(os.path.expanduser(override))
        if not env_path.is_absolute():
            env_path = top / env_path  # uv: relative to the workspace root
        return make(Path(os.path.normpath(env_path)), "UV_PROJECT_ENVIRONMENT")
    env_path = top / ".venv"
    outside = link_outside(env_path, top)
    if outside:
        notices.append(note("ENV_LINK_OUTSIDE", target=outside, root=str(top), env=str(env_path)))
    if not os.path.lexists(env_path) and not _writable(top):
        # a read-only project folder (a mounted share, a read-only file system): the env goes to the cache
        env = cache_env_path(cache_root, top, host_key)
        refuse_linked_cache_env(env)
        return make(env, f"per-user cache: notice, the project folder {top} is read-only, so the env lives in "
                         f"the cache instead of {env_path}", in_cache=True)
    return make(env_path, "the workspace's .venv (at its root)" if top != root else "the project's .venv")


def refuse_linked_cache_env(env: Path) -> None:
    """An env in uvkernel's cache is always a folder uvkernel made; a link there (planted by whoever could write
    into the cache) would run someone else's .pth files as this user."""
    if os.path.islink(env):
        raise EnvError("CACHE_ENV_LINK", env=str(env), target=os.readlink(env))


def link_outside(env: Path, root: Path) -> str:
    """Where ``env`` leads when it is a link (or below one) to a folder outside ``root`` ('' otherwise): a cloned
    repository may ship a .venv link to a folder of the user's."""
    if not os.path.islink(env):
        return ""
    target = os.path.realpath(env)
    base = os.path.realpath(root)
    return "" if target == base or target.startswith(base.rstrip(os.sep) + os.sep) else target


def _writable(folder: Path) -> bool:
    """Can an env folder be created here?  os.access also answers False on a read-only file system for root."""
    return os.access(folder, os.W_OK | os.X_OK)


# --- validation: the keys uvkernel or uv reads, with the types uv accepts ---------------------------------------
# uv refuses a pyproject.toml with a wrong type at any key it reads ("Failed to parse: pyproject.toml"), and
# malformed dependency groups; uvkernel refuses the same files with the file, the key and uv's reason, before
# anything reads a value of the wrong type.

_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_DEPENDENCY_LISTS = ("[project].dependencies", "[project.optional-dependencies]", "[dependency-groups]",
                     "[tool.uv].dev-dependencies")


class _Invalid(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expect(key: str, value: Any, kind: type, expected: str) -> None:
    if type(value) is not kind:  # exact: a TOML boolean is no integer
        raise _Invalid(key, f"{key} must be {expected}, not {_show(value)} ({_type_name(value)})")


def _strings_list(key: str, value: Any, what: str = "strings") -> list[str]:
    _expect(key, value, list, f"a list of {what}")
    for i, item in enumerate(value):
        _expect(f"{key}[{i}]", item, str, "a string")
    return value


def _table(key: str, value: Any) -> dict[str, Any]:
    _expect(key, value, dict, "a table")
    return value


def _check_project(table: dict[str, Any]) -> None:
    if "name" in table:
        _expect("[project].name", table["name"], str, "a string")
        if not _NAME.match(table["name"]):
            raise _Invalid("[project].name", f"[project].name = {_show(table['name'])} is not a valid package "
                           "name (uv: names must start and end with a letter or digit and may only contain -, _, "
                           "., and alphanumeric characters)")
    if "version" in table:
        _expect("[project].version", table["version"], str, "a string")
        try:
            Version(table["version"])
        except InvalidVersion:
            raise _Invalid("[project].version", f"[project].version = {_show(table['version'])} is not a valid "
                           "version (PEP 440, e.g. \"0.1.0\")") from None
    if "requires-python" in table:
        _expect("[project].requires-python", table["requires-python"], str, 'a string such as ">=3.11"')
        try:
            SpecifierSet(table["requires-python"])
        except InvalidSpecifier:
            raise _Invalid("[project].requires-python", f"requires-python = {_show(table['requires-python'])} "
                           "is not a valid version specifier (e.g. \">=3.11\")") from None
    if "dynamic" in table:
        _strings_list("[project].dynamic", table["dynamic"])
    if "dependencies" in table:
        _strings_list("[project].dependencies", table["dependencies"], "requirement strings")
    if "optional-dependencies" in table:
        for extra, reqs in _table("[project.optional-dependencies]", table["optional-dependencies"]).items():
            _strings_list(f"[project.optional-dependencies].{extra}", reqs, "requirement strings")


def _check_groups(groups: dict[str, Any]) -> None:
    """Types, unknown includes and cycles, as uv checks them (its reasons quoted)."""
    names = {canonical(k): k for k in groups}
    includes: dict[str, list[str]] = {}
    for group, items in groups.items():
        key = f"[dependency-groups].{group}"
        _expect(key, items, list, "a list of requirement strings and {include-group = \"...\"} tables")
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if set(item) != {"include-group"}:
                    raise _Invalid(key, f"uv refuses it: Group `{group}` contains an unknown dependency object "
                                   f"specifier: {_show(item)}")
                _expect(f"{key}[{i}].include-group", item["include-group"], str, "a group name")
                included = item["include-group"]
                if canonical(included) not in names:
                    raise _Invalid(key, f"uv refuses it: Failed to find group `{included}` included by `{group}`")
                includes.setdefault(canonical(group), []).append(canonical(included))
            else:
                _expect(f"{key}[{i}]", item, str, "a string or a table with the `include-group` key")

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise _Invalid("[dependency-groups]", "uv refuses it: Detected a cycle in `dependency-groups`: "
                           + " -> ".join(f"`{names.get(n, n)}`" for n in cycle))
        for child in includes.get(name, []):
            visit(child, path + [name])

    for name in includes:
        visit(name, [])


def _check_tool_uv(uv: dict[str, Any], groups: dict[str, Any]) -> None:
    for flag in ("package", "managed"):
        if flag in uv:
            _expect(f"[tool.uv].{flag}", uv[flag], bool, "true or false")
    if "dev-dependencies" in uv:
        _strings_list("[tool.uv].dev-dependencies", uv["dev-dependencies"], "requirement strings")
    for name in ("override-dependencies", "constraint-dependencies", "exclude-dependencies",
                 "build-constraint-dependencies"):
        if name in uv:
            _strings_list(f"[tool.uv].{name}", uv[name], "requirement strings")
    if "default-groups" in uv:
        value = uv["default-groups"]
        if isinstance(value, str) and value == "all":
            pass
        elif isinstance(value, list):
            _strings_list("[tool.uv].default-groups", value, "group names")
            known = {canonical(g) for g in groups}
            for group in value:
                if canonical(group) not in known:
                    raise _Invalid("[tool.uv].default-groups", f"uv refuses it: Default group `{group}` (from "
                                   "`tool.uv.default-groups`) is not defined in the project's `dependency-groups` "
                                   "table")
        else:
            raise _Invalid("[tool.uv].default-groups", f"[tool.uv].default-groups = {_show(value)}: uv refuses it: "
                           "default-groups must be \"all\" or a [\"list\", \"of\", \"groups\"]")
    if "sources" in uv:
        for name, source in _table("[tool.uv.sources]", uv["sources"]).items():
            key = f"[tool.uv.sources].{name}"
            if isinstance(source, list):
                for i, item in enumerate(source):
                    _table(f"{key}[{i}]", item)
            else:
                _expect(key, source, dict, "a table (e.g. { path = \"../lib\" }) or an array of tables")
    if "index" in uv:
        _expect("[[tool.uv.index]]", uv["index"], list, "an array of tables")
        for i, index in enumerate(uv["index"]):
            key = f"[[tool.uv.index]] #{i + 1}"
            _table(key, index)
            for text in ("name", "url"):
                if text in index:
                    _expect(f"{key} {text}", index[text], str, "a string")
            for flag in ("explicit", "default"):
                if flag in index:
                    _expect(f"{key} {flag}", index[flag], bool, "true or false")
    if "workspace" in uv:
        workspace = _table("[tool.uv.workspace]", uv["workspace"])
        for name in ("members", "exclude"):
            if name in workspace:
                _strings_list(f"[tool.uv.workspace].{name}", workspace[name], "glob patterns")
    if "conflicts" in uv:
        _expect("[tool.uv].conflicts", uv["conflicts"], list, "an array of arrays of tables")
        for i, group in enumerate(uv["conflicts"]):
            _expect(f"[tool.uv].conflicts[{i}]", group, list, "an array of tables like { extra = \"cpu\" }")
            for j, item in enumerate(group):
                key = f"[tool.uv].conflicts[{i}][{j}]"
                _table(key, item)
                for text in ("extra", "group", "package"):
                    if text in item:
                        _expect(f"{key}.{text}", item[text], str, "a string")


def _code_for(key: str) -> str:
    return "DEPENDENCY_TABLE_INVALID" if key.startswith(_DEPENDENCY_LISTS) else "PYPROJECT_INVALID"


def validate_pyproject(data: Mapping[str, Any], path: Path) -> None:
    """Refuse, as uv does, a pyproject.toml with a wrong type at a key uvkernel or uv reads, or malformed
    dependency groups.  The error names the file and the key; uv's own reason is quoted where uv has one.

    Dependency lists keep their own code (DEPENDENCY_TABLE_INVALID); everything else is PYPROJECT_INVALID.
    """
    try:
        if "project" in data:
            _check_project(_table("[project]", data["project"]))
        groups: dict[str, Any] = {}
        if "dependency-groups" in data:
            groups = _table("[dependency-groups]", data["dependency-groups"])
            _check_groups(groups)
        if "build-system" in data:
            build = _table("[build-system]", data["build-system"])
            if "requires" in build:
                _strings_list("[build-system].requires", build["requires"], "requirement strings")
            if "build-backend" in build:
                _expect("[build-system].build-backend", build["build-backend"], str, "a string")
        if "tool" in data:
            tool = _table("[tool]", data["tool"])
            if "uv" in tool:
                _check_tool_uv(_table("[tool.uv]", tool["uv"]), groups)
    except _Invalid as exc:
        raise ProjectError(_code_for(exc.key), path=str(path), detail=exc.reason) from None
