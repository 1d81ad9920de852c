"""A real Jupyter server with mas_jupyter for the notebook side's tests (one per module).

The server runs as a subprocess with a token, a temporary root, runtime and config
directories, the fast shell backend (~/.bashrc may run slow things) and a private tmux
socket. Clients, kernels, notebooks and the CLI reach it the way users do: by URL and token,
or by discovery through its runtime file.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest
from kernel_support import CLI, DEMO_DELAY, SHELL_ARGV, wait_until

_DISCOVERY_VARS = ("MAS_SERVER_URL", "MAS_TOKEN", "JUPYTER_SERVER_URL", "JUPYTER_TOKEN")


@dataclass
class Server:
    """The test server: where it listens, its token and folders, its environment."""

    url: str
    token: str
    root: pathlib.Path
    runtime: pathlib.Path
    env: dict
    proc: subprocess.Popen
    log: pathlib.Path

    def api(self, method: str, path: str, body: object = None) -> object:
        """A raw REST call (for set-up and clean-up, not for what is tested)."""
        data = None if body is None else json.dumps(body).encode()
        if method in ("POST", "PATCH") and data is None:
            data = b"{}"
        request = urllib.request.Request(
            self.url + "api/" + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None


def _wait_until_serving(runtime: pathlib.Path, proc: subprocess.Popen, log: pathlib.Path):
    """The server's runtime file, once the server accepts connections: Jupyter writes the
    file before its loop runs, and with port 0 it starts listening only in the loop's first
    callback (a client that read the file at once was refused under load)."""
    deadline = time.monotonic() + 60
    path = runtime / f"jpserver-{proc.pid}.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the test server exited:\n{log.read_text()[-3000:]}")
        try:
            info = json.loads(path.read_text())
            socket.create_connection(("127.0.0.1", info["port"]), timeout=5).close()
        except (OSError, ValueError):
            time.sleep(0.05)  # not written, not complete, or not listening yet
        else:
            return info
    raise RuntimeError(f"the test server did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Start the server for one test module (and stop it after: later tests, such as the
    reliability ones, count this process's children)."""
    yield from _run_server(tmp_path_factory.mktemp("mas-kernel"), mas=True)


@pytest.fixture(scope="module")
def server_without_mas(tmp_path_factory):
    """A Jupyter server like `server`, with the mas_jupyter extension disabled: it answers
    /api/mas with Jupyter's HTML 404 page."""
    yield from _run_server(tmp_path_factory.mktemp("no-mas"), mas=False)


@pytest.fixture
def lone_server(tmp_path):
    """A server of the test's own, which the test may kill."""
    base = tmp_path / "lone-server"
    base.mkdir()
    yield from _run_server(base, mas=True)


def _run_server(base: pathlib.Path, mas: bool):
    """Run a test server in `base` (a generator: yields the Server, stops it when resumed)."""
    root, runtime, config = base / "root", base / "runtime", base / "config"
    for folder in (root, runtime, config):
        folder.mkdir()
    token = secrets.token_hex(16)
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {
                    # Only what the tests use: start-up stays quick.
                    "jpserver_extensions": {
                        "mas_jupyter": mas,
                        "jupyterlab": False,
                        "notebook": False,
                        "jupyter_lsp": False,
                        "jupyter_server_terminals": False,
                        "notebook_shim": False,
                    },
                    "allow_root": True,
                    "port": 0,
                    "ip": "127.0.0.1",
                    "open_browser": False,
                    "root_dir": str(root),
                },
                "IdentityProvider": {"token": token},
                "MASManager": {
                    "backends": {"shell": {"argv": SHELL_ARGV}},
                    "tmux_socket": str(base / "tmux.sock"),
                    "kill_timeout": 1.0,
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in _DISCOVERY_VARS}
    env.update(
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_PLATFORM_DIRS="1",
        MAS_DEMO_DELAY=DEMO_DELAY,
        PYTHONUNBUFFERED="1",
    )
    log = base / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    info = _wait_until_serving(runtime, proc, log)
    yield Server(info["url"], token, root, runtime, env, proc, log)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def server_env(server, monkeypatch):
    """This process's environment pointed at the test server's runtime dir, no discovery vars."""
    for name in _DISCOVERY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime))
    monkeypatch.setenv("MAS_DEMO_DELAY", DEMO_DELAY)
    return server


@pytest.fixture
def no_servers(monkeypatch, tmp_path):
    """No Jupyter server can be discovered from here (nor from kernels started after)."""
    for name in _DISCOVERY_VARS:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "no-servers"
    empty.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(empty))
    monkeypatch.setenv("MAS_DEMO_DELAY", DEMO_DELAY)


@pytest.fixture(autouse=True)
def _clean_sessions(request):
    """Every test starts with no sessions on the server and no default client."""
    from mas_jupyter import kernel

    kernel._reset_default()
    yield
    kernel._reset_default()
    if "server" not in request.fixturenames:
        return
    server = request.getfixturevalue("server")
    for session in server.api("GET", "mas/sessions"):
        server.api("DELETE", f"mas/sessions/{session['id']}?purge=true&force=true")


@pytest.fixture
def client(server):
    """A client of the test server, by explicit URL and token."""
    from mas_jupyter.kernel import MASClient
    from mas_jupyter.kernel.loop import LoopThread
    from mas_jupyter.kernel.transport import HTTPTransport

    c = MASClient(HTTPTransport(server.url, server.token), LoopThread("test-client"))
    yield c
    c.close()
    c._loop.stop()


@pytest.fixture
def until():
    """wait_until(predicate, timeout, what)."""
    return wait_until


@pytest.fixture
def kernel(tmp_path):
    """A real IPython kernel (started here, not by the server), with a blocking client.

    Its environment is this process's at start: set variables first (monkeypatch).
    """
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


@pytest.fixture
def cli(server, tmp_path):
    """Run `jupyter mas ...`: returns (exit status, stdout, stderr)."""
    env = {**server.env, "MAS_SERVER_URL": server.url, "MAS_TOKEN": server.token}

    def run(*args: str, stdin: str | None = None, timeout: float = 60, cwd=None):
        p = subprocess.run(
            [*CLI, *args],
            env=env,
            cwd=cwd or tmp_path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return p.returncode, p.stdout, p.stderr

    run.env = env
    return run
