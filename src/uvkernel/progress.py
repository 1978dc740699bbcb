"""A preparation's progress, worked out once and handed to whoever shows it.

A start tells its progress three ways: the lines every stage writes for the user (the ``log`` parameter), the stage
it enters (:func:`phase`), and the uv commands it runs with the lines uv writes while it runs (:func:`uv_started`).
A :class:`Reporter` turns all three into :class:`Step` values (the phase, the line a person reads, uv's counts,
the elapsed time) and hands each to its sinks: the terminal's progress display (``uvkernel sync``), the server's
log, the start events JupyterLab shows.  The phase, the counts and the time are computed here and nowhere else.

A reporter is callable with a line, so it is what every stage takes as ``log``; a stage never needs more than that.
Standard library only: the CLI imports it before its first progress line.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from contextvars import ContextVar
from typing import Callable, Iterator, NamedTuple

# what a Step is about
LINE = "line"  # a line the preparation writes for the user ("preflight: checking the host stack")
PHASE = "phase"  # a stage began ("finding the project", "preparing the env", "checking the host stack")
UV = "uv"  # a uv command began ("uv pip install: installed the project's dependencies")
UV_OUTPUT = "uv-output"  # uv wrote a line that changed the counts or the step ("building slowbuild")


class Step(NamedTuple):
    kind: str
    phase: str
    text: str  # the whole line; a one-line display cuts it
    counts: dict[str, int]  # uv's counts in this phase: resolved, prepared, installed, built, downloaded
    elapsed: float  # seconds since the reporter began


Sink = Callable[[Step], None]

# uv's lines while it works (its summary lines are printed whether or not it shows progress bars)
_COUNT = re.compile(r"^(Resolved|Prepared|Installed|Audited) (\d+) packages?\b")
_ACTIVITY = ((re.compile(r"^\s*Building (\S.*)$"), "building", "", "building"),
             (re.compile(r"^\s*Built (\S.*)$"), "installing", "built", "built"),
             (re.compile(r"^\s*Downloading (\S.*)$"), "downloading", "", "downloading"),
             (re.compile(r"^\s*Downloaded (\S.*)$"), "installing", "downloaded", "downloaded"))


def uv_words(argv: list[str]) -> str:
    """uv's subcommand as a person names it: ``pip install``, ``venv``, ``export``."""
    return " ".join(a for a in argv[1:3] if not a.startswith("-"))


def uv_phase(argv: list[str]) -> str:
    """The phase a uv command stands for, from its subcommand."""
    command = uv_words(argv)
    if command.startswith("venv"):
        return "creating the env"
    if command in ("pip compile", "lock") or command.startswith("export"):
        return "resolving"
    if command in ("pip uninstall", "remove"):
        return "removing"
    return "installing"


class Reporter:
    """One preparation's progress.  ``reporter("text")`` is a line for the user; :meth:`observing` makes the stage
    hooks and uv's commands report here too.  Each change goes to every sink as a :class:`Step`, in the thread
    that made it (a sink on an event loop hands it over itself); a sink that raises costs only its own display."""

    def __init__(self, *sinks: Sink, clock: Callable[[], float] = time.monotonic) -> None:
        self.sinks = list(sinks)
        self.clock = clock
        self.t0 = clock()
        self.phase_name = "finding the project"
        self.text = "starting"
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()  # a line from a worker thread and uv's lines on the loop

    @property
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def __call__(self, text: str) -> None:
        self._tell(LINE, text=text)

    def phase(self, name: str) -> None:
        self._tell(PHASE, phase=name, text=name, counts={})

    def uv(self, argv: list[str], step: str) -> None:
        self._tell(UV, phase=uv_phase(argv), text=f"uv {uv_words(argv)}: {step}", counts={})

    def uv_output(self, line: str) -> None:
        match = _COUNT.match(line)
        if match:
            what, n = match.group(1).lower(), int(match.group(2))
            if what == "audited":  # nothing to install: everything is there already
                what = "installed"
            with self._lock:
                phase = "installing" if what == "resolved" and self.phase_name in ("building", "downloading") \
                    else self.phase_name
                counts = {**self.counts, what: n}
            self._tell(UV_OUTPUT, phase=phase, text=f"{what} {n} package{'s' if n != 1 else ''}", counts=counts)
            return
        for pattern, phase, key, verb in _ACTIVITY:
            match = pattern.match(line)
            if match:
                with self._lock:
                    counts = {**self.counts, key: self.counts.get(key, 0) + 1} if key else dict(self.counts)
                self._tell(UV_OUTPUT, phase=phase, text=f"{verb} {match.group(1).strip()}", counts=counts)
                return

    def _tell(self, kind: str, *, text: str, phase: str | None = None, counts: dict[str, int] | None = None) -> None:
        with self._lock:
            if phase is not None:
                self.phase_name = phase
            if counts is not None:
                self.counts = counts
            self.text = text
            step = Step(kind, self.phase_name, text, dict(self.counts), self.elapsed)
        for sink in self.sinks:
            try:
                sink(step)
            except Exception:  # noqa: BLE001, S110 - a display that fails never fails the preparation
                pass

    @contextlib.contextmanager
    def observing(self) -> Iterator["Reporter"]:
        """Hear the pipeline's phases and uv's commands and lines while the preparation runs in this context."""
        token = CURRENT.set(self)
        try:
            yield self
        finally:
            CURRENT.reset(token)


# The reporter of the preparation running in this context (set by Reporter.observing): the stages tell it their
# phases and uv's commands without passing it down through every call.
CURRENT: "ContextVar[Reporter | None]" = ContextVar("uvkernel_progress", default=None)


def phase(name: str) -> None:
    """The preparation enters a stage: progress displays name it without reading it out of the lines' wording."""
    reporter = CURRENT.get()
    if reporter is not None:
        reporter.phase(name)


def uv_started(argv: list[str], step: str) -> Callable[[str], None] | None:
    """A uv command begins; returns what hears each line uv writes, or None when nobody listens."""
    reporter = CURRENT.get()
    if reporter is None:
        return None
    reporter.uv(argv, step)
    return reporter.uv_output
