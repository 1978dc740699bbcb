"""A kernel that only shows why the uvkernel kernel could not start, and refuses to run code.

Started by the provisioner where Jupyter would otherwise lose the error text (a restart, an automatic
restart after a crash).  It runs in the server's interpreter but never executes user code there: every
cell answers with the error, and a console shows it as its banner.  ipykernel is imported only when the
kernel runs, so the server importing this module for the constants below stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from .errors import MESSAGES

ERROR_FILE_VAR = "UVKERNEL_ERROR_FILE"  # a JSON file {"message", "code"} written by the provisioner

# The fallback runs in the server's interpreter with the notebook's folder as cwd.  ``python -m`` would put
# that folder first on sys.path, so a uvkernel/, ipykernel/ or json.py there would run in the server's
# Python; -c puts '' there instead, removed before anything is imported.  (-I would also drop PYTHONPATH
# and the user site, where the server's own packages may live.)
_BOOT = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
         "from uvkernel.fallback_kernel import main; main()")


def command(connection_file: str) -> list[str]:
    """The fallback kernel's command line (the server's interpreter, nothing from the notebook's folder)."""
    return [sys.executable, "-c", _BOOT, "-f", connection_file]


def prepare(error: Any, connection_file: str, env: dict[str, str]) -> tuple[list[str], dict[str, str], str]:
    """(command, environment, error file) for a fallback kernel that shows ``error``.

    The message travels in a private temporary file (not argv or the environment: it can be long).
    """
    fd, path = tempfile.mkstemp(prefix="uvkernel-error-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump({"message": str(error), "code": getattr(error, "code", "")}, fh)
    env = dict(env)
    env[ERROR_FILE_VAR] = path
    return command(connection_file), env, path


def message() -> str:
    path = os.environ.get(ERROR_FILE_VAR, "")
    try:
        with open(path) as fh:
            return str(json.load(fh)["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # the note from cell_text still says where the reason is


def cell_text(error_message: str) -> str:
    """What every cell shows: the start error, then why nothing ran and what to do."""
    note = MESSAGES["KERNEL_NOT_STARTED"]
    head = f"{error_message}\n\n" if error_message else ""
    return f"{head}{note.summary[0].upper()}{note.summary[1:]}. {note.fix[0].upper()}{note.fix[1:]}."


def kernel_app() -> Any:
    # imported only when the fallback kernel runs: ipykernel costs every other process its start-up time
    from ipykernel.kernelapp import IPKernelApp
    from ipykernel.kernelbase import Kernel

    class UvkernelErrorKernel(Kernel):
        implementation = "uvkernel-error"
        implementation_version = "1"
        language_info = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py"}

        @property
        def banner(self) -> str:  # type: ignore[override]  # read-only here, an attribute in the base class
            return cell_text(message())

        @property
        def kernel_info(self) -> dict:
            info = dict(super().kernel_info)  # no debugger: there is no code to debug
            info["supported_features"] = [f for f in info.get("supported_features", []) if f != "debugger"]
            return info

        async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,
                             *, cell_meta=None, cell_id=None):
            error_message = message()
            text = cell_text(error_message)
            if not silent:
                self.send_response(self.iopub_socket, "stream", {"name": "stderr", "text": text})
            return {"status": "error", "execution_count": self.execution_count, "ename": "UvkernelStartError",
                    "evalue": (error_message or text).splitlines()[0], "traceback": [text]}

    class UvkernelErrorApp(IPKernelApp):
        kernel_class = UvkernelErrorKernel

    return UvkernelErrorApp


def main() -> None:
    kernel_app().launch_instance()


if __name__ == "__main__":
    main()
