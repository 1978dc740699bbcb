"""The last line of defence: an exception uvkernel did not expect becomes INTERNAL_ERROR, never a bare traceback.

The fault is injected (pipeline.prepare replaced by a function that raises): no real input is known to reach
this path, which is the point of having it.  Everything around it is real: the CLI, jupyter_client, the
provisioner, the fallback kernel.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from hardening_support import assert_clear_error
from helpers import Kernel, make_project, run_async, start_refusal

from uvkernel import cli, pipeline


class Planted(RuntimeError):
    """The injected bug."""


async def _boom(*_args, **_kwargs):
    raise Planted("a planted bug {with braces} and 100% odd text")


def test_check_reports_internal_error_with_the_log_file(tmp_path, monkeypatch, capsys, host_python):
    monkeypatch.setattr(pipeline, "prepare", _boom)
    project = make_project(tmp_path / "proj")
    status = cli.main(["check", str(project), "--json", "--host-python", host_python])
    out = capsys.readouterr()
    assert status == 1
    report = json.loads(out.out)
    assert report["ok"] is False and report["error"]["code"] == "INTERNAL_ERROR"
    message = report["message"]
    assert_clear_error(message, "INTERNAL_ERROR", "Planted: a planted bug", f"checked {project}",
                       "report it", "UVKERNEL_DEBUG=1", "uvkernel --debug")
    log = Path(re.search(r"traceback is in (\S+\.log)", message).group(1))
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "Planted" in text and "_boom" in text
    assert "Traceback" not in out.err  # the user sees the short message; the traceback is in the file


def test_debug_flag_shows_the_traceback(tmp_path, monkeypatch, capsys, host_python):
    monkeypatch.setattr(pipeline, "prepare", _boom)
    project = make_project(tmp_path / "proj")
    status = cli.main(["--debug", "check", str(project), "--json", "--host-python", host_python])
    out = capsys.readouterr()
    assert status == 1 and json.loads(out.out)["error"]["code"] == "INTERNAL_ERROR"
    assert "Traceback (most recent call last)" in out.err and "_boom" in out.err


def test_any_command_turns_an_unexpected_error_into_internal_error(monkeypatch, capsys):
    def broken(_args):
        raise KeyError("spec")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    status = cli.main(["list"])
    err = capsys.readouterr().err
    assert status == 2
    assert_clear_error(err, "INTERNAL_ERROR", "ran `uvkernel list`", "KeyError")
    assert "Traceback" not in err


def test_kernel_start_shows_internal_error_and_logs_the_traceback(tmp_path, monkeypatch, install_spec, caplog):
    monkeypatch.setattr(pipeline, "prepare", _boom)
    project = make_project(tmp_path / "proj")
    name = install_spec()

    with caplog.at_level(logging.ERROR):
        message = start_refusal(name, project)
    assert_clear_error(message, "INTERNAL_ERROR", "Planted", "prepared the kernel's environment",
                       "the Jupyter server's log")
    assert "Traceback" not in message
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is Planted]
    assert logged, "the traceback did not reach the server log"


def test_debug_env_shows_the_traceback_in_the_start_error(tmp_path, monkeypatch, install_spec):
    monkeypatch.setattr(pipeline, "prepare", _boom)
    monkeypatch.setenv("UVKERNEL_DEBUG", "1")
    project = make_project(tmp_path / "proj")
    name = install_spec()

    message = start_refusal(name, project)
    assert "[INTERNAL_ERROR]" in message and "Traceback (most recent call last)" in message and "_boom" in message


def test_restart_shows_internal_error_in_the_fallback_kernel(tmp_path, monkeypatch, install_spec):
    project = make_project(tmp_path / "proj")
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            assert await k.value("1 + 1") == 2
            monkeypatch.setattr(pipeline, "prepare", _boom)
            await k.restart()
            info = await k.kc.kernel_info(reply=True, timeout=60)
            cell = await k.run("print('should not run')")
            return info["content"].get("implementation"), cell

    implementation, cell = run_async(scenario())
    assert implementation == "uvkernel-error"
    assert "should not run" not in cell.stdout
    shown = cell.stderr + str(cell.error)
    assert "INTERNAL_ERROR" in shown and "Planted" in shown, shown
