"""A kernel start's progress as Jupyter Server events, for JupyterLab's progress display and any other client.

A first start builds the env for tens of seconds or minutes while the front end only says "Kernel starting".
The provisioner publishes what it is doing through the server's event bus (``/api/events/subscribe``; in
JupyterLab ``serviceManager.events.stream``), under :data:`SCHEMA_ID`: the phase, the step a person reads, uv's
counts as uv prints them, the elapsed time, and the end (ready with a timing summary, or the coded error).

Events go only where there is a server's event logger (the provisioner's parent is jupyter_server's
``ServerKernelManager``); nbclient, papermill and jupyter console get none.  Nothing here ever raises into a start:
a failed emit is logged at debug level and forgotten.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping

from . import progress

SCHEMA_FILE = Path(__file__).parent / "resources" / "kernel-start-event.json"
SCHEMA_ID = "https://jupyter-uvkernel.invalid/events/kernel-start/v1"
MIN_INTERVAL = 0.25  # seconds between two progress events of one start: a few a second, whatever uv prints
STEP_WIDTH = 240  # a step is one line in a toast or a status bar; a long log line (a list of pins) is cut

_log = logging.getLogger("uvkernel")


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def register(event_logger: Any) -> bool:
    """Register the schema with ``event_logger`` once; False when it is no jupyter_events logger.

    The server extension does it at server start: a subscriber only hears the schemas registered before it
    subscribed (jupyter_events adds a listener to each known schema).  A start registers it too, for servers
    where the extension is disabled; clients that subscribe after that start hear the later ones."""
    schemas = getattr(event_logger, "schemas", None)
    if schemas is None or not hasattr(event_logger, "register_event_schema"):
        return False
    try:
        if SCHEMA_ID not in schemas:
            event_logger.register_event_schema(schema())
    except Exception as exc:  # noqa: BLE001 - a registry that refuses it costs the events, never the start
        _log.debug("uvkernel: could not register the start event schema: %s", exc)
        return False
    return True


def notebook_path(environ: Mapping[str, str], root_dir: str | None) -> str:
    """The notebook of this start relative to the server's root, as the front end names it.

    jupyter_server puts the session's path in JPY_SESSION_NAME: the API path, or the absolute file path
    (the kernel's folder joined with the notebook's name) when the client gave a name."""
    name = environ.get("JPY_SESSION_NAME") or ""
    if not name or not os.path.isabs(name):
        return name.lstrip("/")
    if root_dir:
        root = os.path.realpath(os.path.expanduser(root_dir))
        full = os.path.realpath(name)
        if full == root or full.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.relpath(full, root).replace(os.sep, "/")
    return name


class StartProgress:
    """One start's progress, published as events: a sink of the start's :class:`progress.Reporter`, which works out
    the phase, uv's counts and the elapsed time.  Every hook is cheap and runs on the server's loop."""

    def __init__(self, event_logger: Any, reporter: progress.Reporter, *, kernel_id: str, kernel_name: str,
                 path: str) -> None:
        self.event_logger = event_logger
        self.base = {"kernel_id": kernel_id or "", "kernel_name": kernel_name or "", "path": path or ""}
        self.reporter = reporter
        self.clock = reporter.clock
        self.phase = reporter.phase_name
        self.step = reporter.text
        self.counts: dict[str, int] = {}
        self.last_sent = float("-inf")
        self.pending: asyncio.TimerHandle | None = None
        self.finished = False
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.thread = threading.get_ident()
        reporter.add(self.show)

    @property
    def elapsed(self) -> float:
        return self.reporter.elapsed

    # --- what the start tells ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._emit("start")

    def show(self, step: progress.Step) -> None:  # the reporter's sink
        if step.kind in (progress.PHASE, progress.UV):
            # a change held back by the rate limit goes out before a new phase or command clears the counts it
            # carries (uv's "Installed N packages" comes just before the next command starts)
            self._flush()
        self.phase, self.counts = step.phase, step.counts
        if step.text:
            self.step = step.text.splitlines()[0][:STEP_WIDTH]
        if step.kind == progress.PHASE:
            self._emit("progress")
        else:
            self._changed()

    def ready(self, timings: Mapping[str, float], actions: list[str]) -> None:
        parts = [f"{label} {timings[key]:.1f} s" for key, label in
                 (("find", "project"), ("env", "env"), ("preflight", "host check")) if key in timings]
        summary = f"env ready in {self.elapsed:.1f} s ({', '.join(parts)})"
        if actions:
            summary += "; " + "; ".join(actions)
        self.phase, self.step = "ready", "starting the kernel"
        self._emit("ready", summary=summary[:2000])

    def failed(self, error: Any) -> None:
        self.phase = "failed"
        self.step = str(getattr(error, "summary", "") or error).splitlines()[0][:STEP_WIDTH]
        self._emit("error", code=str(getattr(error, "code", "")), message=str(error)[:20000],
                   fix=str(getattr(error, "fix", "")))

    # --- publishing ----------------------------------------------------------------------------------------------
    def _changed(self) -> None:
        """A progress event now, or MIN_INTERVAL after the last one with the state as it is then."""
        if self.finished:
            return
        wait = self.last_sent + MIN_INTERVAL - self.clock()
        if wait <= 0:
            self._emit("progress")
        elif self.pending is None and self.loop is not None:
            self._later(wait)

    def _flush(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
            self._emit("progress")

    def _later(self, wait: float) -> None:
        assert self.loop is not None

        def fire() -> None:
            self.pending = None
            if not self.finished:
                self._emit("progress")

        if threading.get_ident() == self.thread:
            self.pending = self.loop.call_later(wait, fire)
        else:  # a log line from a worker thread: the loop schedules it
            self.loop.call_soon_threadsafe(self._changed)

    def _emit(self, state: str, **extra: Any) -> None:
        if self.finished:
            return
        if state in ("ready", "error"):
            self.finished = True
            if self.pending is not None:
                self.pending.cancel()
                self.pending = None
        if threading.get_ident() != self.thread and self.loop is not None:
            self.loop.call_soon_threadsafe(self._send, state, extra)
            return
        self._send(state, extra)

    def _send(self, state: str, extra: dict[str, Any]) -> None:
        self.last_sent = self.clock()
        data = {**self.base, "state": state, "phase": self.phase, "step": self.step,
                "elapsed": round(self.elapsed, 2), "counts": dict(self.counts), **extra}
        try:
            self.event_logger.emit(schema_id=SCHEMA_ID, data=data)
        except Exception as exc:  # noqa: BLE001 - progress never costs a start
            _log.debug("uvkernel: start event not published: %s", exc)


def for_provisioner(provisioner: Any, environ: Mapping[str, str], reporter: progress.Reporter) -> StartProgress | None:
    """The events of the start ``provisioner`` is about to make, told by ``reporter``; None outside a Jupyter
    server."""
    parent = getattr(provisioner, "parent", None)
    event_logger = getattr(parent, "event_logger", None) if parent is not None else None
    if event_logger is None or not register(event_logger):
        return None
    manager = getattr(parent, "parent", None)
    root = getattr(manager, "root_dir", None)
    return StartProgress(event_logger, reporter, kernel_id=getattr(provisioner, "kernel_id", "") or "",
                         kernel_name=getattr(parent, "kernel_name", "") or "",
                         path=notebook_path(environ, root if isinstance(root, str) else None))
