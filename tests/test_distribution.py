"""The distribution `jupyter-uvkernel` (the PyPI name `uvkernel` is another project's), its version,
the CLI's help, and a wheel built with `uv build` that works from a clean, non-editable install."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from helpers import REPO, make_project

from uvkernel import cli, pipeline


def uvk(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True,
                          env=env or os.environ.copy())


def test_version_is_the_sources_and_the_distributions_metadata_says_the_same():
    # `uvkernel --version` reads __version__ (no metadata lookup at start); the build writes that same value
    # into the distribution's metadata (pyproject.toml: dynamic version from src/uvkernel/__init__.py)
    import uvkernel

    version = metadata.version("jupyter-uvkernel")
    assert version == uvkernel.__version__
    done = uvk("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"uvkernel {version} (jupyter-uvkernel)"
    assert pipeline.report_dict()["uvkernel"] == version


def test_help_is_plain_words_and_every_command_and_option_has_one():
    parser = cli.build_parser()
    top = parser.format_help()
    assert "`" not in top and "``" not in top
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values()), helps
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and "`" not in action.help, f"uvkernel {name} {action.option_strings or action.dest}"
            assert "\n" not in action.help


def _fake_dist(folder: Path, name: str, version: str, files: list[str]) -> None:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


def test_the_unrelated_uvkernel_distribution_is_detected(tmp_path, host_python):
    # as after `pip install uvkernel` (PyPI's other project) beside ours
    _fake_dist(tmp_path / "site", "uvkernel", "0.2.0", ["uvkernel/__init__.py", "../../../bin/uvkernel"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = uvk("list", env=env)
    assert done.returncode == 0
    assert "[FOREIGN_UVKERNEL]" in done.stderr and "uvkernel 0.2.0" in done.stderr
    assert "pip uninstall -y uvkernel" in done.stderr and "pip install --force-reinstall jupyter-uvkernel" in done.stderr
    # another name owning uvkernel/ files: found by `check`, which reads every file list
    _fake_dist(tmp_path / "other", "some-fork", "1.0", ["uvkernel/cli.py"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "other")}
    assert "[FOREIGN_UVKERNEL]" not in uvk("list", env=env).stderr
    checked = uvk("check", str(make_project(tmp_path / "proj")), "--host-python", host_python, env=env)
    assert "[FOREIGN_UVKERNEL]" in checked.stderr and "some-fork 1.0" in checked.stderr
    assert "[FOREIGN_UVKERNEL]" not in uvk("list").stderr  # none in the dev env itself


def test_wheel_from_uv_build_installs_cleanly_and_starts_a_kernel_with_host_torch(tmp_path, uv_bin, host_python,
                                                                                  host_torch_file):
    dist = tmp_path / "dist"
    subprocess.run([uv_bin, "build", "--sdist", "--wheel", "--out-dir", str(dist), str(REPO)], check=True,
                   capture_output=True)
    wheels = list(dist.glob("jupyter_uvkernel-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("jupyter_uvkernel-*.tar.gz"))
    names = zipfile.ZipFile(wheels[0]).namelist()
    data = [n for n in names if ".data/data/share/jupyter/kernels/uvkernel/" in n]
    assert {Path(n).name for n in data} >= {"kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg"}
    assert "uvkernel/resources/logo-64x64.png" in names

    venv = tmp_path / "venv"
    subprocess.run([uv_bin, "venv", "-q", "--python", host_python, str(venv)], check=True, capture_output=True)
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheels[0])],
                   check=True, capture_output=True)
    shipped = venv / "share" / "jupyter" / "kernels" / "uvkernel"
    assert (shipped / "kernel.json").is_file() and (shipped / "logo-64x64.png").is_file()
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "uvkernel" / "cli.py").is_file()  # a real install, not an editable link to the source
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    version = subprocess.run([str(venv / "bin" / "uvkernel"), "--version"], capture_output=True, text=True, env=env)
    assert version.stdout.strip().startswith("uvkernel ") and version.returncode == 0
    done = subprocess.run([str(venv / "bin" / "uvkernel"), "install", "--user", "--name", "from-wheel",
                           "--host-python", host_python], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    logos = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / "from-wheel"
    assert (logos / "logo-64x64.png").is_file()

    project = make_project(tmp_path / "proj")
    start = (
        "import json, sys\n"
        "from jupyter_client.manager import start_new_kernel\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    km, kc = start_new_kernel(kernel_name=name, startup_timeout=300)\n"
        "    lines = []\n"
        "    kc.execute_interactive('import torch; print(torch.__file__)',\n"
        "                           output_hook=lambda m: lines.append(m['content'].get('text', '')), timeout=120)\n"
        "    out[name] = ''.join(lines).split()\n"
        "    kc.stop_channels(); km.shutdown_kernel(now=True)\n"
        "print(json.dumps(out))\n")
    # the shipped spec names no host: the rule's UVKERNEL_HOST_PYTHON picks it (Jupyter's own venv has no torch)
    ran = subprocess.run([str(venv / "bin" / "python"), "-c", start, "from-wheel", "uvkernel"], capture_output=True,
                         text=True, env={**env, "UVKERNEL_HOST_PYTHON": host_python}, cwd=project, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    for name in ("from-wheel", "uvkernel"):  # the spec `uvkernel install` wrote, and the one shipped in the wheel
        assert out[name][0] == host_torch_file, out
    assert (project / ".venv" / ".uvkernel-report.json").is_file()
