"""A project's pins the host's versions miss: host_version_conflicts and the per-project [tool.uvkernel] policy.

nanochat pins ``torch==2.9.1``; the host has 2.13.0+cpu.  Default: refused (DEPENDENCY_CONFLICT, now with a
fourth way out).  With ``warn`` (per project or in the kernel spec) the kernel starts on the host's torch and
the pin is listed in the report, ``%uvkernel``, ``uvkernel check`` and the server log.
"""

from __future__ import annotations

import json
import logging

import pytest
from deps_support import assert_no_stack, cli, dists
from helpers import Kernel, make_project, run_async

from uvkernel import settings as settings_mod
from uvkernel.errors import ProjectError

WARN = '\n[tool.uvkernel]\nhost_version_conflicts = "warn"\n'


def test_default_refuses_the_pin_and_names_the_warn_option(tmp_path, host_python):
    project = make_project(tmp_path / "nanochat", ["torch==2.9.1", "tomli-w"])
    done = cli("check", str(project), "--host-python", host_python, check=False)
    assert done.returncode == 1
    text = done.stdout
    assert "[DEPENDENCY_CONFLICT]" in text and "torch==2.9.1" in text
    assert "--set host_version_conflicts='\"warn\"'" in text
    assert f'host_version_conflicts = "warn" under [tool.uvkernel] in {project}/pyproject.toml' in text
    assert dists(project / ".venv") == {}


def test_warn_in_the_project_starts_a_kernel_on_the_host_torch_and_lists_the_pin(tmp_path, install_spec,
                                                                                 host_torch_file, host_python,
                                                                                 caplog):
    project = make_project(tmp_path / "nanochat", ["torch==2.9.1", "tomli-w"], extra=WARN)
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            files = await k.value("[__import__('torch').__file__, __import__('torch').__version__,"
                                  " __import__('tomli_w').__file__]")
            magic = await k.run("%uvkernel")
            return files, magic

    with caplog.at_level(logging.INFO):
        (torch_file, version, tomli_file), magic = run_async(scenario())
    assert torch_file == host_torch_file and version == "2.13.0+cpu"
    assert tomli_file.startswith(str(project / ".venv") + "/")
    assert_no_stack(project / ".venv")
    report = json.loads((project / ".venv" / ".uvkernel-report.json").read_text())
    pins = report["env"]["dependencies"]["unmet_pins"]
    assert pins == [{"requirement": "torch==2.9.1", "name": "torch", "host_version": "2.13.0+cpu"}]
    assert report["settings"]["host_version_conflicts"]["from"] == f"[tool.uvkernel] in {project}/pyproject.toml"
    assert "unmet pin" in magic.text and "torch==2.9.1: the host's torch 2.13.0+cpu is used" in magic.text, magic
    # the server log: a notice per unmet pin
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "the project requires torch==2.9.1, the host provides torch 2.13.0+cpu" in logged

    text = cli("check", str(project), "--host-python", host_python).stdout
    assert "unmet pin" in text and "torch==2.9.1: the host's torch 2.13.0+cpu is used" in text


def test_kernel_spec_wins_over_the_project(tmp_path, install_spec):
    project = make_project(tmp_path / "nanochat", ["torch==2.9.1"], extra=WARN)
    kernel = Kernel(install_spec(host_version_conflicts="fail"), cwd=project)

    async def scenario():
        try:
            await kernel.__aenter__()
        except Exception:
            return kernel.km.provisioner.last_error
        await kernel.__aexit__(None, None, None)
        return None

    error = run_async(scenario())
    assert error is not None and error.code == "DEPENDENCY_CONFLICT"


def test_warn_from_the_kernel_spec_for_a_project_without_policy(tmp_path, host_python, install_spec):
    project = make_project(tmp_path / "proj", ["torch==2.9.1"])
    install_spec("uvk-warn", host_version_conflicts="warn")
    done = cli("check", str(project), "--kernel", "uvk-warn", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["message"]
    assert report["settings"]["host_version_conflicts"]["value"] == "warn"
    assert report["settings"]["host_version_conflicts"]["from"].startswith("the kernel spec ")
    assert report["env"]["dependencies"]["unmet_pins"][0]["requirement"] == "torch==2.9.1"
    assert any("torch==2.9.1" in n for n in report["preflight"]["notices"])


def test_warn_does_not_reach_a_companion_pinned_for_the_other_torch(tmp_path, host_python):
    # torchvision 0.24.1 requires torch==2.9.1: waiving the torch pin cannot make it fit the host's torch
    project = make_project(tmp_path / "proj", ["torch==2.9.1", "torchvision==0.24.1"], extra=WARN)
    done = cli("check", str(project), "--host-python", host_python, check=False)
    assert done.returncode == 1
    assert "[DEPENDENCY_CONFLICT_TRANSITIVE]" in done.stdout
    assert "waived by host_version_conflicts = warn, but packages made for that version still require it" \
           in done.stdout
    assert dists(project / ".venv") == {}


@pytest.mark.parametrize("table, code, words", [
    ('host_python = "/usr/bin/python3"', "PROJECT_SETTING_REFUSED", "host_python"),
    ('uv_timeout = 5\ncache_dir = "/tmp/x"', "PROJECT_SETTING_REFUSED", "cache_dir, uv_timeout"),
    ('host_version_conflict = "warn"', "PROJECT_CONFIG_INVALID", "did you mean host_version_conflicts"),
    ('host_version_conflicts = "maybe"', "PROJECT_CONFIG_INVALID", "host_version_conflicts = 'maybe'"),
    ('extras = "gpu"', "PROJECT_CONFIG_INVALID", "extras = 'gpu'"),
])
def test_tool_uvkernel_is_refused_for_anything_but_policy(tmp_path, host_python, table, code, words):
    project = make_project(tmp_path / "proj", ["tomli-w"], extra=f"\n[tool.uvkernel]\n{table}\n")
    done = cli("check", str(project), "--host-python", host_python, check=False)
    assert done.returncode == 1
    assert f"[{code}]" in done.stdout and words in done.stdout, done.stdout
    assert not (project / ".venv").exists()  # refused before anything was created


def test_project_policy_merging_keeps_explicit_settings():
    spec = settings_mod.from_config({"extras": ["a"]}, source="the kernel spec X")
    pyproject = {"tool": {"uvkernel": {"extras": ["b"], "host_version_conflicts": "warn",
                                       "required_packages": ["torch", "torchvision"]}}}
    merged = settings_mod.with_project_policy(spec, pyproject, "/p/pyproject.toml")
    assert merged.extras == ["a"] and merged.host_version_conflicts == "warn"
    assert merged.required_packages == ["torch", "torchvision"]
    assert settings_mod.sources_of(merged) == {
        "extras": {"value": ["a"], "from": "the kernel spec X"},
        "host_version_conflicts": {"value": "warn", "from": "[tool.uvkernel] in /p/pyproject.toml"},
        "required_packages": {"value": ["torch", "torchvision"], "from": "[tool.uvkernel] in /p/pyproject.toml"}}
    assert spec.host_version_conflicts == "fail"  # the caller's settings are not changed
    with pytest.raises(ProjectError) as info:
        settings_mod.project_policy({"tool": {"uvkernel": ["warn"]}}, "/p/pyproject.toml")
    assert info.value.code == "PROJECT_CONFIG_INVALID"


def test_the_provisioner_knows_which_settings_the_spec_and_jupyter_config_set(tmp_path):
    from jupyter_client.kernelspec import KernelSpec
    from traitlets.config import Config

    from uvkernel.provisioner import UvKernelProvisioner

    config = Config({"UvKernelProvisioner": {"extras": ["a"], "min_gpus": 1}})
    prov = UvKernelProvisioner(kernel_id="k", kernel_spec=KernelSpec(resource_dir=str(tmp_path)), parent=None,
                               config=config, min_gpus=2)
    assert prov.setting_sources == {"extras": "jupyter config (c.UvKernelProvisioner.extras)",
                                    "min_gpus": f"the kernel spec {tmp_path}/kernel.json"}
    merged = settings_mod.with_project_policy(prov, {"tool": {"uvkernel": {"extras": ["b"], "dependency_groups": ["g"]}}},
                                              "/p/pyproject.toml")
    assert merged.extras == ["a"] and merged.dependency_groups == ["g"] and merged.min_gpus == 2
