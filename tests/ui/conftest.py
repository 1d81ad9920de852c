"""A real JupyterLab with the extension and a browser driving it, for the side panel's tests.

The browser is the machine's Chromium (Debian's `chromium` package); Playwright's own
browser download is never used. Without /usr/bin/chromium the browser tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import secrets
import shutil

import pytest

from tests.ui.lab import CHROMIUM, CHROMIUM_ARGS, Lab, isolated_env

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
INSTALL_HINT = (
    "the side panel's browser tests need Chromium at /usr/bin/chromium: "
    "`sudo apt-get install chromium` (Debian/Ubuntu), then run `make test` again"
)

# Records, inside the page, what the events WebSocket delivered and when, and every
# activity a worker row showed, so tests can check transitions too quick to poll.
RECORDER_JS = """
(() => {
  const rec = { events: [], rowActivity: [], notifications: [],
                perf: { pending: new Map(), samples: [] } };
  window.__masRec = rec;
  const NativeNotification = window.Notification;
  if (NativeNotification) {
    class RecordingNotification extends NativeNotification {
      constructor(title, options) {
        super(title, options);
        rec.notifications.push({ title, body: options && options.body });
      }
    }
    Object.defineProperty(RecordingNotification, 'permission', {
      get: () => NativeNotification.permission
    });
    RecordingNotification.requestPermission = (...a) => NativeNotification.requestPermission(...a);
    window.Notification = RecordingNotification;
  }
  const Native = window.WebSocket;
  class RecordingWebSocket extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      if (String(url).includes('/api/mas/events')) {
        // Registered before the app's onmessage, so `t` is the moment the event arrived.
        this.addEventListener('message', ev => {
          const t = performance.now();
          let d = null;
          try { d = JSON.parse(ev.data); } catch (e) { return; }
          rec.events.push({ t, type: d.type, session_id: d.session_id,
                            worker_id: d.worker_id, activity: d.activity });
          if (d.type === 'session-updated' && d.session && d.session.name.startsWith('perf-')) {
            rec.perf.pending.set(d.session.id + '|' + d.session.name, t);
          }
        });
      }
    }
  }
  window.WebSocket = RecordingWebSocket;
  const seen = row => {
    const t = performance.now();
    row.querySelectorAll('.mas-Worker').forEach(li =>
      rec.rowActivity.push({ t, worker_id: li.dataset.workerId, activity: li.dataset.activity }));
    const name = row.querySelector('.mas-Session-name');
    const key = row.dataset.sessionId + '|' + (name ? name.textContent : '');
    const t0 = rec.perf.pending.get(key);
    if (t0 !== undefined) {
      rec.perf.pending.delete(key);
      rec.perf.samples.push(t - t0);
    }
  };
  const observer = new MutationObserver(mutations => {
    const rows = new Set();
    for (const m of mutations) {
      const target = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      const row = target && target.closest && target.closest('.mas-Session');
      if (row) rows.add(row);
      m.addedNodes.forEach(n => {
        if (n.nodeType === 1 && n.classList.contains('mas-Session')) rows.add(n);
      });
    }
    rows.forEach(seen);
  });
  const start = () => observer.observe(document.body, { childList: true, subtree: true });
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
"""


@pytest.fixture(autouse=True)
def jp_asyncio_loop():
    """Replaces pytest-jupyter's per-test loop here: Playwright's sync API runs its own,
    and closing a loop it is running would fail every test's teardown."""
    yield None


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """The machine's Chromium, or a skip that says how to install it."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(INSTALL_HINT)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: run `make install` (it is in the test extras)")
    if importlib.util.find_spec("mas_jupyter.server") is None:
        pytest.skip("the mas_jupyter server extension (mas_jupyter/server) is not there yet")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path) -> Lab:
    """A JupyterLab with mas_jupyter, serving a fresh temporary root."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    server = Lab(root=root, base=base, token=secrets.token_hex(16), env=isolated_env(base))
    server.start()
    yield server
    server.stop()
    ARTIFACTS.mkdir(exist_ok=True)
    if server.log_path and server.log_path.exists():
        shutil.copy(server.log_path, ARTIFACTS / "ui-server.log")


@pytest.fixture(scope="module")
def browser(chromium_path):
    """Chromium launched through Playwright (never Playwright's own browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser, lab):
    """One browser profile for the module: notifications allowed, the recorder installed."""
    ctx = browser.new_context(
        viewport={"width": 1440, "height": 900},
        permissions=["notifications"],
        base_url=lab.url,
    )
    ctx.add_init_script(RECORDER_JS)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, keep a screenshot of the page for the test-artifacts."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and page is not None:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"failed-{item.name}.png"))
        except Exception:
            pass
