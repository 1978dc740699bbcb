"""The kernel provisioner: a thin shell around the pipeline.

``pre_launch`` runs the pipeline (all async: the server's event loop keeps answering), then launches the
env's python with ipykernel.  A failure becomes :class:`KernelStartError`, whose text reaches JupyterLab's
"Error Starting Kernel" dialog and REST clients intact.  On a restart Jupyter drops that text, so there
(and wherever ``fallback_kernel`` says) a small kernel starts instead that shows the message in the notebook
and runs no code.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from tornado.web import HTTPError

from . import pipeline
from .errors import SpecError, UvkernelError
from .settings import UvKernelSettings, validate_config


class PlainText(str):
    """A str whose repr is itself: jupyter_server shows ``repr(str(error))`` on a kernel change."""

    def __repr__(self) -> str:
        return str.__str__(self)


class KernelStartError(HTTPError):
    """A start failure as jupyter_server wants it: its message is shown, not replaced by 'Unhandled error'."""

    def __init__(self, error: UvkernelError) -> None:
        self.error = error
        # no positional args: tornado never %-formats the message (tornado 6.6 made log_message read-only)
        super().__init__(500, str(error), reason="uvkernel: kernel not started")

    def __str__(self) -> PlainText:  # type: ignore[override]
        return PlainText(str(self.error))

    def __repr__(self) -> str:
        return str(self.error)


_BASE_KEYS = {"kernel_id", "kernel_spec", "parent", "config", "log"} | set(LocalProvisioner.class_traits())


def _spec_path(spec: Any) -> str:
    folder = getattr(spec, "resource_dir", "")
    return os.path.join(folder, "kernel.json") if folder else "the kernel spec"


class UvKernelProvisioner(UvKernelSettings, LocalProvisioner):  # type: ignore[misc]
    """Starts ipykernel from the notebook project's uv env, which inherits the host's site-packages."""

    def __init__(self, **kwargs: Any) -> None:
        # jupyter_client passes kernel_id, kernel_spec and parent, then the spec's config as keywords;
        # it only warns about unknown keys, uvkernel refuses them at start with a clear message.
        base = {k: kwargs.pop(k) for k in list(kwargs) if k in _BASE_KEYS}
        config_error: UvkernelError | None = None
        try:
            validate_config(kwargs, spec=_spec_path(base.get("kernel_spec")))
        except SpecError as exc:
            config_error = exc
            kwargs = {}
        super().__init__(**base, **kwargs)
        self._config_error = config_error
        self._restarting = False
        self.prepared: pipeline.Prepared | None = None
        self.last_error: UvkernelError | None = None

    async def cleanup(self, restart: bool = False) -> None:
        self._restarting = restart
        await super().cleanup(restart=restart)

    def _log(self, message: str) -> None:
        self.log.info("uvkernel: %s", message)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        restarting, self._restarting = self._restarting, False
        incoming_env = dict(kwargs.get("env") or os.environ)
        cwd = kwargs.get("cwd")
        error: UvkernelError | None = self._config_error
        if error is None:
            try:
                self.prepared = await pipeline.prepare(self, cwd=cwd, environ=incoming_env, log=self._log)
            except UvkernelError as exc:
                error = exc
        self.last_error = error
        if error is not None:
            self.log.error("uvkernel: kernel not started:\n%s", error)
            if not (self.fallback_kernel == "always" or (restarting and self.fallback_kernel == "restart")):
                raise KernelStartError(error)
        kwargs = await super().pre_launch(**kwargs)
        connection_file = self.parent.connection_file if self.parent else ""
        if error is not None:
            kwargs["cmd"], kwargs["env"] = self._fallback(error, connection_file, kwargs["env"])
            return kwargs
        assert self.prepared is not None
        kwargs["cmd"] = self.prepared.command(connection_file)
        env = dict(kwargs["env"])  # a copy: the saved launch kwargs stay as they came
        env.update(self.prepared.kernel_env)
        kwargs["env"] = env
        if cwd is None:
            kwargs["cwd"] = str(self.prepared.project.notebook_dir)
        return kwargs

    def _fallback(self, error: UvkernelError, connection_file: str,
                  env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """A kernel in the server's interpreter that only shows the error (never runs user code)."""
        fd, path = tempfile.mkstemp(prefix="uvkernel-error-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump({"message": str(error), "code": error.code}, fh)
        env = dict(env)
        env["UVKERNEL_ERROR_FILE"] = path
        return [sys.executable, "-m", "uvkernel.fallback_kernel", "-f", connection_file], env
