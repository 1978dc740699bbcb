"""The kernel provisioner: a thin shell around the pipeline.

``pre_launch`` runs the pipeline (all async: the server's event loop keeps answering), then launches the
env's python with ipykernel.  A failure becomes :class:`KernelStartError`, whose text reaches JupyterLab's
"Error Starting Kernel" dialog and REST clients intact.  An exception uvkernel did not expect becomes an
INTERNAL_ERROR the same way (the traceback goes to the server log; UVKERNEL_DEBUG=1 shows it to the user).  On a restart Jupyter drops that text, so there
(and wherever ``fallback_kernel`` says) a small kernel starts instead that shows the message in the notebook
and runs no code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
import traceback
from datetime import datetime, timezone
from string import Template
from typing import Any

from jupyter_client.connect import LocalPortCache, port_names
from jupyter_client.provisioning import LocalProvisioner
from tornado.web import HTTPError
from traitlets.config import Config, LazyConfigValue

from . import cache_envs, fallback_kernel, pipeline, progress, start_events
from .errors import SpecError, UvkernelError, debug_enabled, internal_error
from .launch import KERNEL_VAR, START_FAILED_EXIT
from .settings import SETTING_NAMES, validate_config
from .settings_traits import UvKernelSettings


class PlainText(str):
    """A str whose repr is itself: jupyter_server shows ``repr(str(error))`` on a kernel change."""

    def __repr__(self) -> str:
        return str.__str__(self)


DIALOG_WIDTH = 92  # columns JupyterLab's dialog shows without scrolling (1280 px wide window)


_NBSP = "\u00a0"


def dialog_text(text: str, width: int = DIALOG_WIDTH, first_line_taken: int = 0) -> str:
    """Hard-wrap long lines at spaces, keeping every word (paths) and every `command` whole.

    JupyterLab's "Error Starting Kernel" dialog shows the message in a ``<pre>`` that does not wrap: a long
    line would run out of the dialog and need horizontal scrolling.  Continuation lines are indented.  A
    backquoted command is never split (pasted into a shell, a split command breaks); one longer than the
    dialog stands on a line of its own.  ``first_line_taken`` columns of the first line are used by text a
    front end puts before ours.
    """
    out: list[str] = []
    for number, line in enumerate(text.splitlines()):
        taken = first_line_taken if number == 0 else 0
        if len(line) + taken <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        parts = line.split("`")
        glued = "`".join(p.replace(" ", _NBSP) if i % 2 else p for i, p in enumerate(parts))
        wrapped = textwrap.wrap(glued, width, initial_indent=" " * taken, subsequent_indent=indent + "    ",
                                break_long_words=False, break_on_hyphens=False)
        wrapped[0] = wrapped[0][taken:]
        out.extend(w.replace(_NBSP, " ") for w in wrapped)
    return "\n".join(out)


def _kernel_change_prefix(kernel_name: str) -> str:
    """What jupyter_server puts before the message when a notebook switches kernels (PATCH /api/sessions)."""
    return f"The '{kernel_name}' kernel could not be started: "


class KernelStartError(HTTPError):
    """A start failure as jupyter_server wants it: its message is shown, not replaced by 'Unhandled error'."""

    def __init__(self, error: UvkernelError, kernel_name: str = "") -> None:
        self.error = error
        self.text = dialog_text(str(error), first_line_taken=len(_kernel_change_prefix(kernel_name)))
        # No positional args: tornado never %-formats the message (messages avoid '%' all the same, since
        # tornado >= 6.5 doubles it in ``log_message``, which jupyter_server sends to the client).
        super().__init__(500, self.text, reason="uvkernel: kernel not started")

    def __str__(self) -> PlainText:
        return PlainText(self.text)

    def __repr__(self) -> str:
        return self.text


_BASE_KEYS = {"kernel_id", "kernel_spec", "parent", "config", "log"} | set(LocalProvisioner.class_traits())


def _spec_path(spec: Any) -> str:
    folder = getattr(spec, "resource_dir", "")
    return os.path.join(folder, "kernel.json") if folder else "the kernel spec"


_CONFIG_SECTIONS = ("UvKernelProvisioner", "UvKernelSettings")


def _jupyter_config_problems(base: dict[str, Any]) -> tuple[UvkernelError | None, Any]:
    """Settings from jupyter config files (``c.UvKernelProvisioner.min_gpus = 'two'``) are checked as kernel.json's
    are: traitlets would raise a bare TraitError out of the constructor.  Returns (error, the config without the
    invalid section) or (None, None)."""
    config = base.get("config")
    if config is None and base.get("parent") is not None:
        config = getattr(base["parent"], "config", None)
    if not config:
        return None, None
    for section in _CONFIG_SECTIONS:
        if section not in config:
            continue
        values = {k: v for k, v in dict(config[section]).items()
                  if k in SETTING_NAMES and not isinstance(v, LazyConfigValue)}
        try:
            validate_config(values)
        except SpecError as exc:
            clean = config.copy()
            clean[section] = Config({k: v for k, v in dict(config[section]).items() if k not in SETTING_NAMES})
            return SpecError("JUPYTER_CONFIG_INVALID", section=section, detail=exc.detail, facts=exc.facts), clean
    return None, None


def _sources(provisioner: Any, *, spec_keys: list[str], spec: str) -> dict[str, str]:
    """Which settings the kernel spec and jupyter config set (both win over a project's [tool.uvkernel])."""
    sources: dict[str, str] = {}
    config = getattr(provisioner, "config", None) or {}
    for cls in type(provisioner).mro():
        section = config.get(cls.__name__) if hasattr(config, "get") else None
        for key in section or {}:
            if key in SETTING_NAMES and key not in sources:
                sources[key] = f"jupyter config (c.{cls.__name__}.{key})"
    sources.update({key: spec for key in spec_keys if key in SETTING_NAMES})
    return sources


class UvKernelProvisioner(UvKernelSettings, LocalProvisioner):
    """Starts ipykernel from the notebook project's uv env, which inherits the host's site-packages."""

    def __init__(self, **kwargs: Any) -> None:
        # jupyter_client passes kernel_id, kernel_spec and parent, then the spec's config as keywords;
        # it only warns about unknown keys, uvkernel refuses them at start with a clear message.
        base = {k: kwargs.pop(k) for k in list(kwargs) if k in _BASE_KEYS}
        spec_path = _spec_path(base.get("kernel_spec"))
        config_error: UvkernelError | None = None
        unexpected: Exception | None = None
        # the spec's config arrives as keywords, so a key named like one of jupyter's own options replaces it
        # ({"config": true} in kernel.json): only the real thing is taken, anything else is a coded error, never
        # a bare TraitError out of the constructor
        posing = {k: base.pop(k) for k, kind in (("config", Config), ("log", (logging.Logger, logging.LoggerAdapter)))
                  if base.get(k) is not None and not isinstance(base[k], kind)}
        try:
            validate_config(kwargs, spec=spec_path)
            if posing:
                raise SpecError("CONFIG_INVALID", spec=spec_path,
                                detail="\n".join(f"{k} = {v!r} is not a uvkernel setting (it is jupyter's own "
                                                 "option, which kernel.json cannot set)" for k, v in posing.items()),
                                facts=[("valid settings", ", ".join(SETTING_NAMES))])
        except SpecError as exc:
            config_error = exc
            kwargs = {}
        except Exception as exc:  # the last line of defence: never a bare traceback
            unexpected = exc
            kwargs = {}
        jupyter_error, clean = _jupyter_config_problems(base)
        if clean is not None:
            base["config"] = clean  # the valid rest of the jupyter config still applies
        config_error = config_error or jupyter_error
        super().__init__(**base, **kwargs)
        if unexpected is not None:
            config_error = self._internal(unexpected, "read the kernel spec's provisioner config", os.environ)
        self.setting_sources = _sources(self, spec_keys=list(kwargs), spec=spec_path if spec_path == "the kernel spec"
                                        else f"the kernel spec {spec_path}")
        self._config_error = config_error
        self._restarting = False
        self._last_exit: int | None = None  # the exit code of the kernel process this provisioner last waited for
        self._error_file = ""
        self.prepared: pipeline.Prepared | None = None
        self.last_error: UvkernelError | None = None
        self._liveness = cache_envs.Liveness()  # marks a cache env in use while this kernel runs (uvkernel gc)

    async def wait(self) -> int | None:
        had_process = self.process is not None
        code = await super().wait()
        if had_process:
            self._last_exit = code
        return code

    def _new_ports_after_failed_start(self) -> None:
        """A kernel that exited because it could not start (a port it was given taken by another process before
        it bound it) is started again on new ports.  jupyter_client means its restarter to do this ("random
        ports until alive"), but with its port cache on (the default) the restart reuses the ports it cached."""
        km = self.parent
        if km is None:
            return
        cache = LocalPortCache.instance()
        for name in port_names:  # the ports jupyter_client's own "random ports" reset clears
            port = getattr(km, name, 0)
            if port:
                cache.return_port(port)
            setattr(km, name, 0)
        self.ports_cached = False
        km.cleanup_connection_file()  # written again, with the new ports, by the base class's pre_launch
        self.log.warning("uvkernel: the kernel exited before it started; starting it again on new ports")

    async def cleanup(self, restart: bool = False) -> None:
        self._restarting = restart
        self._liveness.clear()
        await super().cleanup(restart=restart)
        if self._error_file:  # the fallback kernel that read it has exited
            try:
                os.unlink(self._error_file)
            except OSError:
                pass
            self._error_file = ""

    def _internal(self, exc: Exception, doing: str, environ: Any) -> UvkernelError:
        """An unexpected exception as an INTERNAL_ERROR; its traceback goes to the server log."""
        self.log.error("uvkernel: unexpected error while it %s", doing, exc_info=exc)
        debug = debug_enabled(os.environ) or debug_enabled(environ)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if debug else ""
        return internal_error(exc, doing=doing, log="the Jupyter server's log (the terminal or service log of "
                              "jupyter lab / jupyter server)", traceback_text=text)

    def _server_log(self, step: progress.Step) -> None:  # the start's lines, in the server's log
        if step.kind == progress.LINE:
            self.log.info("uvkernel: %s", step.text)

    def _wants_fallback(self, restarting: bool) -> bool:
        return self.fallback_kernel == "always" or (restarting and self.fallback_kernel == "restart")

    def _refuse(self, error: UvkernelError) -> KernelStartError:
        self.last_error = error
        self.log.error("uvkernel: kernel not started:\n%s", error)
        return KernelStartError(error, kernel_name=getattr(self.parent, "kernel_name", "") or "")

    def _listable_while_starting(self) -> None:
        """Give the kernel manager the fields the server's kernel lists read, before the kernel is listed.

        jupyter_server adds ``last_activity`` and ``execution_state`` to a kernel's manager only after the start
        returns, one turn of the event loop after the manager is listed as running: a GET /api/status or
        /api/kernels served in that turn fails with 500.  A uvkernel start is long and the front ends poll while
        it runs, so the manager carries them from the start; the server overwrites them as before."""
        km = self.parent
        if km is None:
            return
        for name, value in (("last_activity", datetime.now(timezone.utc)), ("execution_state", "starting")):
            try:
                if getattr(km, name) is not None:
                    continue  # a restart: the server's own value stands
            except Exception:  # noqa: BLE001 - absent, or a trait with no valid default yet (the server's manager)
                pass
            try:
                setattr(km, name, value)
            except Exception:  # noqa: BLE001 - a manager that takes no such value is listed as before
                return

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._listable_while_starting()
        restarting, self._restarting = self._restarting, False
        if restarting and self._last_exit == START_FAILED_EXIT:
            self._new_ports_after_failed_start()
        self._last_exit = None
        incoming_env = dict(kwargs.get("env") or os.environ)
        # the spec's env is applied by the base class later; the pipeline must see it now (UV_PROJECT_ENVIRONMENT…)
        spec_env = getattr(self.kernel_spec, "env", None) or {}
        incoming_env.update({k: Template(v).safe_substitute(incoming_env) for k, v in spec_env.items()})
        cwd = kwargs.get("cwd")
        error: UvkernelError | None = self._config_error
        self.last_error = None
        reporter = progress.Reporter(self._server_log)
        events = start_events.for_provisioner(self, incoming_env, reporter)
        if events is not None:
            events.start()
        if error is None:
            try:
                with reporter.observing():
                    recovered = await self._recover_edits(cwd, incoming_env, reporter)
                    self.prepared = await pipeline.prepare(self, cwd=cwd, environ=incoming_env, log=reporter,
                                                           liveness=self._liveness, notices=recovered)
            except UvkernelError as exc:
                error = exc
            except Exception as exc:  # the last line of defence: never a bare exception in the dialog
                error = self._internal(exc, "prepared the kernel's environment", incoming_env)
            except BaseException:
                self._liveness.clear()
                raise
        if events is not None:
            if error is not None:
                events.failed(error)
            else:
                assert self.prepared is not None
                events.ready(self.prepared.timings, list(self.prepared.env.actions))
        if error is not None:
            self._liveness.clear()
            refusal = self._refuse(error)
            if not self._wants_fallback(restarting):
                raise refusal
        kwargs = await super().pre_launch(**kwargs)
        connection_file = self.parent.connection_file if self.parent else ""
        if error is not None:
            kwargs["cmd"], kwargs["env"] = self._fallback(error, connection_file, kwargs["env"])
            return kwargs
        assert self.prepared is not None
        kwargs["cmd"] = self.prepared.command(connection_file)
        # a copy: saved launch kwargs stay as they came.  UVKERNEL_KERNEL: `!uvkernel add X` uses this spec
        kernel_name = getattr(self.parent, "kernel_name", "") or ""
        kwargs["env"] = self.prepared.environment_for(kwargs["env"], context={KERNEL_VAR: kernel_name})
        if cwd is None:
            kwargs["cwd"] = str(self.prepared.project.notebook_dir)
        return kwargs

    async def _recover_edits(self, cwd: str | None, environ: dict[str, str], reporter: progress.Reporter
                             ) -> list[str]:
        """An earlier ``uvkernel add``/``remove`` of this project that was killed half-way is rolled back first,
        as the terminal commands do, so the kernel never starts from uv's half of a change; in a thread, since it
        may wait for the uv that command left running (lock_timeout at most)."""
        from . import project_edit  # the command's journal: imported by the start that needs it

        recovered = await asyncio.to_thread(project_edit.recover_for_folder, self, cwd, log=reporter,
                                            environ=environ)
        for text in recovered:
            reporter(text)
        return recovered

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        try:
            info = await super().launch_kernel(cmd, **kwargs)
        except BaseException:
            self._liveness.clear()
            raise
        self._liveness.launched(self.pid)  # the marker now follows the kernel's process, not the server's
        return info

    def _fallback(self, error: UvkernelError, connection_file: str,
                  env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """A kernel in the server's interpreter that only shows the error (never runs user code)."""
        cmd, env, self._error_file = fallback_kernel.prepare(error, connection_file, env)
        return cmd, env
