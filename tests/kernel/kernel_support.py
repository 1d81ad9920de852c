"""Helpers of the notebook side's tests (a module with a unique name, not conftest)."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

import pexpect

from tests.conftest import PLAIN_BASH as SHELL_ARGV  # noqa: F401 (the kernel tests' name)
from tests.conftest import run_git

DEMO_DELAY = "0.2"


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    """Wait for something another thread or process makes true; bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def git_repo(path: pathlib.Path) -> pathlib.Path:
    """A git repository at `path` (made) with one commit: a.txt."""
    path.mkdir()
    run_git("init", "-q", "-b", "main", cwd=str(path))
    (path / "a.txt").write_text("a\n")
    run_git("add", "a.txt", cwd=str(path))
    run_git("commit", "-q", "-m", "a", cwd=str(path))
    return path


def demo_idle(client, session: str, worker: str = "demo", timeout: float = 15.0) -> None:
    """Wait until a demo agent shows its prompt."""
    wait_until(
        lambda: client.worker(worker, session=session).activity == "idle",
        timeout,
        f"{worker} in {session} at its prompt",
    )


def execute(kc, code: str, timeout: float = 60.0) -> tuple[str, list[dict]]:
    """Run code in a kernel; returns (the reply status, the iopub messages it produced)."""
    return finish(kc, kc.execute(code), timeout)


def finish(kc, msg_id: str, timeout: float = 60.0) -> tuple[str, list[dict]]:
    """Wait for a cell started with kc.execute to end: (the reply status, its iopub messages)."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the kernel did not finish the cell: {messages[-5:]}"
        msg = kc.get_iopub_msg(timeout=left)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"]["status"], messages


def text_of(messages: list[dict]) -> str:
    """Everything a cell printed or displayed as text (streams, text/plain, errors)."""
    out = []
    for msg in messages:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(content["text"])
        elif msg["msg_type"] in ("display_data", "execute_result", "update_display_data"):
            out.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            out.append(f"{content['ename']}: {content['evalue']}")
    return "\n".join(out)


class Proxy:
    """A TCP proxy in front of the test server that a test can cut (a network blip) and hold
    down (connections are then accepted and closed at once, as a server restarting does)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = parts._replace(netloc=f"127.0.0.1:{port}").geturl()
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list = []
        self.accepted = 0
        self.upstream = bytearray()  # every byte a client sent through, in order
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            if self.down.is_set():
                downstream.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [downstream, upstream]
            for a, b, seen in ((downstream, upstream, self.upstream), (upstream, downstream, None)):
                threading.Thread(target=self._pipe, args=(a, b, seen), daemon=True).start()

    @staticmethod
    def _pipe(a, b, seen: bytearray | None) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
                if seen is not None:
                    seen += data
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self, hold: bool = False) -> None:
        """Drop every open connection; with `hold`, refuse new ones until `restore()`."""
        if hold:
            self.down.set()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CLI = [sys.executable, "-m", "mas_jupyter.kernel.cli"]  # `jupyter mas`


def spawn_cli(cli, *args: str, env: dict | None = None) -> pexpect.spawn:
    """`jupyter mas ARGS` in a pseudo-terminal of 30x100 (`cli`: the fixture, for its env)."""
    return pexpect.spawn(
        CLI[0], [*CLI[1:], *args], env=env or cli.env, encoding="utf-8", timeout=20,
        dimensions=(30, 100),
    )  # fmt: skip


def detach(child: pexpect.spawn) -> int:
    """Leave a `jupyter mas attach` in child with Ctrl-]: its exit status, once it has ended."""
    child.send("\x1d")
    child.expect_exact("[detached]")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus
