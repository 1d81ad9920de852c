"""The widgets in a real browser: JupyterLab and Notebook 7 render them, the console takes
typing; the screenshot in docs/widgets.md is made here.

Uses the machine's Chromium through Playwright (as tests/ui does); skipped without them.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets

import pytest
from kernel_support import DEMO_DELAY, wait_until

from tests.conftest import PLAIN_BASH
from tests.ui.lab import CHROMIUM, CHROMIUM_ARGS, Lab, isolated_env

REPO = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "widgets.png"  # refreshed with MAS_UPDATE_DOCS=1
ARTIFACTS = REPO / "test-artifacts"
CELL = """\
import mas_jupyter as mas
from mas_jupyter.kernel.widgets import ActivityBadge, SessionList, WorkerConsole

panel = SessionList()
display(panel)
display(ActivityBadge(session="churn-qa"))
WorkerConsole(session="churn-model", rows=12)
"""


@pytest.fixture(autouse=True)
def jp_asyncio_loop():
    """Playwright's sync API runs its own loop: no pytest-jupyter loop here."""
    yield None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab (with Notebook 7) serving a root with a notebook that shows the widgets."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("the browser test needs Chromium at /usr/bin/chromium")
    pytest.importorskip("playwright")
    base = tmp_path_factory.mktemp("widgets-lab")
    root = base / "root"
    root.mkdir()
    env = {**isolated_env(base), "MAS_DEMO_DELAY": DEMO_DELAY}
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "c1",
                "metadata": {},
                "outputs": [],
                "source": CELL,
            }
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "widgets.ipynb").write_text(json.dumps(nb))
    server = Lab(
        root=root,
        base=base,
        token=secrets.token_hex(16),
        env=env,
        extra_args=[
            f"--MASManager.backends={{'shell': {{'argv': {PLAIN_BASH!r}}}}}",
            f"--MASManager.tmux_socket={base / 'tmux.sock'}",
        ],
    )
    server.start()
    api = server.api

    demo = {"kind": "agent", "backend": "demo"}
    api("POST", "sessions", {"name": "churn-model", "task": "T-42", "workers": [demo]})
    api(
        "POST",
        "sessions",
        {"name": "churn-qa", "task": "T-42", "workers": [{**demo, "persona": "qa"}]},
    )
    api("POST", "sessions", {"name": "scratch", "workers": [{"kind": "terminal"}]})
    for name in ("churn-model", "churn-qa"):
        wait_until(
            lambda n=name: api("GET", f"sessions/{n}/workers/demo")["activity"] == "idle",
            30,
            f"{name} ready",
        )
    yield server.url, server.token, api
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _run_cell(page):
    """Run the first cell once the kernel takes it (a cell run too early is dropped)."""
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=60_000)
    for _ in range(12):
        try:
            accept = page.locator(".jp-Dialog .jp-mod-accept")
            if accept.count():  # "Select Kernel": the default one
                accept.first.click(timeout=5_000)
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.click(timeout=5_000)
            page.keyboard.press("Control+Enter")
            page.wait_for_function(
                "() => /\\[[0-9*]+\\]/.test("
                "document.querySelector('.jp-Notebook .jp-Cell .jp-InputPrompt').innerText)",
                timeout=5_000,
            )
            return
        except Exception:  # the kernel was not connected yet: try again
            continue
    _failed(page)
    raise AssertionError("the notebook never ran its cell")


def _failed(page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widgets-failed.png"))


def _xterm_text(page) -> str:
    return page.evaluate(
        "() => [...document.querySelectorAll('.mas-console .xterm-rows')]"
        ".map(e => e.innerText).join('\\n')"
    )


@pytest.mark.timeout(240)
@pytest.mark.parametrize("front_end", ["lab", "notebook"])
def test_widgets_render_and_the_console_types(lab, browser, front_end):
    url, token, api = lab
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(60_000)
    logs = []
    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    path = "lab/tree/widgets.ipynb" if front_end == "lab" else "notebooks/widgets.ipynb"
    page.goto(f"{url}{path}?token={token}")
    _run_cell(page)
    try:
        page.wait_for_selector(".mas-console .xterm-rows", timeout=60_000)
    except Exception:
        _failed(page)
        outputs = page.evaluate(
            "() => [...document.querySelectorAll('.jp-OutputArea')].map(e => e.innerText)"
        )
        raise AssertionError(f"no console: outputs={outputs} logs={logs[-30:]}") from None
    page.wait_for_function(
        "() => [...document.querySelectorAll('.mas-console .xterm-rows')]"
        ".some(e => e.innerText.includes('demo>'))"
    )
    header = page.inner_text(".mas-sessions-header")
    assert "3 sessions" in header
    assert "T-42" in page.inner_text(".jp-OutputArea")
    assert "connected" in page.inner_text(".mas-console-bar")
    page.click(".mas-console .xterm-screen")
    message = f"typed in {front_end}"
    page.keyboard.type(message)
    page.keyboard.press("Enter")
    try:
        page.wait_for_function(
            "m => [...document.querySelectorAll('.mas-console .xterm-rows')]"
            ".some(e => e.innerText.includes('reply: ' + m))",
            arg=message,
            timeout=30_000,
        )
    except Exception:
        _failed(page)
        raise AssertionError(f"no reply: {_xterm_text(page)!r} logs={logs[-20:]}") from None
    assert "reply: " + message in _xterm_text(page)
    if front_end == "lab":
        # The QA agent asks something: the list highlights it (that is the screenshot).
        api("POST", "sessions/churn-qa/workers/demo/send", {"text": "/ask", "wait": True})
        page.wait_for_selector(".mas-session-row[data-waiting='true']")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.mas-console .xterm-rows')]"
            ".some(e => e.innerText.includes('reply: typed in lab'))"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        outputs = page.locator(".jp-Cell-outputArea").first
        outputs.screenshot(path=str(ARTIFACTS / "widgets.png"))
        if os.environ.get("MAS_UPDATE_DOCS") or not SCREENSHOT.exists():
            outputs.screenshot(path=str(SCREENSHOT))
        api("POST", "sessions/churn-qa/workers/demo/input", {"data": "yes\r"})
    page.close()
