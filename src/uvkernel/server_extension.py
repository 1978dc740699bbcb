"""The Jupyter Server extension: registers the kernel start's event schema when the server starts.

A client subscribed to ``/api/events/subscribe`` hears only the schemas registered before it subscribed, so the
schema is registered here, before JupyterLab's page opens its event stream, not at the first kernel start.
Enabled by the config file the distribution installs (``jupyter_server_config.d/jupyter-uvkernel.json``).
"""

from __future__ import annotations

from typing import Any

from . import start_events


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "uvkernel.server_extension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    if start_events.register(getattr(serverapp, "event_logger", None)):
        serverapp.log.debug("uvkernel: kernel start events registered (%s)", start_events.SCHEMA_ID)
