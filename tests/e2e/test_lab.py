"""JupyterLab in headless Chromium (Debian's chromium driven by Playwright): what a user sees.

One ``jupyter lab`` and one browser serve the module; every test opens its own page with a fresh
workspace (``?reset``) and leaves a screenshot in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from e2e.support import (TOASTS, assert_readable, chromium, install_kernel_spec, keep_log, quiet_lab_settings,
                         server_environment, start_server, watch_start_progress, write_notebook)
from helpers import make_project
from index_support import slow_sdist

# one worker runs the whole module (pytest -n with --dist loadgroup): its server is started once
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-lab")]

DISPLAY = "Python (uvkernel e2e)"
TIMEOUT_MS = 120_000
LOOP = "import time\nprint('looping', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, host_python):
    base = tmp_path_factory.mktemp("lab")
    env = server_environment(base / "home", host_python)
    install_kernel_spec(env, "uvk", host_python, display_name=DISPLAY)
    # no "get notified about news?" toast over the screenshots; workspaces in a folder of our own
    quiet_lab_settings(base / "lab-settings", env)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(base / "workspaces")
    root = base / "root"
    root.mkdir()
    server = start_server(root, env, app="lab", log_path=base / "lab.log")
    yield server
    server.stop()
    keep_log(server.log_path, "jupyter-lab.log")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = chromium(p)  # a fresh profile each launch
        yield b
        b.close()


class Lab:
    """One browser page on the lab server, with the few UI actions the tests need."""

    def __init__(self, server, browser, screenshots: Path):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.screenshots = screenshots

    def open(self, path: str = "") -> None:
        where = f"/lab/tree/{quote(path)}" if path else "/lab"
        self.page.goto(f"{self.server.url}{where}?reset&token={self.server.token}")
        self.page.wait_for_selector(".jp-Notebook" if path else ".jp-LauncherCard")

    def wait_kernel(self, display: str = DISPLAY, status: str = "idle") -> None:
        """Until the notebook's toolbar names ``display`` and its execution indicator says ``status``."""
        self.page.wait_for_function(
            """([display, status]) => {
                const panel = '.jp-NotebookPanel:not(.lm-mod-hidden) ';
                const name = document.querySelector(panel + '.jp-Toolbar-kernelName');
                const ind = document.querySelector(panel + '.jp-Notebook-ExecutionIndicator');
                return name && ind && name.textContent.trim() === display && ind.dataset.status === status;
            }""", arg=[display, status])

    def menu(self, top: str, item: str) -> None:
        self.page.get_by_role("menuitem", name=top, exact=True).click()
        self.page.locator(".lm-Menu-item:visible", has_text=re.compile("^" + re.escape(item))).first.click()

    def outputs(self) -> list[str]:
        return [o.inner_text() for o in self.page.locator(".jp-OutputArea-output").all()]

    def wait_output(self, pattern: str) -> str:
        self.page.wait_for_function(
            "(p) => [...document.querySelectorAll('.jp-OutputArea-output')].some(o => new RegExp(p).test(o.innerText))",
            arg=pattern)
        return next(o for o in self.outputs() if re.search(pattern, o))

    def dialog(self, title: str):
        dialog = self.page.locator(".jp-Dialog", has=self.page.locator(".jp-Dialog-header", has_text=title))
        dialog.wait_for()
        return dialog

    def restart(self) -> None:
        self.menu("Kernel", "Restart Kernel")
        self.dialog("Restart Kernel").locator("button.jp-mod-accept").click()

    def run_cell(self, index: int) -> None:
        cell = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index)
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")

    def shot(self, name: str) -> Path:
        path = self.screenshots / f"lab-{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(lab, browser, screenshots):
    page = Lab(lab, browser, screenshots)
    yield page
    page.close()
    for session in lab.get("/api/sessions").json():  # each test leaves no kernel behind
        lab.delete(f"/api/sessions/{session['id']}")


def test_launcher_lists_kernel_and_starts_it(ui, lab):
    ui.open()
    section = ui.page.locator(".jp-Launcher-section", has=ui.page.locator(".jp-Launcher-sectionTitle",
                                                                         has_text="Notebook"))
    card = section.locator(f".jp-LauncherCard[title='{DISPLAY}']")
    card.wait_for()
    ui.shot("launcher")
    card.click()  # a new notebook in the server's root (not a project: the env goes to the user's cache)
    ui.page.wait_for_selector(".jp-Notebook")
    ui.wait_kernel()
    cache = Path(lab.env["XDG_CACHE_HOME"]) / "uvkernel" / "envs"
    assert [p.name for p in cache.iterdir() if (p / "pyvenv.cfg").exists()], "no env in the per-user cache"


def test_notebook_in_project_prints_host_torch_and_report(ui, lab, host_torch_file):
    project = make_project(lab.root / "Projekt ü" / "analysis", name="projekt")
    write_notebook(project / "notebooks" / "demo.ipynb", "import torch\nprint(torch.__file__)", "%uvkernel",
                   kernel="uvk", display_name=DISPLAY)
    ui.open("Projekt ü/analysis/notebooks/demo.ipynb")
    ui.wait_kernel()
    ui.menu("Run", "Run All Cells")
    torch_out = ui.wait_output(re.escape(host_torch_file))
    assert torch_out.strip() == host_torch_file
    report = ui.wait_output("uvkernel .* report")
    assert str(project / ".venv") in report
    assert host_torch_file.rsplit("/", 1)[0] in report
    ui.page.locator(".uvkernel-report").first.scroll_into_view_if_needed()
    ui.shot("notebook-torch-and-report")


def _notification(ui, text: str):
    """The extension's notification holding ``text``: as a toast, or, where Lab has already stacked other toasts
    away (a busy run of many starts), in Lab's notification center, where a user finds it too."""
    toast = ui.page.locator(".Toastify__toast", has_text=text)
    for _ in range(60):
        if toast.count():
            return toast.first
        ui.page.wait_for_timeout(500)
    ui.page.locator(".jp-Notification-Status").first.click()
    item = ui.page.locator(".jp-Notification-List-Item", has_text=text)
    item.first.wait_for(timeout=60000)
    return item.first


def test_error_starting_kernel_dialog(ui, lab):
    bad = make_project(lab.root / "broken project", requires_python=">=3.99")
    write_notebook(bad / "nb.ipynb", "print('never')", kernel="uvk", display_name=DISPLAY)
    ui.open("broken project/nb.ipynb")
    dialog = ui.dialog("Error Starting Kernel")
    body = dialog.locator(".jp-Dialog-body")
    text = body.inner_text()
    ui.shot("error-starting-kernel")
    assert_readable(text, "REQUIRES_PYTHON_EXCLUDES_HOST", ">=3.99", str(bad / "pyproject.toml"))
    # readable without scrolling sideways
    assert body.evaluate("b => b.scrollWidth <= b.clientWidth + 1"), "the dialog needs horizontal scrolling"
    # the extension's notification names the same error, and opens its whole text with the fix
    for _ in range(5):  # the error dialog, then Lab's kernel picker: closed as a user would
        if not ui.page.locator(".jp-Dialog").count():
            break
        ui.page.keyboard.press("Escape")
        ui.page.wait_for_timeout(300)
    toast = _notification(ui, "[REQUIRES_PYTHON_EXCLUDES_HOST]")
    # the toast shows the message whole; the notification center (where a busy run may have stacked it) cuts it
    # at a fixed length, which a long temporary path can push the Python range past: then it ends in an ellipsis,
    # and "Show the fix" below must still give the whole text
    shown = toast.inner_text()
    assert "requires Python >" in shown or "…" in shown or "..." in shown, shown
    toast.get_by_role("button", name="Show the fix").click()
    fix = ui.dialog("uvkernel could not start the kernel").locator(".jp-uvkernel-error").inner_text()
    ui.shot("error-extension-fix")
    assert "[REQUIRES_PYTHON_EXCLUDES_HOST]" in fix and "How to fix:" in fix and str(bad / "pyproject.toml") in fix


def test_kernel_picker_and_kernel_change_error(ui, lab):
    """The kernel picker lists the spec by display name; switching a notebook of a broken project to it
    shows our message (PATCH /api/sessions)."""
    bad = make_project(lab.root / "switch-bad", requires_python=">=3.99")
    write_notebook(bad / "switch.ipynb", "print(1)", kernel="python3", display_name="Python 3 (ipykernel)")
    ui.open("switch-bad/switch.ipynb")
    ui.wait_kernel("Python 3 (ipykernel)")
    ui.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName").click()
    picker = ui.dialog("Select Kernel")
    select = picker.locator("select")
    assert DISPLAY in [o.strip() for o in select.locator("option").all_inner_texts()]
    select.select_option(label=DISPLAY)
    ui.shot("kernel-picker")
    picker.locator("button.jp-mod-accept").click()
    body = ui.dialog("Error Starting Kernel").locator(".jp-Dialog-body")
    text = body.inner_text()
    ui.shot("kernel-change-error")
    assert text.startswith("The 'uvk' kernel could not be started: uvkernel: "), text
    assert_readable(text, "REQUIRES_PYTHON_EXCLUDES_HOST", ">=3.99", str(bad / "pyproject.toml"))
    assert body.evaluate("b => b.scrollWidth <= b.clientWidth + 1"), "the dialog needs horizontal scrolling"


def test_failed_restart_shows_fallback_message(ui, lab):
    project = make_project(lab.root / "restart-proj")
    write_notebook(project / "nb.ipynb", "import os\nprint('pid', os.getpid())", kernel="uvk", display_name=DISPLAY)
    ui.open("restart-proj/nb.ipynb")
    ui.wait_kernel()
    ui.run_cell(0)
    ui.wait_output(r"^pid \d+")
    make_project(project, requires_python=">=3.99", name="restart-proj")  # breaks while the kernel runs
    ui.restart()
    ui.wait_kernel()
    ui.run_cell(0)
    text = ui.wait_output("REQUIRES_PYTHON_EXCLUDES_HOST")
    ui.shot("failed-restart-fallback")
    assert "This cell was not run: the kernel could not be started." in text
    assert not any(o.startswith("pid ") for o in ui.outputs())  # the fallback ran nothing
    assert_readable(text.split("\n\nThis cell was not run")[0], "REQUIRES_PYTHON_EXCLUDES_HOST", ">=3.99",
                    width=10_000)


def test_interrupt_and_restart_reach_kernel(ui, lab):
    project = make_project(lab.root / "interrupt-proj")
    write_notebook(project / "nb.ipynb", "import os\nprint('pid', os.getpid())", LOOP, kernel="uvk",
                   display_name=DISPLAY)
    ui.open("interrupt-proj/nb.ipynb")
    ui.wait_kernel()
    ui.menu("Run", "Run All Cells")
    first_pid = ui.wait_output(r"^pid \d+").split()[1]
    ui.wait_output("looping")
    ui.wait_kernel(status="busy")
    t0 = time.monotonic()
    ui.menu("Kernel", "Interrupt Kernel")
    ui.wait_output("KeyboardInterrupt")
    assert time.monotonic() - t0 < 30
    ui.wait_kernel()
    ui.shot("interrupt")

    ui.restart()
    ui.page.wait_for_function(  # outputs stay; wait for the kernel to come back, then run the first cell
        "() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'")
    ui.wait_kernel()
    ui.run_cell(0)
    ui.page.wait_for_function(
        "(old) => [...document.querySelectorAll('.jp-OutputArea-output')].some("
        "o => /^pid \\d+/.test(o.innerText) && o.innerText.split(/\\s+/)[1] !== old)", arg=first_pid)
    ui.shot("restart")
    pids = [o.split()[1] for o in ui.outputs() if o.startswith("pid ")]
    assert pids and pids[0] != first_pid




def test_long_first_start_shows_its_progress(ui, lab):
    """A first start that builds an sdist for 20 s: the notification follows the steps and the clock, then the
    summary."""
    version = f"2.0.{uuid.uuid4().int % 10**9}"  # uv caches built wheels: a version of its own each run
    sdist = slow_sdist(lab.root / "wheels", "slowlab", version, 20)
    project = make_project(lab.root / "slow", [f"slowlab @ {sdist.as_uri()}"])
    write_notebook(project / "nb.ipynb", "import slowlab; print('built', slowlab.BUILT_SLOWLY)", kernel="uvk",
                   display_name=DISPLAY)
    ui.open("slow/nb.ipynb")
    shots: list[str] = []

    def on_step(step: str) -> None:
        if "building slowlab" in step and not shots:
            ui.page.wait_for_timeout(2500)  # the clock moves while nothing else does
            ui.shot("start-progress-building")
            shots.append(step)

    watched = watch_start_progress(ui.page, timeout=110, on_step=on_step)
    seen, clocks = watched.steps, watched.clocks
    ui.shot("start-progress-ready")
    assert watched.final, ui.page.evaluate(TOASTS)
    assert len(set(seen)) >= 3, seen
    assert any("building slowlab" in step for step in seen), seen
    assert clocks and max(clocks) - min(clocks) >= 10, clocks  # the elapsed time advanced during the build
    assert shots
    ui.wait_kernel()
    ui.run_cell(0)
    ui.wait_output("built True")
