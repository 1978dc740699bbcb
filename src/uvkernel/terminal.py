"""From a terminal: ``uvkernel sync`` and ``uvkernel run``, the env exactly as a kernel start prepares it.

uv's own ``uv sync`` / ``uv run`` cannot see the host's packages (uv reads only the env's own site-packages): in
an env that inherits the host's torch they install torch and its CUDA wheels again, which then shadow the host's.
These commands run the kernel start's pipeline (:func:`pipeline.prepare`) instead, with the same settings (``--kernel NAME``, or the
kernel's own when run from a notebook cell), and ``run`` then execs the command in the kernel's environment.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
from typing import Any, Mapping, NoReturn, Sequence, TextIO

from . import launch, pipeline
from .errors import ProjectError, UvkernelError, notice
from .progress import LINE, UV, Reporter, Step
from .settings import UvKernelSettings


def project_folder(value: str | None, command: str) -> str:
    """The folder a command works on, absolute; a missing one is an error (never its nearest parent)."""
    path = os.path.abspath(os.path.expanduser(value or "."))
    if not os.path.isdir(path):
        raise ProjectError("PROJECT_DIR_MISSING", path=path, command=command)
    return path


class Progress:
    """What the preparation is doing, on a terminal: a line per step and uv command, and a status line with the
    elapsed time and what uv is doing now.  Silent when the stream is not a terminal (scripts, CI, a notebook
    cell's captured output).  A sink of its own :class:`~uvkernel.progress.Reporter`, which is what the stages take as
    ``log``."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        # `!uvkernel add X` in a notebook cell: IPython gives the command a pty, but the cell's output is no
        # terminal a status line can redraw; plain step lines only
        self.live = self.enabled and not os.environ.get(launch.KERNEL_VAR) and not os.environ.get("JPY_PARENT_PID")
        self.log = Reporter(self.show)
        self.current = "starting"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        return self.log.elapsed

    def __enter__(self) -> "Progress":
        if self.live:
            self._ticker = threading.Thread(target=self._tick, name="uvkernel-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            with self._lock:
                self._write("\r\x1b[2K")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _status(self) -> None:
        if self._ticker is None:
            return
        width = shutil.get_terminal_size((100, 20)).columns
        line = f"  {self.elapsed:6.1f} s  {self.current}"
        self._write("\r\x1b[2K" + line[: max(width - 1, 10)])

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                self._status()

    def line(self, text: str) -> None:
        """A step of the command's own, told like the preparation's."""
        self.log(text)

    def show(self, step: Step) -> None:  # the reporter's sink
        """A line or a uv command: printed once with its time; any step: shown in the status line while it runs."""
        if not self.enabled:
            return
        with self._lock:
            self.current = step.text.splitlines()[0] if step.text else self.current
            if step.kind in (LINE, UV):
                clear = "\r\x1b[2K" if self._ticker is not None else ""
                self._write(f"{clear}[{step.elapsed:6.1f} s] {step.text}\n")
            self._status()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run_blocking(make_coro: Any, progress: Progress, folder: str) -> Any:
    """Run one async preparation from the CLI; Ctrl-C becomes INTERRUPTED (uv's process groups are killed by
    process.run; the env keeps what was done, and its creation marker or missing state file makes the next start
    resume it)."""
    try:
        with progress, progress.log.observing():
            return asyncio.run(make_coro())
    except KeyboardInterrupt:
        raise UvkernelError("INTERRUPTED", project=folder) from None


def prepare(settings: UvKernelSettings, folder: str, environ: Mapping[str, str],
            progress: Progress) -> pipeline.Prepared:
    """The kernel start's preparation (env, dependencies, preflight) for ``folder``."""
    progress.line(f"preparing the env for {folder}")
    return run_blocking(lambda: pipeline.prepare(settings, cwd=folder, environ=environ, log=progress.log),
                        progress, folder)


def summary(prepared: pipeline.Prepared, elapsed: float, title: str = "uvkernel sync") -> str:
    """A few lines: where the env is, what the host provides, what this run did, what needs attention."""
    env, project = prepared.env, prepared.project
    lines = [f"{title}: env ready, a kernel would start ({elapsed:.1f} s)",
             f"  project: {project.root or 'none (the folder is not in a project)'}",
             f"  env: {env.path}",
             f"  host: {prepared.host.executable} (Python {prepared.host.version_str})"]
    from_host = sorted((env.plan or {}).get("from_host", {}).items())
    if from_host:
        shown = ", ".join(f"{k} {v}" for k, v in from_host[:6]) + (", ..." if len(from_host) > 6 else "")
        lines.append(f"  from the host: {shown}")
    lines.append("  this run: " + ("; ".join(env.actions) if env.actions else "nothing to change"))
    hiding = [s["name"] for s in env.shadowing if not s.get("on_purpose")]
    if hiding:
        lines.append("  " + notice("ENV_HIDES_HOST_PACKAGES", names=", ".join(hiding),
                                   folder=project.root or project.notebook_dir))
    for text in prepared.preflight.notices:
        lines.append(f"  notice: {text}")
    return "\n".join(lines)


def run_environment(prepared: pipeline.Prepared) -> dict[str, str]:
    """The kernel's environment, plus the host's console scripts (torchrun and the like) after the env's own."""
    env = dict(prepared.kernel_env)
    host_bins = prepared.host.scripts or [os.path.dirname(prepared.host.executable)]
    env["PATH"] = launch.insert_after_env(env.get("PATH", os.defpath), prepared.env.path,
                                      [prepared.tools, prepared.host_scripts], host_bins)
    return env


def _host_script(prepared: pipeline.Prepared, command: str, path: str) -> str | None:
    """The file ``command`` names when it is a script of the host's interpreter outside the env (torchrun and the
    other console scripts of the host's packages), else None.

    Its shebang runs the host's python, which sees none of the env's packages: `torchrun train.py` would run
    the training script, and every worker it starts, without the project's dependencies.  Run by the env's
    python instead, the same script sees the host's packages and the env's, as `python train.py` does."""
    found = command if os.sep in command else shutil.which(command, path=path)
    if not found or os.path.realpath(found).startswith(os.path.realpath(prepared.env.path) + os.sep):
        return None
    return found if launch.runs_host_python(found, prepared.host) else None


def exec_command(prepared: pipeline.Prepared, argv: Sequence[str]) -> NoReturn:
    """Become ``argv`` (exec: its signals, stdin, tty and exit status are its own); a script of the host's
    interpreter (torchrun) runs under the env's python."""
    env = run_environment(prepared)
    script = _host_script(prepared, argv[0], env.get("PATH", os.defpath))
    if script is not None:
        argv = [str(prepared.env.python), script, *argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), env)
    except OSError as exc:
        raise UvkernelError("RUN_COMMAND_FAILED", command=argv[0], detail=exc.strerror or str(exc),
                            env=str(prepared.env.path)) from None


def strip_separator(argv: Sequence[str]) -> list[str]:
    argv = list(argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UvkernelError("RUN_NO_COMMAND")
    return argv


__all__ = ["Progress", "prepare", "summary", "run_environment", "exec_command", "project_folder"]
