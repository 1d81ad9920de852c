"""A real `jupyter server` subprocess with mas_jupyter and Jupyter's terminals, on loopback.

Used by the benchmarks and by tests/reliability: both drive the server from outside, the way
a browser or the CLI does, and read its memory and CPU from /proc.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PLAIN_BASH = ["bash", "--norc", "--noprofile", "-i"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class JupyterServer:
    """One `jupyter server` with mas_jupyter and jupyter_server_terminals, token auth, loopback.

    `config` maps sections to traits (`{"MASManager": {"max_sessions": 5}}`), merged over the
    defaults here (plain bash for shells and Jupyter terminals, a private tmux socket).
    """

    def __init__(
        self,
        root: str,
        config: dict | None = None,
        env: dict | None = None,
        ignore_sigint: bool = False,
        base: str | None = None,
    ) -> None:
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.base = base or tempfile.mkdtemp(prefix="mas-server-")
        self.token = secrets.token_hex(16)
        self.extra_env = dict(env or {})
        self.ignore_sigint = ignore_sigint
        self.config = {
            "ServerApp": {
                "jpserver_extensions": {"mas_jupyter": True, "jupyter_server_terminals": True},
                "terminado_settings": {"shell_command": PLAIN_BASH},
                "open_browser": False,
            },
            "MASManager": {
                "backends": {"shell": {"argv": PLAIN_BASH}},
                "tmux_socket": os.path.join(self.base, "tmux.sock"),
            },
        }
        for section, values in (config or {}).items():
            merged = self.config.setdefault(section, {})
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.base, "server.log")
        self.starts = 0

    # starting and stopping

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def tmux_socket(self) -> str:
        return self.config["MASManager"]["tmux_socket"]

    def _write_config(self) -> dict:
        conf_dir = os.path.join(self.base, "config")
        os.makedirs(conf_dir, exist_ok=True)
        lines = []
        for section, values in self.config.items():
            for key, value in values.items():
                lines.append(f"c.{section}.{key} = {value!r}")
        with open(os.path.join(conf_dir, "jupyter_server_config.py"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "MAS_"))}
        env.update(
            JUPYTER_CONFIG_DIR=conf_dir,
            JUPYTER_RUNTIME_DIR=os.path.join(self.base, "runtime"),
            JUPYTER_DATA_DIR=os.path.join(self.base, "data"),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
            # One prompt for every shell (root's default ends in "# "), so clients can wait for it.
            PS1="$ ",
        )
        env.update(self.extra_env)
        return env

    def argv(self) -> list[str]:
        """The command line that starts the server."""
        argv = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.log_level=WARN",
            "--allow-root",
        ]
        if self.ignore_sigint:
            # As `jupyter server &` from a shell without job control: SIGINT is ignored and
            # every child inherits that unless it resets it.
            # (A non-interactive bash drops PS1 from the environment: give it back.)
            argv = ["bash", "-c", 'trap "" INT; PS1="$ " exec "$@"', "bash", *argv]
        return argv

    def spawn(self, fault: str | None = None) -> subprocess.Popen:
        """Start the process without waiting for it to answer."""
        env = self._write_config()
        if fault:
            env["MAS_FAULT_POINT"] = fault
        self.port = free_port()
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self.proc

    def start(self, timeout: float = 60.0, fault: str | None = None) -> float:
        """Start and wait until the mas API answers (start-up recovery done); returns seconds."""
        t0 = time.perf_counter()
        self.spawn(fault=fault)
        self.wait_ready(timeout)
        return time.perf_counter() - t0

    def wait_ready(self, timeout: float = 60.0, path: str = "/api/mas/sessions") -> None:
        """Wait until `path` answers 200; fail with the log if the process died or timed out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.log()}")
            if self.answers(path):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer in {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.02)

    def answers(self, path: str = "/api/mas/sessions") -> bool:
        """Whether GET path answers 200 right now."""
        try:
            self.get(path, timeout=5)
        except (OSError, urllib.error.HTTPError):
            return False
        return True

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Send a signal to the server and wait for it to end; returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM: it stops its pty workers), or kill it."""
        self.kill(signal.SIGTERM)

    def kill_tmux(self) -> None:
        """End the private tmux server (tmux workers survive the Jupyter server on purpose)."""
        if shutil.which("tmux") and os.path.exists(self.tmux_socket):
            subprocess.run(
                ["tmux", "-S", self.tmux_socket, "kill-server"],
                capture_output=True,
                timeout=10,
                check=False,
            )

    def close(self) -> None:
        """Stop the server and its tmux server."""
        try:
            self.stop()
        finally:
            self.kill_tmux()

    def log(self) -> str:
        """The end of the server's log."""
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()[-6000:]
        except OSError:
            return ""

    # what it costs

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        """The server's CPU seconds so far."""
        return cpu_seconds(self.pid)

    def fds(self) -> int:
        """The server's open file descriptors."""
        return fd_count(self.pid)

    # a blocking client, for set-up and for tests that need no concurrency

    def headers(self) -> dict:
        return {"Authorization": f"token {self.token}", "Content-Type": "application/json"}

    def request(
        self, method: str, path: str, body: object = None, raw: bytes | None = None, timeout=60
    ) -> tuple[int, object]:
        """Call the server: (status, parsed JSON, text or None); never raises on 4xx/5xx."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is None and method in ("POST", "PATCH", "PUT"):
            data = b""
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers=self.headers()
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                code, text = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            code, text = err.code, err.read()
        if not text:
            return code, None
        try:
            return code, json.loads(text)
        except ValueError:
            return code, text.decode(errors="replace")

    def get(self, path: str, timeout: float = 60) -> object:
        """GET path and return its JSON; raises HTTPError on an error status."""
        req = urllib.request.Request(self.url + path, headers=self.headers())
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def mas(self, method: str, path: str, body: object = None, **kwargs) -> tuple[int, object]:
        """Call /api/mas/<path>."""
        return self.request(method, "/api/mas/" + path, body, **kwargs)
