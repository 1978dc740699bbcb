"""Fuzzing every input uvkernel reads (Hypothesis).

The property, for every generated input: the start either succeeds, or fails with a coded UvkernelError (not
INTERNAL_ERROR) whose message names the file or setting involved; never an uncaught exception; never a user
file deleted or rewritten (the project folder's files are hashed before and after).

Both entry points run: the pipeline as the provisioner runs it (find the project, prepare the env) and the CLI
(`uvkernel check`, and random argv).  Most examples fail early, while files are parsed; those that reach
dependency resolution run with UV_OFFLINE=1, so random names never become registry queries.

Profiles (HYPOTHESIS_PROFILE): ``ci`` (the default, bounded to a few minutes) and ``long`` (FUZZ_EXAMPLES
examples for each cheap target, a tenth of that for each target that runs uv).  ``scripts/fuzz.sh N`` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from hardening_support import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_client.kernelspec import KernelSpec
from traitlets.config import Config

from uvkernel import cli, pipeline
from uvkernel.env import declarations, venv
from uvkernel import host as host_mod
from uvkernel.errors import MESSAGES, UvkernelError
from uvkernel.preflight import cache as preflight_cache
from uvkernel.project import find_project
from uvkernel.provisioner import UvKernelProvisioner
from uvkernel.settings import SETTING_NAMES, UvKernelSettings, from_config, validate_config

_LONG = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("ci", max_examples=40, **_COMMON)
settings.register_profile("long", max_examples=_LONG, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
_IS_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def cheap(ci: int) -> settings:
    """Targets that only parse: many examples."""
    return settings(max_examples=_LONG if _IS_LONG else ci)


def costly(ci: int) -> settings:
    """Targets that run uv or the preflight: fewer examples."""
    return settings(max_examples=max(ci, _LONG // 10) if _IS_LONG else ci)


# --- counting what was tried (scripts/fuzz.sh reports it) --------------------------------------------------------
TRIED: dict[str, int] = {}


def tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    target = os.environ.get("FUZZ_COUNT_FILE")
    if target:
        old = {}
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(Path(target).read_text())
        for key, value in TRIED.items():
            old[key] = old.get(key, 0) + value
        Path(target).write_text(json.dumps(old, indent=1, sort_keys=True))


# --- the property ------------------------------------------------------------------------------------------------
def assert_coded(error: BaseException, *names: str) -> None:
    """A coded uvkernel error, not INTERNAL_ERROR, naming at least one of ``names`` (file or setting)."""
    assert isinstance(error, UvkernelError), f"uncaught {type(error).__name__}: {error!r}"
    assert error.code in MESSAGES and error.code != "INTERNAL_ERROR", str(error)
    text = str(error)
    assert f"[{error.code}]" in text and "How to fix: " in text, text
    if names:
        shown = [v for n in names for v in (n, repr(n))]
        shown += [v.replace("%", " percent") for v in shown]  # messages spell '%' out (jupyter_server doubles it)
        assert any(v in text for v in shown), f"none of {names} named in:\n{text}"


def user_files(project: Path) -> dict[str, str]:
    return snapshot(project, skip=(".venv",))


def assert_unchanged(project: Path, before: dict[str, str]) -> None:
    """Every file that was there is still there, byte for byte (new files, e.g. an env uvkernel made where
    UV_PROJECT_ENVIRONMENT points, are not user files)."""
    after = user_files(project)
    assert {k: after.get(k) for k in before} == before, "a user file was deleted or rewritten"


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[dict[str, str]]:
    saved = dict(os.environ)
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def host_info(host_python) -> host_mod.HostPython:
    return asyncio.run(host_mod.inspect(host_python))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Examples run in here: a relative path never reaches the repository (or the dev env)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fresh(base: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=base, prefix="ex-"))


# --- TOML generation ---------------------------------------------------------------------------------------------
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)


def _scalar_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    return json.dumps(value).replace("\x7f", "\\u007f")


def to_toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {to_toml_value(v)}" for k, v in value.items()) + "}"
    return _scalar_toml(value)


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(str(k))} = {to_toml_value(v)}\n" for k, v in doc.items())


toml_values = st.recursive(
    st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)

requirement_like = st.one_of(
    _TEXT,
    st.sampled_from(["tomli-w", "torch", "numpy>=1", "fuzzed[cpu]", "x @ file:///nonexistent", "a;b", "===",
                     "ipykernel", "pkg ; python_version < '2'", "fuzzed-missing-dist==0.0.1"]),
)


def base_doc() -> dict[str, Any]:
    """A valid pyproject.toml using every key uvkernel or uv reads."""
    return {
        "project": {"name": "fuzzed", "version": "0.1.0", "requires-python": ">=3.9", "dependencies": [],
                    "optional-dependencies": {"cpu": []}, "dynamic": []},
        "dependency-groups": {"dev": [], "lint": [{"include-group": "dev"}]},
        "tool": {"uv": {"package": False, "managed": True, "default-groups": ["dev"], "dev-dependencies": [],
                        "sources": {}, "index": [], "workspace": {"members": [], "exclude": []},
                        "override-dependencies": [], "constraint-dependencies": [], "exclude-dependencies": [],
                        "conflicts": []}},
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
    }


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, prefix + (i,)))
    return out


KEY_PATHS = _paths(base_doc())


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


LIST_PATHS = [p for p in KEY_PATHS if isinstance(_get(base_doc(), p), list)]


@st.composite
def mutated_docs(draw) -> dict[str, Any]:
    """The valid document with a few keys set to a random value (often of the wrong type), deleted, or lists
    given random elements (requirement-like strings, include-group tables)."""
    doc = base_doc()
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "replace", "delete", "append"]))
        if action == "append":
            path = draw(st.sampled_from(LIST_PATHS))
            with contextlib.suppress(KeyError, IndexError, TypeError):
                target = _get(doc, path)
                if isinstance(target, list):
                    target.append(draw(requirement_like | toml_values |
                                       st.fixed_dictionaries({"include-group": _TEXT | st.sampled_from(
                                           ["dev", "lint", "nope"])})))
            continue
        path = draw(st.sampled_from(KEY_PATHS))
        with contextlib.suppress(KeyError, IndexError, TypeError):
            parent = _get(doc, path[:-1])
            if action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(toml_values | requirement_like)
    return doc


@st.composite
def pyproject_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "random", "bad-utf8", "deep", "large",
                                 "truncated"]))
    valid = to_toml(base_doc()).encode()
    if kind == "mutated":
        return to_toml(draw(mutated_docs())).encode("utf-8", "surrogatepass")
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "bad-utf8":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.binary(min_size=1, max_size=3).filter(lambda b: b[0] >= 0x80)) + valid[at:]
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a = ", "}")]))
        return valid + b"nested = " + (opener * depth + "1" + closer * depth).encode() + b"\n"
    if kind == "large":
        size = draw(st.integers(0, 3_000_000))
        return valid + b"# " + b"x" * size + b"\n"
    return valid[: draw(st.integers(0, len(valid)))]


def write_project(base: Path, content: bytes, lock: bytes | None = None) -> Path:
    project = fresh(base) / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_bytes(content)
    if lock is not None:
        (project / "uv.lock").write_bytes(lock)
    return project


# --- 1. pyproject.toml, parsed as a start parses it (many examples) --------------------------------------------
def parse_like_a_start(project: Path, host: host_mod.HostPython, cache: Path, env: dict[str, str] | None = None):
    found = find_project(str(project), env or {}, cache_root=cache, host_key=host.executable)
    pipeline.check_requires_python(found, host)
    declarations.declared(found, UvKernelSettings())
    declarations.is_package(found)
    return found


@cheap(300)
@given(content=pyproject_bytes())
def test_fuzz_pyproject_parsing(workdir, host_info, content):
    tried("pyproject (parsed)")
    project = write_project(workdir, content)
    before = user_files(project)
    try:
        parse_like_a_start(project, host_info, workdir / "cache")
    except Exception as exc:  # noqa: BLE001 - the property decides
        assert_coded(exc, str(project))
    assert_unchanged(project, before)


# --- 2. the same through the pipeline and the CLI, offline (uv runs: fewer examples) -------------------------------
OFFLINE = {"UV_OFFLINE": "1", "UV_NO_CONFIG": "1"}


def _pipeline_start(project: Path, host_python: str) -> None:
    settings_ = UvKernelSettings(host_python=host_python, preflight=False)
    with environ(**OFFLINE) as env:
        prepared = asyncio.run(pipeline.prepare(settings_, cwd=str(project), environ=env, log=lambda _m: None))
    assert prepared.env.python.exists()


def _cli_check(folder: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    with environ(**OFFLINE), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["check", str(folder), "--json", *args])
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return status, json.loads(out.getvalue())


def assert_report(status: int, report: dict[str, Any], *names: str) -> None:
    if status == 0:
        assert report["ok"] is True and report["error"] is None
        return
    assert status == 1, report
    code = report["error"]["code"]
    assert code in MESSAGES and code != "INTERNAL_ERROR", report["message"]
    if names:
        shown = [v for n in names for v in (n, repr(n))]
        shown += [v.replace("%", " percent") for v in shown]
        assert any(v in report["message"] for v in shown), f"none of {names} in:\n{report['message']}"


@costly(6)
@given(content=pyproject_bytes())
def test_fuzz_pyproject_through_the_pipeline(workdir, host_python, content):
    tried("pyproject (pipeline.prepare, offline)")
    project = write_project(workdir, content)
    before = user_files(project)
    try:
        _pipeline_start(project, host_python)
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, str(project))
    assert_unchanged(project, before)


@costly(6)
@given(content=pyproject_bytes())
def test_fuzz_pyproject_through_uvkernel_check(workdir, host_python, content):
    tried("pyproject (uvkernel check, offline)")
    project = write_project(workdir, content)
    before = user_files(project)
    status, report = _cli_check(project, "--host-python", host_python)
    assert_report(status, report, str(project))
    assert_unchanged(project, before)


# --- 3. uv.lock and workspace members ---------------------------------------------------------------------------
VALID_LOCK = b"""version = 1
revision = 3
requires-python = ">=3.9"

[[package]]
name = "fuzzed"
version = "0.1.0"
source = { virtual = "." }
"""


@st.composite
def lock_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["truncated", "random", "toml", "bad-utf8"]))
    if kind == "truncated":
        return VALID_LOCK[: draw(st.integers(0, len(VALID_LOCK)))]
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "bad-utf8":
        return VALID_LOCK + b"# \xff\xfe\n"
    return to_toml({"version": draw(toml_values), "package": draw(toml_values)}).encode("utf-8", "surrogatepass")


@costly(6)
@given(lock=lock_bytes(), member=st.booleans(), member_doc=mutated_docs())
def test_fuzz_lock_and_workspace_files(workdir, host_python, lock, member, member_doc):
    tried("uv.lock / workspace member (pipeline.prepare, offline)")
    doc = base_doc()
    if member:
        doc["tool"]["uv"]["workspace"]["members"] = ["packages/*"]
    project = write_project(workdir, to_toml(doc).encode(), lock=lock)
    if member:
        (project / "packages" / "one").mkdir(parents=True)
        (project / "packages" / "one" / "pyproject.toml").write_bytes(
            to_toml(member_doc).encode("utf-8", "surrogatepass"))
    before = user_files(project)
    try:
        _pipeline_start(project, host_python)
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, str(project))
    assert_unchanged(project, before)


# --- 4. kernel.json provisioner config and jupyter config values ----------------------------------------------------
setting_names = st.sampled_from(list(SETTING_NAMES)) | _TEXT
config_values = toml_values | st.none() | st.sampled_from(["auto", "TRUE", "restart", "-1", "1e9", "nan"])


@cheap(300)
@given(config=st.dictionaries(setting_names, config_values, max_size=5))
def test_fuzz_provisioner_config(workdir, config):
    tried("kernel.json config (validate_config / from_config / provisioner)")
    spec_file = str(workdir / "kernel.json")
    try:
        validate_config(config, spec=spec_file)
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, spec_file)
    try:
        from_config(config)
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, *map(str, config))
    spec = KernelSpec(argv=["python"], display_name="x", resource_dir=str(workdir))
    provisioner = UvKernelProvisioner(kernel_id="k", kernel_spec=spec, parent=None, **config)
    if provisioner._config_error is not None:
        assert_coded(provisioner._config_error, spec_file)


@cheap(200)
@given(config=st.dictionaries(setting_names, config_values, max_size=4))
def test_fuzz_jupyter_config_values(workdir, config):
    """c.UvKernelProvisioner.<name> = value in a jupyter config file."""
    tried("jupyter config values (c.UvKernelProvisioner.*)")
    spec = KernelSpec(argv=["python"], display_name="x", resource_dir=str(workdir))
    try:
        provisioner = UvKernelProvisioner(kernel_id="k", kernel_spec=spec, parent=None,
                                          config=Config({"UvKernelProvisioner": config}))
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, "UvKernelProvisioner", "config")
        return
    if provisioner._config_error is not None:
        assert_coded(provisioner._config_error)


@costly(5)
@given(metadata=toml_values | st.fixed_dictionaries({"kernel_provisioner": toml_values | st.fixed_dictionaries(
    {"provisioner_name": st.just("uvkernel"), "config": st.dictionaries(setting_names, config_values, max_size=3)})}),
    raw=st.none() | st.binary(max_size=200))
def test_fuzz_kernel_json_read_by_check(workdir, host_python, metadata, raw):
    tried("kernel.json file (uvkernel check --kernel)")
    folder = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / "fuzzk"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "kernel.json"
    if raw is not None:
        spec_file.write_bytes(raw)
    else:
        spec_file.write_text(json.dumps({"argv": ["python", "-f", "{connection_file}"], "display_name": "f",
                                         "language": "python", "metadata": metadata}))
    project = write_project(workdir, b"[project\n")  # fails early once the spec is read
    status, report = _cli_check(project, "--kernel", "fuzzk", "--host-python", host_python)
    assert status == 1
    assert_report(status, report, str(spec_file), str(project))


# --- 5. environment variables ----------------------------------------------------------------------------------------
@st.composite
def env_values(draw, base: Path) -> dict[str, str | None]:
    def path_text() -> str:
        return draw(st.sampled_from(["", ".", "..", "envs/x", "~", "/", "/dev/null", "/proc/self", str(base),
                                     str(base / "missing" / "deep"), "a\nb", "-rf"]) | _TEXT)

    host = draw(st.sampled_from([None, "", "/bin/true", "/bin/false", "/dev/null", str(base), "relative/python",
                                 str(base / "nope" / "python3"), str(base / "fake-python")])
                | _TEXT.map(lambda t: str(base / "h") + "/" + t.replace("\0", "")))
    session = draw(st.none() | st.sampled_from(["", "nb.ipynb", "sub/nb.ipynb", "/nonexistent/x.ipynb",
                                                "../../../../nb.ipynb"]) | _TEXT)
    return {
        "UV_PROJECT_ENVIRONMENT": draw(st.none() | st.just(path_text())),
        "UVKERNEL_HOST_PYTHON": host,
        "CUDA_VISIBLE_DEVICES": draw(st.none() | st.sampled_from(["", "-1", "0,0", "NoDevFiles", "GPU-x", "MIG-1"])
                                     | _TEXT),
        "JPY_SESSION_NAME": session,
    }


def _clean(values: dict[str, str | None]) -> dict[str, str | None]:
    return {k: (v.replace("\0", "") if isinstance(v, str) else v) for k, v in values.items()}


@cheap(200)
@given(data=st.data())
def test_fuzz_environment_variables_find_the_project(workdir, host_info, data):
    tried("environment variables (find the project)")
    project = write_project(workdir, to_toml(base_doc()).encode())
    values = _clean(data.draw(env_values(workdir)))
    env = {k: v for k, v in values.items() if v is not None}
    try:
        host_mod.choose("", env)
        found = find_project(None, env, cache_root=workdir / "cache", host_key=host_info.executable,
                             base=str(project))
        venv.check_project_env(found)
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, *[f"{k}" for k, v in env.items() if v], str(project))


@costly(6)
@given(data=st.data())
def test_fuzz_environment_variables_through_uvkernel_check(workdir, host_python, data):
    tried("environment variables (uvkernel check, offline)")
    (workdir / "fake-python").write_text("#!/bin/sh\necho '{not json'\n")
    (workdir / "fake-python").chmod(0o755)
    project = write_project(workdir, to_toml(base_doc()).encode())
    values = _clean(data.draw(env_values(workdir)))
    if values["UV_PROJECT_ENVIRONMENT"] and os.path.isabs(os.path.expanduser(values["UV_PROJECT_ENVIRONMENT"])):
        values["UV_PROJECT_ENVIRONMENT"] = None  # never build envs outside the example's folder
    if not values["UVKERNEL_HOST_PYTHON"]:
        values["UVKERNEL_HOST_PYTHON"] = host_python  # else the test runner's interpreter (no torch) is the host
    before = user_files(project)
    with environ(**values):
        status, report = _cli_check(project)
    assert_report(status, report, *[k for k, v in values.items() if v], str(project), "host interpreter")
    assert_unchanged(project, before)


# --- 6. CLI arguments ------------------------------------------------------------------------------------------------
_WORDS = ["install", "uninstall", "list", "check", "unshadow", "--user", "--prefix", "--name", "--display-name",
          "--host-python", "--env", "--set", "--json", "--kernel", "--require-cuda", "--recheck", "--dry-run",
          "--debug", "--version", "-h", "proj", ".", "..", "min_gpus=2", "min_gpus=x", "require_cuda=\"true\"",
          "nope=1", "uvk", "UPPER", "bad/name", "", "=", "--", "-x"]


@cheap(150)
@given(argv=st.lists(st.sampled_from(_WORDS) | _TEXT, max_size=6))
def test_fuzz_cli_arguments(workdir, host_python, argv):
    """Random argv: argparse's usage error (SystemExit 2) or its help/version (SystemExit 0) is fine; anything
    else ends in a coded message.  `kernel` is left out: it replaces the process (exec) by design."""
    if "kernel" in argv or any(a.startswith("--sys") for a in argv):
        return
    tried("CLI arguments")
    argv = [a.replace("\0", "") for a in argv]
    (workdir / "proj").mkdir(exist_ok=True)
    (workdir / "proj" / "pyproject.toml").write_text("[project\n")  # any check fails while parsing
    out, err = io.StringIO(), io.StringIO()
    with environ(**OFFLINE, UVKERNEL_HOST_PYTHON=host_python), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2), exc.code
            return
    assert "Traceback" not in err.getvalue(), err.getvalue()
    assert "[INTERNAL_ERROR]" not in err.getvalue() + out.getvalue(), err.getvalue() + out.getvalue()
    assert status in (0, 1, 2)


# --- 7. the state uvkernel keeps -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared_template(tmp_path_factory, host_python) -> tuple[Path, Path]:
    """A project whose env uvkernel prepared and whose preflight ran once (the per-host cache is warm)."""
    base = tmp_path_factory.mktemp("template")
    cache = base / "cache"
    project = base / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(to_toml(base_doc()))
    settings_ = UvKernelSettings(host_python=host_python, cache_dir=str(cache))
    with environ(**OFFLINE) as env:
        asyncio.run(pipeline.prepare(settings_, cwd=str(project), environ=env, log=lambda _m: None))
    return project, cache


def _garbled_json(valid: bytes):
    return st.one_of(
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        st.binary(max_size=200),
        toml_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["fingerprint", "uvkernel", "host", "ipykernel_from", "plan",
                                         "host_dists", "python", "entries", "version", "stamp", "dists"]),
                        toml_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    )


@costly(8)
@given(data=st.data())
def test_fuzz_state_cache_and_report_files(workdir, prepared_template, host_python, data):
    tried("state file / preflight cache / report / pyvenv.cfg (pipeline.prepare with preflight)")
    template, template_cache = prepared_template
    example = fresh(workdir)
    project, cache = example / "proj", example / "cache"
    shutil.copytree(template, project, symlinks=True)
    shutil.copytree(template_cache, cache, symlinks=True)
    env = project / ".venv"
    which = data.draw(st.sampled_from(["state", "preflight-cache", "report", "pyvenv.cfg", "host-cache",
                                               "host-dists-cache"]))
    if which == "state":
        target = env / venv.STATE_FILE
    elif which == "preflight-cache":
        target = preflight_cache.path_for(cache, env)
    elif which == "report":
        target = env / pipeline.REPORT_FILE
    elif which == "host-cache":
        target = next(p for p in (cache / "hosts").glob("*.json") if not p.name.endswith(".dists.json"))
    elif which == "host-dists-cache":
        target = next((cache / "hosts").glob("*.dists.json"))
    else:
        target = env / "pyvenv.cfg"
    valid = target.read_bytes() if target.exists() else b"{}"
    target.write_bytes(data.draw(_garbled_json(valid)))
    before = user_files(project)
    settings_ = UvKernelSettings(host_python=host_python, cache_dir=str(cache))
    try:
        with environ(**OFFLINE) as env_vars:
            asyncio.run(pipeline.prepare(settings_, cwd=str(project), environ=env_vars, log=lambda _m: None))
    except Exception as exc:  # noqa: BLE001
        assert_coded(exc, str(env), str(project))
    assert_unchanged(project, before)
