"""The provisioner: real kernels started through the provisioner from specs written by `uvkernel install`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Kernel, make_project, run_async

from uvkernel.env import venv


def _kernel_processes(python: Path) -> list[int]:
    """Live ipykernel processes run by ``python`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if argv and argv[0] == bytes(str(python), "utf-8") and any(b"ipykernel_launcher" in a for a in argv) \
                and state != "Z":
            found.append(int(entry.name))
    return found


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _env_dists(env: Path) -> set[str]:
    site = next(env.glob("lib/python*/site-packages"))
    return {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}


def test_kernel_uses_host_torch_from_project_env(tmp_path, install_spec, host_torch_file):
    project = make_project(tmp_path / "proj")
    (project / "notebooks").mkdir()
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project / "notebooks") as k:
            facts = await k.value("{'torch': __import__('torch').__file__, 'prefix': __import__('sys').prefix,"
                                  " 'cwd': __import__('os').getcwd(), 'venv': __import__('os').environ['VIRTUAL_ENV'],"
                                  " 'path0': __import__('os').environ['PATH'].split(':')[0],"
                                  " 'nousersite': __import__('os').environ.get('PYTHONNOUSERSITE')}")
            report = await k.run("%uvkernel")
            return facts, report

    facts, report = run_async(scenario())
    env = project / ".venv"
    assert facts["torch"] == host_torch_file
    assert Path(facts["prefix"]) == env
    assert Path(facts["cwd"]) == project / "notebooks"
    assert facts["venv"] == str(env)
    assert facts["path0"] == str(env / "bin")
    assert facts["nousersite"] == "1"
    assert "include-system-site-packages = true" in (env / "pyvenv.cfg").read_text()
    assert "torch" not in _env_dists(env)
    assert not list(env.glob("lib/python*/site-packages/torch"))
    assert report.error is None
    assert "text/html" in report.data[0] and host_torch_file.rsplit("/", 1)[0] in report.data[0]["text/plain"]


def test_second_start_reuses_env(tmp_path, install_spec):
    project = make_project(tmp_path / "proj")
    name = install_spec()

    async def start_once():
        async with Kernel(name, cwd=project) as k:
            return await k.value("__import__('sys').prefix")

    assert run_async(start_once()) == str(project / ".venv")
    cfg = project / ".venv" / "pyvenv.cfg"
    first_cfg = cfg.stat().st_mtime_ns
    first_state = venv.read_state(project / ".venv")
    assert first_state.get("fingerprint")
    run_async(start_once())
    assert cfg.stat().st_mtime_ns == first_cfg
    import json

    report = json.loads((project / ".venv" / ".uvkernel-report.json").read_text())
    assert report["env"]["reused"] is True
    assert report["env"]["actions"] == []


def test_restart_and_interrupt(tmp_path, install_spec):
    project = make_project(tmp_path / "proj")
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            pid1 = await k.value("__import__('os').getpid()")
            await k.run("marker = 41")
            await k.restart()
            pid2 = await k.value("__import__('os').getpid()")
            after = await k.run("print(marker)")
            prefix = await k.value("__import__('sys').prefix")
            # interrupt a running sleep
            msg_id = k.kc.execute("import time\nfor _ in range(600): time.sleep(0.1)")
            await asyncio.sleep(2)
            t0 = time.monotonic()
            await k.km.interrupt_kernel()
            interrupted = None
            while True:
                msg = await k.kc.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    interrupted = msg["content"]["ename"]
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            elapsed = time.monotonic() - t0
            alive = await k.value("1 + 1")
            return pid1, pid2, after, prefix, interrupted, elapsed, alive

    pid1, pid2, after, prefix, interrupted, elapsed, alive = run_async(scenario())
    assert pid1 != pid2
    assert after.error is not None and after.error["ename"] == "NameError"  # a fresh kernel after restart
    assert prefix == str(project / ".venv")
    assert interrupted == "KeyboardInterrupt"
    assert elapsed < 20
    assert alive == 2


def test_notebook_outside_project_writes_nothing_there(tmp_path, install_spec, isolated):
    folder = tmp_path / "loose notebooks"
    folder.mkdir()
    (folder / "analysis.ipynb").write_text("{}")
    before = _listing(folder)
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=folder) as k:
            return await k.value("__import__('sys').prefix"), await k.value("__import__('torch').__file__")

    prefix, torch_file = run_async(scenario())
    assert _listing(folder) == before
    cache = isolated / "cache" / "uvkernel" / "envs"
    assert Path(prefix).parent == cache
    assert oct(Path(prefix).stat().st_mode & 0o777) == oct(0o700)
    assert "site-packages/torch" in torch_file and not torch_file.startswith(prefix)


def test_uv_project_environment_is_honoured(tmp_path, install_spec):
    project = make_project(tmp_path / "proj")
    name = install_spec(env={"UV_PROJECT_ENVIRONMENT": "envs/kernel"})

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value("__import__('sys').prefix"), await k.value(
                "__import__('os').environ.get('UV_PROJECT_ENVIRONMENT')")

    prefix, leftover = run_async(scenario())
    assert prefix == str(project / "envs" / "kernel")
    assert leftover == "envs/kernel"  # `!uv add` in the kernel targets the same env
    assert not (project / ".venv").exists()


def test_env_without_system_site_is_repaired_keeping_packages(tmp_path, install_spec, host_python, uv_bin):
    project = make_project(tmp_path / "proj")
    env = project / ".venv"
    subprocess.run([uv_bin, "venv", "-q", "--python", host_python, str(env)], check=True)
    # a package the user installed by hand: a tiny local one, no download
    pkg = tmp_path / "userpkg"
    make_project(pkg, name="user-installed-pkg")
    (pkg / "user_installed_pkg.py").write_text("VALUE = 7\n")
    (pkg / "pyproject.toml").write_text((pkg / "pyproject.toml").read_text() +
                                        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
                                        '[tool.hatch.build.targets.wheel]\nonly-include = ["user_installed_pkg.py"]\n')
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(env / "bin" / "python"), str(pkg)], check=True)
    assert "include-system-site-packages = false" in (env / "pyvenv.cfg").read_text()
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value("__import__('user_installed_pkg').VALUE"), await k.value(
                "__import__('torch').__file__")

    value, torch_file = run_async(scenario())
    assert value == 7
    assert not torch_file.startswith(str(env))
    assert "include-system-site-packages = true" in (env / "pyvenv.cfg").read_text()


def test_env_from_another_interpreter_is_reported_not_deleted(tmp_path, install_spec, uv_bin):
    other = "/usr/bin/python3"
    if not Path(other).exists():
        pytest.fail("this test needs a second interpreter at /usr/bin/python3 (Debian's python3 package)")
    project = make_project(tmp_path / "proj")
    env = project / ".venv"
    subprocess.run([uv_bin, "venv", "-q", "--python", other, str(env)], check=True)
    (env / "keep-me.txt").write_text("user data")
    name = install_spec()

    async def scenario():
        k = Kernel(name, cwd=project)
        with pytest.raises(Exception) as info:
            await k.km.start_kernel(cwd=str(project))
        await k.km.cleanup_resources() if hasattr(k.km, "cleanup_resources") else None
        return str(info.value)

    message = run_async(scenario())
    assert "ENV_OTHER_INTERPRETER" in message
    assert f"mv {env} {env}.old" in message
    assert (env / "keep-me.txt").read_text() == "user data"
    assert os.path.realpath(env / "bin" / "python").startswith("/usr/bin/")


def test_concurrent_starts_build_env_once(tmp_path, install_spec):
    project = make_project(tmp_path / "proj")
    name = install_spec()

    async def scenario():
        kernels = [Kernel(name, cwd=project) for _ in range(3)]
        await asyncio.gather(*(k.__aenter__() for k in kernels))
        try:
            prefixes = await asyncio.gather(*(k.value("__import__('sys').prefix") for k in kernels))
            actions = [k.km.provisioner.prepared.env.actions for k in kernels]
            return prefixes, actions
        finally:
            await asyncio.gather(*(k.__aexit__(None, None, None) for k in kernels))

    prefixes, actions = run_async(scenario())
    assert prefixes == [str(project / ".venv")] * 3
    # exactly one start created the env; the others waited for the lock and found it built
    assert sorted("created" in a for a in actions) == [False, False, True], actions


def test_host_without_ipykernel_gets_it_installed_into_env(tmp_path, install_spec):
    host = "/usr/bin/python3"
    if not Path(host).exists():
        pytest.fail("this test needs a host without ipykernel at /usr/bin/python3 (Debian's python3 package)")
    if subprocess.run([host, "-I", "-c", "import ipykernel"], capture_output=True).returncode == 0:
        pytest.fail(f"{host} has ipykernel; this test needs a host without it")
    project = make_project(tmp_path / "proj")
    name = install_spec(host=host, required_packages=[])

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value("__import__('ipykernel').__file__"), await k.value("__import__('sys').prefix")

    ipykernel_file, prefix = run_async(scenario())
    assert ipykernel_file.startswith(str(project / ".venv"))
    assert prefix == str(project / ".venv")
    # host-provided distributions were left to the host
    host_dists = subprocess.run([host, "-I", "-c", "import importlib.metadata as m; print('\\n'.join(sorted("
                                 "{d.metadata['Name'].lower() for d in m.distributions()})))"],
                                capture_output=True, text=True).stdout.split()
    shadowing = _env_dists(project / ".venv") & {d.replace("-", "_") for d in host_dists}
    assert not shadowing, f"the env shadows host packages: {shadowing}"


def test_kernel_environment_is_clean_and_not_accumulated(tmp_path, install_spec):
    project = make_project(tmp_path / "proj")
    name = install_spec()
    incoming = dict(os.environ)
    incoming.update({"PYTHONHOME": "/nonexistent/pythonhome", "CONDA_PREFIX": "/opt/conda",
                     "CONDA_DEFAULT_ENV": "base", "KEEP_ME": "yes"})
    snapshot = dict(incoming)

    async def scenario():
        async with Kernel(name, cwd=project, env=incoming) as k:
            first = await k.value("{k: __import__('os').environ.get(k) for k in "
                                  "['PYTHONHOME', 'CONDA_PREFIX', 'CONDA_DEFAULT_ENV', 'KEEP_ME', 'PATH']}")
            await k.restart()
            second = await k.value("__import__('os').environ['PATH']")
            return first, second

    first, second_path = run_async(scenario())
    assert incoming == snapshot  # the caller's dict was not mutated
    assert first["PYTHONHOME"] is None and first["CONDA_PREFIX"] is None and first["CONDA_DEFAULT_ENV"] is None
    assert first["KEEP_ME"] == "yes"
    env_bin = str(project / ".venv" / "bin")
    assert first["PATH"].split(":").count(env_bin) == 1
    assert second_path.split(":").count(env_bin) == 1  # restarts do not pile up PATH entries


def test_preflight_failure_on_restart_gives_fallback_kernel_and_no_env_kernel(tmp_path, install_spec):
    """A restart whose preflight fails starts no kernel from the env, only the fallback that shows why."""
    project = make_project(tmp_path / "proj")
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            first_pid = await k.value("__import__('os').getpid()")
            (project / "torch.py").write_text("raise SystemExit('a stray torch.py')\n")
            await k.restart()
            info = await k.kc.kernel_info(reply=True, timeout=60)
            cell = await k.run("print('should not run')")
            fallback = (info["content"].get("implementation"), cell)
            survivors = _kernel_processes(project / ".venv" / "bin" / "python")
            (project / "torch.py").unlink()
            await k.restart()
            back = await k.value("__import__('sys').prefix")
            return first_pid, fallback, back, survivors

    first_pid, (implementation, cell), back, survivors = run_async(scenario())
    assert survivors == []  # no kernel runs from the env while its preflight fails
    assert implementation == "uvkernel-error"
    assert "should not run" not in cell.stdout
    assert "LOCAL_MODULE_SHADOWS" in cell.stderr + str(cell.error)
    assert back == str(project / ".venv")
    assert not Path(f"/proc/{first_pid}").exists()


def test_kernel_lists_answer_at_every_turn_of_a_start(tmp_path, install_spec):
    """jupyter_server's kernel lists (GET /api/status, /api/kernels) read fields the server adds to a kernel's
    manager only after the start returns, one loop turn after the kernel is listed; a list read at every turn
    of a plain ipykernel start hits that turn (a TraitError, a 500 in the REST API), a uvkernel start's never
    does.  The server's own managers, as jupyter server builds them."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    import uvkernel.provisioner  # noqa: F401 - loaded before the start, as the server extension does

    project = make_project(tmp_path / "proj")
    name = install_spec()

    async def failures_while_starting(kernel_name: str) -> tuple[list[str], int]:
        mkm = AsyncMappingKernelManager(root_dir=str(project), connection_dir=str(tmp_path))
        seen: list[str] = []
        turns = 0
        start = asyncio.ensure_future(mkm.start_kernel(kernel_name=kernel_name, path=""))
        while not start.done():
            try:
                mkm.list_kernels()
            except Exception as exc:  # what the status handler would turn into a 500
                seen.append(f"{type(exc).__name__}: {exc}")
            turns += 1
            await asyncio.sleep(0)
        kernel_id = start.result()
        try:
            assert [k["execution_state"] for k in mkm.list_kernels()] == ["starting"]
        finally:
            await mkm.shutdown_kernel(kernel_id, now=True)
        return seen, turns

    plain, plain_turns = run_async(failures_while_starting("python3"))
    ours, our_turns = run_async(failures_while_starting(name))
    assert plain and "last_activity" in plain[0], (
        f"a plain start no longer shows the server's window ({plain_turns} turns read): the uvkernel "
        "workaround in the provisioner's pre_launch may go")
    assert our_turns > 100 and not ours, ours


def _connection_file_with_a_taken_port(folder: Path) -> tuple[Path, socket.socket]:
    """A connection file whose iopub port another process holds, as when a port jupyter_client picked is taken
    before the kernel binds it."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    free = []
    for _ in range(4):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free.append(probe.getsockname()[1])
    path = folder / "kernel-taken-port.json"
    path.write_text(json.dumps({"shell_port": free[0], "iopub_port": taken.getsockname()[1], "stdin_port": free[1],
                                "control_port": free[2], "hb_port": free[3], "ip": "127.0.0.1", "key": "k",
                                "transport": "tcp", "signature_scheme": "hmac-sha256", "kernel_name": ""}))
    return path, taken


def test_a_kernel_whose_port_is_taken_exits_so_the_server_restarts_it(tmp_path, host_python):
    """ipykernel given a port that is already taken raises, then hangs in interpreter shutdown: the server sees
    a live process and waits for it forever (the control below).  uvkernel's kernel command exits at once with
    ipykernel's error, so the server's restarter starts it again on new ports."""
    from uvkernel import launch

    project = make_project(tmp_path / "proj")
    env_python = project / ".venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "uvkernel", "check", str(project), "--host-python", host_python],
                   check=True, capture_output=True)
    connection, taken = _connection_file_with_a_taken_port(tmp_path)
    version = tuple(int(n) for n in subprocess.check_output(
        [host_python, "-c", "import sys; print(*sys.version_info[:2])"], text=True).split())
    ours = launch.kernel_command(env_python, str(connection), version)
    plain = [str(env_python), "-m", "ipykernel_launcher", "-f", str(connection)]
    try:
        done = subprocess.run(ours, cwd=project, capture_output=True, text=True, timeout=60)
        assert done.returncode == launch.START_FAILED_EXIT and "Address already in use" in done.stderr, \
            done.stderr[-2000:]
        control = subprocess.Popen(plain, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            control.wait(10)
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
        finally:
            control.kill()
            control.wait()
        assert hung, ("a plain ipykernel now exits when its port is taken: the launcher's exit-at-once "
                      "may go (ipykernel fixed it)")
    finally:
        taken.close()


def test_the_kernel_command_keeps_what_python_m_gives(tmp_path, install_spec):
    """The notebook's folder importable, sys.argv[0] and __main__ as `python -m ipykernel_launcher` leaves
    them: the command that exits at once on a failed start changes nothing else."""
    project = make_project(tmp_path / "proj")
    (project / "localmod.py").write_text("VALUE = 42\n")
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value("(__import__('localmod').VALUE, __import__('sys').argv[0].endswith("
                                 "'ipykernel_launcher.py'), __name__, '' in __import__('sys').path)")

    assert run_async(scenario()) == [42, True, "__main__", True]


def test_a_kernel_that_lost_its_port_is_started_again_and_answers(tmp_path, install_spec, monkeypatch):
    """Through the server's own managers: the first port handed to a uvkernel start is already taken (as when
    another process grabs it before the kernel binds it); the kernel exits, the server's restarter starts it
    again on new ports, and it answers."""
    from jupyter_client.connect import LocalPortCache
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    project = make_project(tmp_path / "proj")
    name = install_spec()
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    handed: list[int] = []
    original = LocalPortCache.find_available_port

    def first_one_taken(self: Any, ip: str) -> int:
        handed.append(taken if not handed else original(self, ip))
        return handed[-1]

    monkeypatch.setattr(LocalPortCache, "find_available_port", first_one_taken)

    async def scenario() -> tuple[int, dict]:
        mkm = AsyncMappingKernelManager(root_dir=str(project), connection_dir=str(tmp_path),
                                        kernel_spec_manager=KernelSpecManager())
        kernel_id = await mkm.start_kernel(kernel_name=name, path="")
        km = mkm.get_kernel(kernel_id)
        try:
            client = km.client()
            client.start_channels()
            deadline = time.monotonic() + 120
            reply: dict = {}
            while not reply and time.monotonic() < deadline:
                if km.shell_port == taken:  # still the first start: wait for the restarter
                    await asyncio.sleep(0.5)
                    continue
                client.stop_channels()
                client = km.client()  # the ports of the start now running
                client.start_channels()
                try:
                    reply = await client.kernel_info(reply=True, timeout=10)
                except TimeoutError:
                    pass
            client.stop_channels()
            return km.shell_port, reply
        finally:
            await mkm.shutdown_kernel(kernel_id, now=True)

    try:
        port, reply = run_async(scenario())
    finally:
        held.close()
    assert handed[0] == taken
    assert port != taken and reply.get("content", {}).get("status") == "ok", (port, reply)
