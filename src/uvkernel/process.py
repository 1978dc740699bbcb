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
from typing import Callable, Mapping, Sequence


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
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """Run ``args`` and capture its output; on timeout kill its whole process group.

    ``on_line`` hears each line of stdout and stderr as the child writes it (uv's "Resolved N packages",
    "Building X" while a kernel starts); it runs on the event loop and what it raises is ignored, since progress
    must never change a command's outcome."""
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
    # Readers fill buffers as output arrives, so whatever a child printed before a timeout is kept
    # (communicate() cancelled by wait_for would drop it).
    out_buf, err_buf = bytearray(), bytearray()

    async def _drain(stream: asyncio.StreamReader | None, buf: bytearray) -> None:
        if stream is None:
            return
        start = 0  # where the line not yet passed to on_line begins in buf
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                if on_line is not None and start < len(buf):
                    _tell(bytes(buf[start:]))
                return
            buf.extend(chunk)
            if on_line is not None:
                # uv redraws a line with '\r' when it thinks it writes to a terminal: each redraw is a line too
                end = max(buf.rfind(b"\n", start), buf.rfind(b"\r", start))
                if end >= start:
                    for line in bytes(buf[start:end]).replace(b"\r", b"\n").split(b"\n"):
                        _tell(line)
                    start = end + 1

    def _tell(line: bytes) -> None:
        text = line.decode(errors="replace").rstrip()
        if text and on_line is not None:
            try:
                on_line(text)
            except Exception:  # noqa: BLE001 - a progress display's failure is not the command's
                pass

    async def _feed() -> None:
        if proc.stdin is not None:
            try:
                proc.stdin.write(stdin or b"")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            proc.stdin.close()

    readers = asyncio.gather(_drain(proc.stdout, out_buf), _drain(proc.stderr, err_buf), _feed())

    async def _finish() -> None:
        await readers
        await proc.wait()

    finished = asyncio.ensure_future(_finish())
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
    except asyncio.TimeoutError:
        timed_out = True
        _kill_group(proc.pid)
        done, _pending = await asyncio.wait({finished}, timeout=5)  # the output printed until now
        if not done:  # a process outside the group still holds the pipes open: stop waiting for it
            finished.cancel()
            readers.cancel()
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        finished.cancel()
        readers.cancel()
        raise
    finally:
        # a child that left grandchildren behind in its group (e.g. a hung probe helper) goes too
        if proc.returncode is not None:
            _kill_group(proc.pid)
    out, err = bytes(out_buf).decode(errors="replace"), bytes(err_buf).decode(errors="replace")
    if timed_out:
        return Completed(argv, -9, out, err, timed_out=True)
    return Completed(argv, proc.returncode or 0, out, err)
