"""A real JupyterLab started for browser tests (the side panel's and the widgets'), and the
machine's Chromium to drive it (Debian's `chromium` package, never Playwright's download)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

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


def isolated_env(base: pathlib.Path) -> dict:
    """This process's environment with Jupyter's directories under `base` and no server of
    another Jupyter (its URL or token) to find."""
    env = dict(os.environ)
    for name in ("MAS_SERVER_URL", "MAS_TOKEN", "JUPYTER_SERVER_URL", "JUPYTER_TOKEN"):
        env.pop(name, None)
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
    # Lab's "notified about official Jupyter news?" question would cover the screenshots.
    news = base / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True, exist_ok=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # The virtual environment's scripts (jupyter, agents) first, as `make run` has them.
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    return env
