"""Torch companions of the host torch's build are selected from the variant's index.

Routing only: a local ``file://`` index built here stands in for the PyTorch CPU index (unreachable from this
machine).  It serves a small companion-shaped package, ``torchcomp`` (a real shared object built with gcc and linked
against the host torch's libc10 makes it a companion), in two builds: the plain one (as on PyPI) refuses to import on a ``+cpu`` torch, the ``+cpu`` one
imports only there.  A pure-Python package that requires torch (torchmetrics) is not a companion: it is left as
uv installed it.  The detection of a real mismatch
runs on the real torchvision in test_companions.py.
"""

from __future__ import annotations

import pytest
from deps_support import assert_no_stack, dists, uv
from hardening_support import assert_clear_error, check
from index_support import make_wheel, simple_index, torch_linked_object
from test_uv_projects import kernel_facts, write

PLAIN = ("import torch\nBUILD = '1.0.0'\nif '+' in torch.__version__:\n"
         "    raise ImportError('torchcomp 1.0.0 is built for the PyPI torch, not ' + torch.__version__)\n")
CPU = ("import torch\nBUILD = '1.0.0+cpu'\nif not torch.__version__.endswith('+cpu'):\n"
       "    raise ImportError('torchcomp 1.0.0+cpu needs a +cpu torch, not ' + torch.__version__)\n")


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, host_python) -> dict[str, str]:
    base = tmp_path_factory.mktemp("companion-indexes")
    # a companion ships a shared object linked against torch (a pure-Python package that requires torch runs on
    # any build)
    so = {"torchcomp/_C.so": torch_linked_object(base / "so", host_python)}
    pypi = [make_wheel(base / "w-pypi", "torch", "2.13.0", code="raise ImportError('index torch')\n"),
            make_wheel(base / "w-pypi", "torchcomp", "1.0.0", requires=["torch==2.13.0"], code=PLAIN, extra=so)]
    cpu = [make_wheel(base / "w-cpu", "torchcomp", "1.0.0+cpu", requires=["torch==2.13.0"], code=CPU, extra=so)]
    future = [make_wheel(base / "w-future", "torchcomp", "1.0.0+cpu", requires=["torch==2.15.0"], code=CPU,
                         extra=so)]
    return {"pypi": simple_index(base / "pypi", pypi), "cpu": simple_index(base / "cpu", cpu),
            "future": simple_index(base / "future", future)}


def _project(folder, stand_ins):
    # the project's own default index stands in for PyPI: torchcomp comes from it in the plain build
    return write(folder, '[project]\nname = "proj"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                 'dependencies = ["torch", "torchcomp"]\n'
                 f'\n[[tool.uv.index]]\nname = "pypi-stand-in"\nurl = "{stand_ins["pypi"]}"\ndefault = true\n')


@pytest.mark.parametrize("locked", [True, False], ids=["uv.lock", "no-lock"])
def test_companion_of_the_hosts_build_comes_from_the_variant_index(locked, tmp_path, stand_ins, install_spec,
                                                                   host_python):
    project = _project(tmp_path / "proj", stand_ins)
    if locked:
        uv("lock", "-q", "--python", host_python, cwd=project)
        assert 'name = "torchcomp"\nversion = "1.0.0"' in (project / "uv.lock").read_text()
    name = install_spec(companion_index=stand_ins["cpu"])
    assert kernel_facts(name, project, "__import__('torchcomp').BUILD") == "1.0.0+cpu"
    assert dists(project / ".venv")["torchcomp"] == "1.0.0+cpu"
    assert_no_stack(project / ".venv")
    status, report, _ = check(project, "--kernel", name)
    assert status == 0, report["message"]
    assert report["env"]["dependencies"]["companion_builds"] == [
        {"name": "torchcomp", "from": "1.0.0", "to": "1.0.0+cpu", "index": stand_ins["cpu"]}]


def test_without_selection_the_preflight_refuses_the_other_build(tmp_path, stand_ins, install_spec):
    project = _project(tmp_path / "proj", stand_ins)
    status, report, _ = check(project, "--kernel", install_spec(companion_index="none"))
    assert status != 0
    assert_clear_error(report["message"], "COMPANION_BUILD_MISMATCH", "torchcomp", "1.0.0", "2.13.0+cpu")


def test_unreachable_variant_index_is_a_clear_refusal(tmp_path, stand_ins, install_spec):
    # the builds of the host's variant cannot be had, and the installed one does not load on the host's torch
    project = _project(tmp_path / "proj", stand_ins)
    gone = (tmp_path / "no-index").as_uri()
    status, report, _ = check(project, "--kernel", install_spec(companion_index=gone))
    assert status != 0
    assert_clear_error(report["message"], "COMPANION_BUILD_UNAVAILABLE", "torchcomp 1.0.0", gone, "+cpu",
                       "UV_FIND_LINKS", "torchcomp==1.0.0+cpu")


def test_a_companion_whose_torch_requirement_the_host_misses_is_never_installed(tmp_path, stand_ins, install_spec):
    project = _project(tmp_path / "proj", stand_ins)
    status, report, _ = check(project, "--kernel", install_spec(companion_index=stand_ins["future"]))
    assert status != 0
    assert_clear_error(report["message"], "COMPANION_BUILD_UNAVAILABLE", "torchcomp", "torch==2.15.0")
    assert dists(project / ".venv").get("torchcomp") != "1.0.0+cpu"


def test_a_pure_python_torch_dependent_is_not_replaced(tmp_path, stand_ins, install_spec):
    # the same package without compiled code (as torchmetrics): it runs on any torch build, nothing is replaced
    base = tmp_path / "pure"
    wheels = [make_wheel(base / "w", "torch", "2.13.0", code="raise ImportError('index torch')\n"),
              make_wheel(base / "w", "torchpure", "1.0.0", requires=["torch==2.13.0"])]
    url = simple_index(base / "index", wheels)
    project = write(tmp_path / "proj", '[project]\nname = "proj"\nversion = "0.1.0"\n'
                    'dependencies = ["torch", "torchpure"]\n'
                    f'\n[[tool.uv.index]]\nname = "stand-in"\nurl = "{url}"\ndefault = true\n')
    gone = (tmp_path / "no-index").as_uri()  # never asked: there is nothing to replace
    status, report, _ = check(project, "--kernel", install_spec(companion_index=gone))
    assert status == 0, report["message"]
    assert dists(project / ".venv")["torchpure"] == "1.0.0"
    assert report["env"]["dependencies"]["companion_builds"] == []
