"""A preparation's progress (uvkernel.progress): one reporter works out the phase, uv's counts from the lines real uv
writes, and the elapsed time once; the terminal's display and any other sink get the same steps."""

from __future__ import annotations

import asyncio
import io
import sys

from index_support import make_wheel
from uvkernel import progress, terminal
from uvkernel.uvbin import run_uv


def test_one_reporter_tells_the_terminal_and_another_sink_the_same_steps_from_real_uv(tmp_path, uv_bin):
    wheels = [make_wheel(tmp_path / "wheels", f"uvk-progress-{i}", "1.0") for i in range(3)]
    stream = io.StringIO()
    shown = terminal.Progress(stream, enabled=True)  # not live: no status line, the printed lines only
    seen: list[progress.Step] = []
    shown.log.add(seen.append)
    env = tmp_path / "env"

    async def prepare(log) -> None:  # a stage: it knows `log` and the stage hooks only
        progress.phase("preparing the env")
        log("making the env")
        await run_uv([uv_bin, "venv", "--python", sys.executable, str(env)], step="created the env", timeout=120)
        await run_uv([uv_bin, "pip", "install", "--python", str(env / "bin" / "python"), "--offline",
                      *map(str, wheels)], step="installed three wheels", timeout=120)

    with shown.log.observing():
        asyncio.run(prepare(shown.log))
    assert progress.CURRENT.get() is None  # observing ends with its context

    kinds = [s.kind for s in seen]
    assert kinds[:3] == [progress.PHASE, progress.LINE, progress.UV], seen
    assert [s.phase for s in seen if s.kind == progress.UV] == ["creating the env", "installing"]
    last = seen[-1]
    # uv's own lines, as it wrote them: "Resolved 3 packages", "Installed 3 packages"
    assert last.kind == progress.UV_OUTPUT and last.counts.get("resolved") == 3 and last.counts["installed"] == 3
    assert last.text == "installed 3 packages"
    # a new command starts its counts afresh
    install = kinds.index(progress.UV, 3)
    assert seen[install].counts == {} and all(not s.counts for s in seen[:install] if s.kind != progress.UV_OUTPUT)
    elapsed = [s.elapsed for s in seen]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0

    # the terminal printed the lines and the commands, with the reporter's times, and not uv's counts
    printed = stream.getvalue().splitlines()
    told = [s for s in seen if s.kind in (progress.LINE, progress.UV)]
    assert printed == [f"[{s.elapsed:6.1f} s] {s.text}" for s in told]
    assert "uv pip install: installed three wheels" in printed[-1]


def test_a_sink_that_fails_costs_only_its_own_display():
    seen: list[progress.Step] = []

    def broken(_step: progress.Step) -> None:
        raise OSError("the display is gone")

    reporter = progress.Reporter(broken, seen.append)
    reporter("a line")
    reporter.uv_output("Resolved 12 packages in 3ms")
    reporter.uv_output("nothing uv counts")
    assert [s.text for s in seen] == ["a line", "resolved 12 packages"] and seen[-1].counts == {"resolved": 12}
    # outside observing(), the stage hooks reach nobody and a uv command gets no line listener
    progress.phase("checking the host stack")
    assert progress.uv_started(["uv", "venv"], "created the env") is None
    assert len(seen) == 2
