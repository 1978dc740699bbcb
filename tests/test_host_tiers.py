"""The host's packages in two tiers, and the project shapes real projects have.

Each test stands for one cause found with published projects, made small: the whole host treated as
untouchable (a distro's PyYAML, torch's pure-Python dependencies), placeholders that reached isolated builds, a
companion refused for a missing system library, workspace shapes uv accepts, one conflict named at a time, a
default group that could not be left out.  Real uv, the real CPU-torch host, PyPI for ordinary packages.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest
from deps_support import assert_no_stack, cli, dists, host_dists, torch_wheel_file, uv
from helpers import make_project
from index_support import make_wheel, serve, simple_index, tiny_shared_object, torch_linked_object

from uvkernel import pipeline
from uvkernel.errors import DependencyError, EnvError, ProjectError
from uvkernel.settings import UvKernelSettings


def prepare(host_python: str, project: Path, **config) -> pipeline.Prepared:
    settings = UvKernelSettings(host_python=host_python, **config)
    return asyncio.run(pipeline.prepare(settings, cwd=str(project), environ=dict(os.environ)))


def failure(host_python: str, project: Path, **config):
    with pytest.raises((DependencyError, ProjectError, EnvError)) as info:
        prepare(host_python, project, **config)
    return info.value


def _older(version: str) -> str:
    """A bound the host's version does not meet: below its major release."""
    return version.split(".")[0]


# --- protect the stack, prefer the rest --------------------------------------------------------------------------

def test_a_host_package_outside_the_stack_gets_an_env_copy_when_the_project_needs_another(tmp_path, host_python):
    # fsspec is one of torch's pure-Python dependencies (torch needs fsspec>=0.8.5): not part of the stack
    host = host_dists(host_python)
    project = make_project(tmp_path / "proj", [f"fsspec<{_older(host['fsspec'])}"])
    prepared = prepare(host_python, project)
    env = project / ".venv"
    mine = dists(env)["fsspec"]
    assert mine != host["fsspec"] and int(mine.split(".")[0]) < int(_older(host["fsspec"]))
    copies = prepared.env.plan["host_replaced"]
    assert copies["fsspec"] == {"env": mine, "host": host["fsspec"]}
    assert f"fsspec {mine} in the env over the host's {host['fsspec']}" in json.dumps(prepared.report())
    assert "torch" in prepared.env.plan["from_host"]
    assert_no_stack(env)


def test_a_host_package_whose_version_fits_stays_the_hosts(tmp_path, host_python):
    host = host_dists(host_python)
    project = make_project(tmp_path / "proj", ["jinja2", "sympy"])
    prepared = prepare(host_python, project)
    assert "jinja2" not in dists(project / ".venv") and "sympy" not in dists(project / ".venv")
    assert prepared.env.plan["from_host"]["Jinja2" if "Jinja2" in prepared.env.plan["from_host"] else "jinja2"] \
        == host["jinja2"]


def test_the_old_rule_and_protected_packages_refuse_instead(tmp_path, host_python):
    host = host_dists(host_python)
    project = make_project(tmp_path / "proj", [f"fsspec<{_older(host['fsspec'])}"])
    for config in ({"host_packages": "all"}, {"protected_packages": ["fsspec"]}):
        error = failure(host_python, project, **config)
        assert error.code == "DEPENDENCY_CONFLICT", str(error)
        assert host["fsspec"] in str(error)
    # allow_shadowing wins over both
    prepared = prepare(host_python, project, protected_packages=["fsspec"], allow_shadowing=["fsspec"])
    assert prepared.env.plan["shadowed_on_purpose"] == {"fsspec": host["fsspec"]}


def test_one_refusal_names_every_unmet_requirement_on_protected_packages(tmp_path, host_python):
    host = host_dists(host_python)
    project = make_project(tmp_path / "proj", ["torch==2.7.1", f"jinja2<{_older(host['jinja2'])}", "tomli-w"])
    error = failure(host_python, project, protected_packages=["jinja2"])
    assert error.code == "DEPENDENCY_CONFLICT"
    text = str(error)
    assert "torch==2.7.1" in text and host["torch"] in text
    assert f"jinja2<{_older(host['jinja2'])}" in text and host["jinja2"] in text
    assert dists(project / ".venv") == {}  # nothing installed, tomli-w neither


def test_markupsafe_in_torchs_closure_is_not_protected(host_python):
    from uvkernel.env import protection

    listing = asyncio.run(protection.list_host_distributions(host_python, _purelib(host_python)))
    split = protection.split(listing, UvKernelSettings())
    assert "torch" in split.protected
    # reachable from torch (jinja2 -> markupsafe) and it ships a compiled speed-up, but it is no GPU stack
    assert "markupsafe" in split.preferred and "jinja2" in split.preferred and "fsspec" in split.preferred
    assert listing["markupsafe"].compiled


def _purelib(python: str) -> list[str]:
    return [subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()]


# --- what stands for the host during resolution never reaches a build ------------------------------------------

def _sdist(folder: Path, name: str, setup_py: str) -> Path:
    """An sdist with only a setup.py (no pyproject.toml): uv builds it with setuptools' legacy backend in an
    isolated environment, as it builds rouge-score or transformers-stream-generator."""
    version = f"0.1.{uuid.uuid4().int % 10**9}"  # a version uv has never built: no cached wheel to reuse
    root = folder / f"{name}-{version}"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (root / "setup.py").write_text(setup_py.format(name=name, version=version))
    (root / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    path = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return path


SETUP = "from setuptools import setup\nsetup(name={name!r}, version={version!r}, packages=[{name!r}])\n"


def test_an_sdist_that_needs_setuptools_builds_as_uv_pip_install_builds_it(tmp_path, host_python):
    # the host has setuptools: what stands for it in the resolution must not become the build's setuptools
    assert "setuptools" in host_dists(host_python)
    sdist = _sdist(tmp_path / "dist", "legacybuild", SETUP)
    project = make_project(tmp_path / "proj", [f"legacybuild @ {sdist.as_uri()}"])
    prepare(host_python, project)
    assert "legacybuild" in dists(project / ".venv")


def test_a_failing_build_is_a_build_failure_not_a_conflict(tmp_path, host_python):
    sdist = _sdist(tmp_path / "dist", "brokenbuild", "raise SystemExit('this package cannot be built here')\n")
    project = make_project(tmp_path / "proj", [f"brokenbuild @ {sdist.as_uri()}"])
    error = failure(host_python, project)
    assert error.code == "BUILD_FAILED", str(error)
    assert "brokenbuild" in error.summary and "cannot be built here" in str(error)


# --- project shapes uv accepts ----------------------------------------------------------------------------------

def test_workspace_of_itself_with_an_unused_source_and_a_duration_for_exclude_newer(tmp_path, host_python):
    # reasoning-from-scratch's shape: members = ["."], a workspace source that no requirement uses
    project = make_project(tmp_path / "proj", ["tomli-w"], name="selfws", extra=textwrap.dedent("""\
        [tool.uv]
        exclude-newer = "7 days"
        [tool.uv.sources]
        unused = { workspace = true }
        selfws = { workspace = true }
        [tool.uv.workspace]
        members = ["."]
        """))
    prepare(host_python, project)
    assert "tomli-w" in dists(project / ".venv")


@pytest.mark.parametrize("where", ["group", "extra"])
def test_the_root_project_named_by_its_own_workspace_source(where, tmp_path, host_python):
    # LLMs-from-scratch's shape: a group that depends on the project itself through { workspace = true }
    table = ('[dependency-groups]\ndev = ["selfref", "tomli-w"]\n' if where == "group" else
             '[project.optional-dependencies]\nall = ["selfref[x]"]\nx = ["tomli-w"]\n')
    project = make_project(tmp_path / "proj", [], name="selfref", extra=table + textwrap.dedent("""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        [tool.uv.sources]
        selfref = { workspace = true }
        """))
    (project / "selfref").mkdir()
    (project / "selfref" / "__init__.py").write_text("")
    prepare(host_python, project, **({"extras": ["all"]} if where == "extra" else {}))
    assert "tomli-w" in dists(project / ".venv") and "selfref" in dists(project / ".venv")


def test_a_default_group_with_an_unreachable_source_can_be_left_out(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["tomli-w"], extra=textwrap.dedent("""\
        [dependency-groups]
        dev = ["nowhere-pkg"]
        [tool.uv.sources]
        nowhere-pkg = { git = "file:///nonexistent/uvkernel-test-repo" }
        """))
    error = failure(host_python, project)
    assert error.code == "SOURCE_UNREACHABLE", str(error)
    text = str(error)
    assert "nowhere-pkg" in text and "group dev" in text and "no_default_groups" in text
    prepare(host_python, project, no_default_groups=True)
    assert "tomli-w" in dists(project / ".venv")
    # and through the terminal commands' flags, as `uv sync --no-group dev` takes it
    done = cli("check", str(project), "--host-python", host_python, "--json", "--no-group", "dev")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


# --- companions: what links libtorch/libc10, refused only for a real mismatch -----------------------------------

def _checked_with(wheel: Path, tmp_path: Path, host_python: str) -> dict:
    """`uvkernel check`'s report for a project whose env holds ``wheel`` besides what the project needs; it must
    start."""
    project = make_project(tmp_path / "proj", [])
    prepare(host_python, project)
    uv("pip", "install", "-q", "--python", str(project / ".venv" / "bin" / "python"), "--no-deps", str(wheel))
    done = cli("check", str(project), "--host-python", host_python, "--json", "--recheck")
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["message"]
    return report


def test_a_companion_with_an_optional_loader_whose_system_library_is_missing_starts_with_a_note(tmp_path,
                                                                                                host_python):
    wheels = tmp_path / "wheels"
    good = torch_linked_object(tmp_path / "good", host_python)
    optional = torch_linked_object(tmp_path / "opt", host_python, needs="libuvkernel_absent_codec.so.5")
    wheel = make_wheel(wheels, "torchcodecish", "1.0", extra={"torchcodecish/core_a.so": good,
                                                              "torchcodecish/core_b.so": optional})
    report = _checked_with(wheel, tmp_path, host_python)
    assert any(c["name"] == "torchcodecish" for c in report["preflight"]["facts"]["companions"])
    notices = " ".join(report["preflight"]["notices"])
    assert "libuvkernel_absent_codec.so.5" in notices and "torchcodecish" in notices


def test_a_package_that_requires_torch_but_links_nothing_is_not_a_companion(tmp_path, host_python):
    # bitsandbytes' shape: it requires torch and ships a shared object that does not link libtorch/libc10
    wheels = tmp_path / "wheels"
    wheel = make_wheel(wheels, "bnbish", "1.0", requires=["torch"],
                       extra={"bnbish/native.so": tiny_shared_object(tmp_path / "so")})
    report = _checked_with(wheel, tmp_path, host_python)
    assert not [c for c in report["preflight"]["facts"]["companions"] if c["name"] == "bnbish"]


# --- host packages the env's copies would break ------------------------------------------------------------------

DEBIAN_HOST = "/usr/bin/python3.11"  # apt's httplib2 0.20.4 requires pyparsing>=2.4.2 (set-up: --corpus)


@pytest.mark.parametrize("locked", [False, True], ids=["resolved", "locked"])
def test_a_host_package_outside_the_projects_graph_gets_an_env_copy_when_the_envs_copies_break_it(tmp_path, locked):
    # the project pins pyparsing below what Debian's httplib2 accepts; the project never names httplib2, yet the env
    # still sees apt's copy: it must get an httplib2 of its own that accepts the env's pyparsing
    host = host_dists(DEBIAN_HOST)
    assert host.get("httplib2") == "0.20.4", "the Debian host lacks apt's httplib2: bash scripts/setup.sh --corpus"
    project = make_project(tmp_path / "proj", ["pyparsing<2.4"])
    if locked:
        uv("lock", "--python", DEBIAN_HOST, cwd=project)
        assert (project / "uv.lock").is_file()
    prepared = prepare(DEBIAN_HOST, project)
    env = project / ".venv"
    mine = dists(env)
    assert mine["pyparsing"].startswith("2.")
    assert "httplib2" in mine and mine["httplib2"] != "0.20.4"
    assert prepared.env.plan["host_replaced"]["httplib2"] == {"env": mine["httplib2"], "host": "0.20.4"}
    report = json.dumps(prepared.report())
    assert f"httplib2 {mine['httplib2']} in the env over the host's 0.20.4" in report
    assert "HOST_PACKAGE_COPIED" in report
    from uvkernel.kernel_extension import render_text

    shown = render_text(prepared.report())  # what %uvkernel and `uvkernel check` print: each copy once
    assert shown.count(f"httplib2 {mine['httplib2']} in the env over the host's 0.20.4") == 1, shown
    done = subprocess.run([str(env / "bin" / "python"), "-c",
                           "import httplib2, pyparsing; from importlib.metadata import requires, version;"
                           "print(httplib2.__file__, pyparsing.__version__)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(env) in done.stdout.split()[0]  # the env's own copy, not apt's
    assert_no_stack(env)


@pytest.fixture(scope="module")
def aws_shaped_host(tmp_path_factory, host_python) -> Path:
    """A venv host holding what the default test host's awscli/botocore stack looks like, made small: awsish
    1.5.0 requires dateish<3 (botocore 1.43 and python-dateutil<3), its neighbour 2.0.0 is another host package,
    and forkpkg 2.0.0 is the newest release, for Python 3.11 and later only."""
    wheels = tmp_path_factory.mktemp("host-wheels")
    base = subprocess.run([host_python, "-I", "-c", "import sys; print(sys._base_executable)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = tmp_path_factory.mktemp("aws-host") / ".venv"
    uv("venv", "-q", "--python", base, str(host))
    uv("pip", "install", "-q", "--python", str(host / "bin" / "python"), str(torch_wheel_file(host_python)),
       "ipykernel",
       str(make_wheel(wheels, "awsish", "1.5.0", requires=["dateish<3", "neighbour>=2"])),
       str(make_wheel(wheels, "dateish", "2.9.0")), str(make_wheel(wheels, "neighbour", "2.0.0")),
       str(make_wheel(wheels, "forkpkg", "2.0.0", requires_python=">=3.11")))
    return host


def _aws_index(tmp_path: Path, *more: Path) -> str:
    """The index the project sees before PyPI (which serves the rest, pip for one): dateish 3 (which the host's awsish rejects) and the older releases uv could
    reach for: awsish 0.1.0 from another era, which accepts anything; awsish 1.2.0, which accepts dateish 3 but
    only with the host's neighbour moved back to 1.0.0."""
    wheels = tmp_path / "wheels"
    made = [make_wheel(wheels, "dateish", "2.9.0"), make_wheel(wheels, "dateish", "3.0.0"),
            make_wheel(wheels, "awsish", "0.1.0"), make_wheel(wheels, "awsish", "1.5.0",
                                                               requires=["dateish<3", "neighbour>=2"]),
            make_wheel(wheels, "awsish", "1.2.0", requires=["dateish>=2", "neighbour<2"]),
            make_wheel(wheels, "neighbour", "1.0.0"), make_wheel(wheels, "neighbour", "2.0.0"),
            make_wheel(wheels, "forkpkg", "1.0.0"), make_wheel(wheels, "forkpkg", "2.0.0", requires_python=">=3.11"),
            *more]
    return simple_index(tmp_path / "index", made)


def test_a_host_package_that_nothing_recent_fits_gets_a_note_not_a_copy_from_another_era(tmp_path, aws_shaped_host,
                                                                                         monkeypatch):
    # the default test host's awscli stack met python-dateutil 4: uvkernel installed botocore 0.76.0, boto3 0.0.3
    # and awscli 1.6.5, which broke moto and s3transfer in turn, in 4.5 minutes.  A copy from another major version
    # is not a working answer, and a copy must not move the host's other packages (neighbour) either
    monkeypatch.setenv("UV_INDEX", _aws_index(tmp_path))
    python = str(aws_shaped_host / "bin" / "python")
    project = make_project(tmp_path / "proj", ["dateish>=3"])
    prepared = prepare(python, project)
    mine = dists(project / ".venv")
    assert mine.get("dateish") == "3.0.0"
    assert "awsish" not in mine and "neighbour" not in mine, mine
    report = json.dumps(prepared.report())
    assert "HOST_PACKAGE_BROKEN_BY_ENV" in report and "HOST_PACKAGE_COPIED" not in report
    notes = [n for n in prepared.env.plan["notes"] if "HOST_PACKAGE_BROKEN_BY_ENV" in n]
    assert len(notes) == 1 and "awsish 1.5.0" in notes[0], notes
    assert "uvkernel add 'dateish<3'" in notes[0], notes[0]  # the command that makes the project take one it accepts
    # the answer is kept: the next cold env of the same inputs does not ask uv again
    kept = list((Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel" / "resolutions").glob("hostcopies-*.txt"))
    assert [json.loads(k.read_text()) for k in kept] == [{"pins": [], "unfixable": ["awsish"]}]


def test_uv_taking_too_long_over_a_host_packages_copy_is_a_note_that_is_not_kept(tmp_path, aws_shaped_host,
                                                                                  monkeypatch):
    # ruling botocore out takes uv half a minute; an optional step must never hold the start for uv's whole timeout
    from uvkernel.env import sync

    monkeypatch.setattr(sync, "HOST_COPY_TIMEOUT", 0.001)  # less than uv takes to start
    monkeypatch.setenv("UV_INDEX", _aws_index(tmp_path))
    project = make_project(tmp_path / "proj", ["dateish>=3"])
    prepared = prepare(str(aws_shaped_host / "bin" / "python"), project)
    assert dists(project / ".venv").get("dateish") == "3.0.0"
    assert any("HOST_PACKAGE_BROKEN_BY_ENV" in n and "awsish" in n for n in prepared.env.plan["notes"])
    assert not list((Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel" / "resolutions").glob("hostcopies-*.txt"))


def test_a_host_package_gets_an_older_copy_in_its_own_major_version_that_leaves_the_rest_as_it_is(
        tmp_path, aws_shaped_host, monkeypatch):
    # aws-sam-translator 1.110.0 requires pydantic~=2.13.3; its 1.106.0 accepts the project's pydantic 2.14
    wheels = tmp_path / "more"
    monkeypatch.setenv("UV_INDEX", _aws_index(tmp_path, make_wheel(wheels, "awsish", "1.1.0",
                                                                           requires=["dateish>=2"])))
    python = str(aws_shaped_host / "bin" / "python")
    project = make_project(tmp_path / "proj", ["dateish>=3"])
    prepared = prepare(python, project)
    mine = dists(project / ".venv")
    assert (mine.get("dateish"), mine.get("awsish")) == ("3.0.0", "1.1.0"), mine
    assert "neighbour" not in mine
    assert prepared.env.plan["host_replaced"]["awsish"] == {"env": "1.1.0", "host": "1.5.0"}
    assert "HOST_PACKAGE_COPIED" in json.dumps(prepared.report())


def test_uv_answers_a_host_packages_copy_from_its_cache_and_asks_the_index_only_for_what_it_lacks(
        tmp_path, aws_shaped_host, monkeypatch):
    # where the index's files come without caching headers, uv asks again about every release it considers (24 s
    # for botocore's two thousand); from its cache, the same answer takes a tenth of a second
    import http.server

    wheels = tmp_path / "more"
    _aws_index(tmp_path, make_wheel(wheels, "awsish", "1.1.0", requires=["dateish>=2"]))
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        """Serves as the registry mirror here does: no Last-Modified, no Cache-Control."""

        def send_header(self, keyword, value):
            if keyword.lower() != "last-modified":
                super().send_header(keyword, value)

        def log_message(self, *args, **kwargs):
            asked.append(self.path)

    server = serve(tmp_path / "index", Handler)
    monkeypatch.setenv("UV_INDEX", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # empty: the cache lacks it, the index has it
    python = str(aws_shaped_host / "bin" / "python")
    project = make_project(tmp_path / "proj", ["dateish>=3"])
    try:
        first = prepare(python, project)
        assert dists(project / ".venv").get("awsish") == "1.1.0", first.env.plan["notes"]
        assert any(path.startswith("/awsish/") for path in asked)  # the cache lacked it: the index was asked
        # the kept answer and the env removed: uv's cache alone gives the same copy
        for kept in (Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel" / "resolutions").glob("hostcopies-*.txt"):
            kept.unlink()
        shutil.rmtree(project / ".venv")
        asked.clear()
        prepared = prepare(python, project)
    finally:
        server.shutdown()
        server.server_close()
    assert dists(project / ".venv").get("awsish") == "1.1.0"
    assert prepared.env.plan["host_replaced"]["awsish"] == {"env": "1.1.0", "host": "1.5.0"}
    # no question about awsish's releases (installing the copy may still read its page)
    assert not [path for path in asked if path.startswith("/awsish/awsish-")], asked


def test_a_universal_locks_fork_for_the_hosts_python_is_the_one_compared_with_the_host(tmp_path, aws_shaped_host,
                                                                                       monkeypatch):
    # uv.lock holds forkpkg 1.0.0 for Python 3.10 and 2.0.0 for 3.11 and later; the 3.11 host's 2.0.0 is the
    # locked version here, so it serves.  Read as the first entry, the env got its own 2.0.0 and the report said
    # "forkpkg 1.0.0 in the env over the host's 2.0.0"
    monkeypatch.setenv("UV_INDEX", _aws_index(tmp_path))
    python = str(aws_shaped_host / "bin" / "python")
    project = make_project(tmp_path / "proj", ["forkpkg"])
    uv("lock", "--python", python, cwd=project)
    lock = (project / "uv.lock").read_text()
    assert 'name = "forkpkg"\nversion = "1.0.0"' in lock and 'name = "forkpkg"\nversion = "2.0.0"' in lock, lock
    prepared = prepare(python, project)
    assert "forkpkg" not in dists(project / ".venv")
    assert prepared.env.plan["from_host"].get("forkpkg") == "2.0.0", prepared.env.plan
    assert "forkpkg" not in prepared.env.plan["host_replaced"]


def test_a_locked_package_that_does_not_fit_the_host_moves_and_the_rest_of_the_lock_stays(tmp_path, host_python):
    # lockcomp 2.0.0 is locked but needs a newer torch than the host's; the only lockcomp that fits the host needs
    # helperpkg<2, so the locked helperpkg must move too.  Every other locked version stays as `uv lock` keeps it:
    # bystander 1.0.0, although 2.0.0 is out (a real project's lighteval dragged ~60 new packages in otherwise)
    wheels = tmp_path / "wheels"
    made = [make_wheel(wheels, "torch", "2.15.0", code="raise ImportError('index torch')\n"),
            make_wheel(wheels, "lockcomp", "2.0.0", requires=["torch>=2.15"]),
            make_wheel(wheels, "lockcomp", "1.0.0", requires=["torch>=2.0", "helperpkg<2"]),
            make_wheel(wheels, "helperpkg", "1.0.0"), make_wheel(wheels, "helperpkg", "2.0.0"),
            make_wheel(wheels, "bystander", "1.0.0")]
    url = simple_index(tmp_path / "index", made)
    sources = "".join(f'{n} = {{ index = "fit" }}\n' for n in ("torch", "lockcomp", "helperpkg", "bystander"))
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["torch>=2.13", "lockcomp", "helperpkg", "bystander"]\n[tool.uv.sources]\n' + sources +
        f'[[tool.uv.index]]\nname = "fit"\nurl = "{url}"\nexplicit = true\n')
    uv("lock", "--python", host_python, cwd=project)
    lock = (project / "uv.lock").read_text()
    assert 'name = "lockcomp"\nversion = "2.0.0"' in lock and 'name = "helperpkg"\nversion = "2.0.0"' in lock
    simple_index(tmp_path / "index", made + [make_wheel(wheels, "bystander", "2.0.0")])  # released after the lock
    prepared = prepare(host_python, project)
    mine = dists(project / ".venv")
    assert (mine["lockcomp"], mine["helperpkg"], mine["bystander"]) == ("1.0.0", "1.0.0", "1.0.0"), mine
    deviations = {d["name"]: d for d in prepared.env.plan["lock_deviations"]}
    assert set(deviations) == {"lockcomp", "helperpkg"}, deviations
    assert "torch>=2.15" in deviations["lockcomp"]["why"] and "lockcomp" in deviations["helperpkg"]["why"]
    assert (project / "uv.lock").read_text() == lock
    assert_no_stack(project / ".venv")
