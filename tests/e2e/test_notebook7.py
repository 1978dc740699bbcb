"""Notebook 7 (``jupyter notebook``) in headless Chromium: the extension's start progress in its UI too.

Notebook 7 is built from JupyterLab's components and loads the same prebuilt extension; these tests open a
notebook in its single-document UI and read what a user sees: the progress notification during a slow first
start, the summary at the end, the kernel answering; and a refused start's notification with its fix.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from e2e.support import (TOASTS, chromium, install_kernel_spec, keep_log, quiet_lab_settings, server_environment,
                         start_server, watch_start_progress, write_notebook)
from helpers import make_project
from index_support import slow_sdist

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-notebook7")]

DISPLAY = "Python (uvkernel nb7)"
TIMEOUT_MS = 120_000
BUILD_SECONDS = 20


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory, host_python):
    try:
        import notebook  # noqa: F401
    except ImportError:
        pytest.fail("the notebook package (Notebook 7) is missing: run scripts/setup.sh", pytrace=False)
    base = tmp_path_factory.mktemp("nb7")
    env = server_environment(base / "home", host_python)
    install_kernel_spec(env, "uvk", host_python, display_name=DISPLAY)
    quiet_lab_settings(base / "settings", env)
    root = base / "root"
    root.mkdir()
    server = start_server(root, env, app="notebook", log_path=base / "notebook.log")
    yield server
    server.stop()
    keep_log(server.log_path, "jupyter-notebook7.log")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = chromium(p)  # a fresh profile each launch
        yield b
        b.close()


@pytest.fixture
def page(notebook7, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()
    for session in notebook7.get("/api/sessions").json():  # each test leaves no kernel behind
        notebook7.delete(f"/api/sessions/{session['id']}")


def _open(page, server, path: str) -> None:
    page.goto(f"{server.url}/notebooks/{quote(path)}?token={server.token}")
    page.wait_for_selector(".jp-Notebook")
    # Notebook 7's own single-document page, not JupyterLab's
    assert page.evaluate("() => document.body.dataset.notebook") == "notebooks", page.url


def _wait_kernel_idle(page) -> None:
    """Until the kernel named DISPLAY is idle (Notebook 7's toolbar shows the name and the execution indicator)."""
    page.wait_for_function(
        """(display) => {
            const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
            const ind = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
            return name && ind && name.textContent.trim() === display && ind.dataset.status === 'idle';
        }""", arg=DISPLAY)


def _shot(page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"notebook7-{name}.png"))


def test_long_first_start_shows_its_progress_in_notebook7(page, notebook7, screenshots):
    version = f"3.0.{uuid.uuid4().int % 10**9}"  # uv caches built wheels: a version of its own each run
    sdist = slow_sdist(notebook7.root / "wheels", "slownb7", version, BUILD_SECONDS)
    project = make_project(notebook7.root / "slow", [f"slownb7 @ {sdist.as_uri()}"])
    write_notebook(project / "nb.ipynb", "import slownb7; print('built', slownb7.BUILT_SLOWLY)", kernel="uvk",
                   display_name=DISPLAY)
    _open(page, notebook7, "slow/nb.ipynb")
    shots: list[str] = []

    def on_step(step: str) -> None:
        if "building slownb7" in step and not shots:
            page.wait_for_timeout(2500)  # the clock moves while nothing else does
            _shot(page, screenshots, "start-progress-building")
            shots.append(step)

    watched = watch_start_progress(page, on_step=on_step)
    seen, clocks, final = watched.steps, watched.clocks, watched.final
    _shot(page, screenshots, "start-progress-ready")
    assert final, (seen, page.evaluate(TOASTS))
    assert "installed slownb7" in final[0], final
    assert len(set(seen)) >= 3, seen
    assert any("building slownb7" in step for step in seen), seen
    assert clocks and max(clocks) - min(clocks) >= 10, clocks  # the clock advanced during the build
    assert shots
    _wait_kernel_idle(page)
    page.locator(".jp-Cell").first.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                           ".some(o => o.innerText.includes('built True'))")
    _shot(page, screenshots, "kernel-ran")


def test_failed_start_shows_the_error_and_its_fix_in_notebook7(page, notebook7, screenshots):
    """A start that fails after a while (a build that breaks): the progress notification turns into the coded
    error, whose button opens the whole message with its fix."""
    version = f"3.1.{uuid.uuid4().int % 10**9}"
    sdist = slow_sdist(notebook7.root / "wheels", "brokennb7", version, 6, fail="brokennb7 cannot be built here")
    project = make_project(notebook7.root / "broken", [f"brokennb7 @ {sdist.as_uri()}"])
    write_notebook(project / "nb.ipynb", "print('never')", kernel="uvk", display_name=DISPLAY)
    _open(page, notebook7, "broken/nb.ipynb")
    progress = page.locator(".Toastify__toast", has_text="building brokennb7")
    progress.first.wait_for()
    toast = page.locator(".Toastify__toast", has_text="[BUILD_FAILED]")
    toast.first.wait_for()
    dialog = page.locator(".jp-Dialog", has=page.locator(".jp-Dialog-header", has_text="Error Starting Kernel"))
    dialog.wait_for()  # Notebook's own dialog, then closed as a user would
    _shot(page, screenshots, "error-dialog")
    for _ in range(5):
        if not page.locator(".jp-Dialog").count():
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert "brokennb7" in toast.first.inner_text()
    _shot(page, screenshots, "error-notification")
    toast.first.get_by_role("button", name="Show the fix").click()
    fix_dialog = page.locator(".jp-Dialog", has=page.locator(".jp-Dialog-header",
                                                             has_text="uvkernel could not start the kernel"))
    fix = fix_dialog.locator(".jp-uvkernel-error").inner_text()
    _shot(page, screenshots, "error-fix")
    assert "[BUILD_FAILED]" in fix and "How to fix:" in fix and "brokennb7 cannot be built here" in fix, fix


def test_a_start_refused_at_once_still_shows_its_notification_in_notebook7(page, notebook7, screenshots):
    """Notebook 7 opens the notebook's page and asks for its kernel at once: a start refused in a few
    milliseconds (a pyproject.toml that is not TOML) still reaches the extension, which has subscribed to the
    server's events by then, and shows the coded error with its fix, once."""
    project = notebook7.root / "refused"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project\nname = "refused"\n')
    write_notebook(project / "nb.ipynb", "print('never')", kernel="uvk", display_name=DISPLAY)
    _open(page, notebook7, "refused/nb.ipynb")
    toast = page.locator(".Toastify__toast", has_text="[PYPROJECT_INVALID]")
    toast.first.wait_for(timeout=30_000)
    _shot(page, screenshots, "refused-at-once")
    for _ in range(5):  # Notebook's own dialog, closed as a user would
        if not page.locator(".jp-Dialog").count():
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    toast.first.get_by_role("button", name="Show the fix").click()
    fix = page.locator(".jp-uvkernel-error").inner_text()
    assert "[PYPROJECT_INVALID]" in fix and "How to fix:" in fix, fix
    assert page.locator(".Toastify__toast", has_text="[PYPROJECT_INVALID]").count() == 1, page.evaluate(TOASTS)


def test_a_kernel_start_whose_answer_was_lost_is_connected_once_ready(page, notebook7, screenshots):
    """A proxy in front of the server gives up on a long first start (nginx answers 504 after 60 s) while the
    server goes on and starts the kernel: the page has no kernel, and a reload was the only way to it.  Here the
    browser's first POST /api/sessions reaches the server, which makes the whole start, but the page gets a 504
    in place of its answer.  The extension connects the notebook to the kernel the server started."""
    project = make_project(notebook7.root / "lost", ["tomli-w"])
    write_notebook(project / "nb.ipynb", "import tomli_w, sys; print('prefix', sys.prefix)", kernel="uvk",
                   display_name=DISPLAY)
    lost: list[int] = []

    def lose_the_first_answer(route) -> None:
        if route.request.method != "POST" or lost:
            route.continue_()
            return
        real = route.fetch(timeout=TIMEOUT_MS)  # the server makes the whole start
        lost.append(real.status)
        route.fulfill(status=504, content_type="text/html",
                      body="<html><head><title>504 Gateway Time-out</title></head></html>")

    page.route("**/api/sessions*", lose_the_first_answer)
    _open(page, notebook7, "lost/nb.ipynb")
    page.locator(".Toastify__toast", has_text="connected to the kernel the server started").first.wait_for()
    assert lost == [201], lost
    for _ in range(5):  # the dialog Notebook showed for the 504, closed as a user would
        if not page.locator(".jp-Dialog").count():
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    _wait_kernel_idle(page)
    _shot(page, screenshots, "lost-answer-reconnected")
    # one kernel: the one the lost start made (the lost answer's session stays listed until that kernel ends)
    kernels = notebook7.get("/api/kernels").json()
    assert len(kernels) == 1, kernels
    assert {s["kernel"]["id"] for s in notebook7.get("/api/sessions").json()} == {kernels[0]["id"]}
    page.locator(".jp-Cell").first.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("(prefix) => [...document.querySelectorAll('.jp-OutputArea-output')]"
                           ".some(o => o.innerText.includes('prefix ' + prefix))", arg=str(project / ".venv"))
