"""Shared test helpers: projects on disk, kernel specs, and running code in a real kernel."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def make_project(folder: Path, dependencies: list[str] | None = None, extra: str = "",
                 requires_python: str = ">=3.9", name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    deps = ", ".join(json.dumps(d) for d in (dependencies or []))
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "{name or _valid_name(folder.name)}"
        version = "0.1.0"
        requires-python = "{requires_python}"
        dependencies = [{deps}]
        """) + extra)
    return folder


def _valid_name(folder: str) -> str:
    """A project name uv accepts (PEP 508: ASCII letters, digits, -_. inside) from any folder name."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-") or "proj"


def uvkernel_cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True,
                          env=env or os.environ.copy())
    if check and done.returncode != 0:
        raise AssertionError(f"uvkernel {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class CellResult:
    stdout: str = ""
    stderr: str = ""
    data: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    status: str = ""

    @property
    def text(self) -> str:
        return self.stdout + "".join(d.get("text/plain", "") for d in self.data)

    def add(self, kind: str, content: dict[str, Any]) -> bool:
        """One iopub message of this cell's (jupyter_client's or the websocket's); True once the kernel is idle."""
        if kind == "stream":
            if content["name"] == "stdout":
                self.stdout += content["text"]
            else:
                self.stderr += content["text"]
        elif kind in ("execute_result", "display_data"):
            self.data.append(content["data"])
        elif kind == "error":
            self.error = content
        return kind == "status" and content["execution_state"] == "idle"


async def execute(kc, code: str, timeout: float = 120) -> CellResult:
    msg_id = kc.execute(code)
    result = CellResult()
    while True:
        msg = await kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id and result.add(msg["msg_type"], msg["content"]):
            break
    reply = await kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = await kc.get_shell_msg(timeout=timeout)
    result.status = reply["content"]["status"]
    return result


class Kernel:
    """A real kernel started through jupyter_client's AsyncKernelManager (so through the provisioner)."""

    def __init__(self, kernel_name: str, cwd: Path | str | None, env: dict[str, str] | None = None):
        from jupyter_client.manager import AsyncKernelManager

        self.km = AsyncKernelManager(kernel_name=kernel_name)
        self.cwd = cwd
        self.env = env
        self.kc = None

    async def __aenter__(self) -> "Kernel":
        kwargs: dict[str, Any] = {}
        if self.cwd is not None:
            kwargs["cwd"] = str(self.cwd)
        if self.env is not None:
            kwargs["env"] = self.env
        await self.km.start_kernel(**kwargs)
        await self._connect()
        return self

    async def _connect(self) -> None:
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=120)

    async def run(self, code: str, timeout: float = 120) -> CellResult:
        return await execute(self.kc, code, timeout)

    async def value(self, expression: str) -> Any:
        result = await self.run(f"import json as _j; print(_j.dumps({expression}))")
        assert result.error is None, result.error
        return json.loads(result.stdout.strip().splitlines()[-1])

    async def restart(self) -> None:
        self.kc.stop_channels()
        await self.km.restart_kernel()
        await self._connect()

    async def __aexit__(self, *exc: Any) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        await self.km.shutdown_kernel(now=True)


def run_async(coro):
    return asyncio.run(coro)


def start_refusal(kernel_name: str, cwd: Path | str, env: dict[str, str] | None = None) -> str:
    """The text a refused kernel start shows (the KernelStartError jupyter_server puts in JupyterLab's dialog);
    the test fails when the kernel starts instead."""

    async def start() -> str:
        try:
            async with Kernel(kernel_name, cwd, env=env):
                pass
        except Exception as exc:  # noqa: BLE001 - whatever the start raised is what a front end shows
            return str(exc)
        pytest.fail(f"the kernel {kernel_name} started in {cwd}, where its start should have been refused")

    return run_async(start())
