"""The Jupyter Server extension: registers the kernel start's event schema when the server starts, and loads the
kernel provisioner's code then.

A client subscribed to ``/api/events/subscribe`` hears only the schemas registered before it subscribed, so the
schema is registered here, before JupyterLab's page opens its event stream, not at the first kernel start.
The provisioner's modules (uvkernel's pipeline, packaging, platformdirs, filelock) take 0.2-0.4 s to import, and
jupyter_client imports a provisioner on the server's event loop at the first kernel start that names it: the
server stopped answering for that long (over 1 s on a loaded machine).  Imported here, while the server starts
and before it serves anything, that cost is paid once where nobody waits on the loop.
Enabled by the config file the distribution installs (``jupyter_server_config.d/jupyter-uvkernel.json``).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from jupyter_client import localinterfaces
from jupyter_client.provisioning import KernelProvisionerFactory

from . import start_events


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "uvkernel.server_extension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    if start_events.register(getattr(serverapp, "event_logger", None)):
        serverapp.log.debug("uvkernel: kernel start events registered (%s)", start_events.SCHEMA_ID)
    t0 = time.monotonic()
    importlib.import_module("uvkernel.provisioner")  # see the module's note: not on the loop at the first start
    # jupyter_client's provisioner registry reads every installed distribution's entry points when it is first
    # used (20-50 ms, at the first start, on the loop); made now, with the parent jupyter_client gives it
    # Likewise the local interfaces a kernel's connection file names (their lookup imports psutil): 20-80 ms
    try:
        KernelProvisionerFactory.instance(parent=serverapp.kernel_manager)
        localinterfaces.localhost()
    except Exception as exc:  # noqa: BLE001 - only an early start of what the first kernel start does anyway
        serverapp.log.debug("uvkernel: kernel provisioner registry not made early: %s", exc)
    serverapp.log.debug("uvkernel: kernel provisioner loaded in %.2f s", time.monotonic() - t0)
