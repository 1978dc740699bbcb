"""Async subprocesses that never block the Jupyter server's event loop.

Every child runs in its own process group (``start_new_session``) so a timeout kills it together with
whatever it started (uv's workers, a hung CUDA initialisation).  Arguments are always a list: nothing
from a notebook path or a kernel.json value ever goes through a shell.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass
class Completed:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    stdin: bytes | None = None,
) -> Completed:
    """Run ``args`` and capture its output; on timeout kill its whole process group."""
    argv = [os.fspath(a) for a in args]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=os.fspath(cwd) if cwd is not None else None,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc.pid)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 5)
        except asyncio.TimeoutError:
            out, err = b"", b""
        return Completed(argv, -9, out.decode(errors="replace"), err.decode(errors="replace"), timed_out=True)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    finally:
        # a child that left grandchildren behind in its group (e.g. a hung probe helper) goes too
        if proc.returncode is not None:
            _kill_group(proc.pid)
    return Completed(argv, proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
