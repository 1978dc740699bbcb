"""A kernel that only shows why the uvkernel kernel could not start, and refuses to run code.

Started by the provisioner where Jupyter would otherwise lose the error text (a restart).  It runs in the
server's interpreter but never executes user code there: every cell answers with the error.
"""

from __future__ import annotations

import json
import os

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel


def _message() -> str:
    path = os.environ.get("UVKERNEL_ERROR_FILE", "")
    try:
        with open(path) as fh:
            return json.load(fh)["message"]
    except (OSError, ValueError, KeyError):
        return "uvkernel: the kernel could not be started (the reason was not recorded; see the server log)"


class UvkernelErrorKernel(Kernel):
    implementation = "uvkernel-error"
    implementation_version = "1"
    language_info = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py"}
    banner = "uvkernel could not start the kernel; this placeholder shows why and runs no code."

    async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,
                         *, cell_meta=None, cell_id=None):
        message = _message()
        text = message + "\n\nThis cell was not run. Fix the problem above, then restart the kernel."
        if not silent:
            self.send_response(self.iopub_socket, "stream", {"name": "stderr", "text": text})
        return {"status": "error", "execution_count": self.execution_count, "ename": "UvkernelStartError",
                "evalue": message.splitlines()[0] if message else "", "traceback": [text]}


class UvkernelErrorApp(IPKernelApp):
    kernel_class = UvkernelErrorKernel  # type: ignore[assignment]


def main() -> None:
    UvkernelErrorApp.launch_instance()


if __name__ == "__main__":
    main()
