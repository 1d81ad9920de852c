"""A real JupyterLab with the extension and a browser driving it, for the side panel's tests.

The browser is the machine's Chromium (Debian's `chromium` package); Playwright's own
browser download is never used. Without /usr/bin/chromium the browser tests skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

CHROMIUM = os.environ.get("MAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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


@dataclass
class Lab:
    """A running JupyterLab server started for the tests."""

    root: pathlib.Path
    base: pathlib.Path
    token: str
    env: dict
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: pathlib.Path | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, port: int = 0) -> None:
        """Start the server (on `port`, or a free one) and wait until it answers."""
        runtime = pathlib.Path(self.env["JUPYTER_RUNTIME_DIR"])
        for old in runtime.glob("jpserver-*.json"):
            old.unlink()
        self.log_path = self.base / f"server-{int(time.time() * 1000)}.log"
        args = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.jpserver_extensions={'mas_jupyter': True}",
            "--LabApp.news_url=",
            "--MASManager.max_sessions=400",
            "--MASManager.max_workers=64",
            *self.extra_args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{self.log()}")
            found = list(runtime.glob(f"jpserver-{self.proc.pid}.json"))
            if found:
                try:
                    self.port = json.loads(found[0].read_text())["port"]
                except (ValueError, KeyError):
                    pass
                else:
                    if self._answers():
                        return
            time.sleep(0.2)
        raise RuntimeError(f"JupyterLab did not start in 60 s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the server the way Ctrl-C would, then for good."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path else ""

    def _answers(self) -> bool:
        try:
            self.api("GET", "sessions")
        except (OSError, ApiError):
            return False
        return True

    def api(self, method: str, path: str, body: dict | None = None) -> object:
        """Call /api/mas like a client would; raises ApiError on an error status."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}api/mas/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")) from None
        return json.loads(text) if text else None


class ApiError(Exception):
    """An error status from /api/mas."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def _isolated_env(base: pathlib.Path) -> dict:
    env = dict(os.environ)
    for name in ("home", "config", "data", "runtime", "settings", "workspaces"):
        (base / name).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(base / "home"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONWARNINGS="ignore",
    )
    # The virtual environment's scripts (jupyter, agents) first, as `make run` has them.
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    return env


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
    server = Lab(root=root, base=base, token=secrets.token_hex(16), env=_isolated_env(base))
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
