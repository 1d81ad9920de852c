"""File descriptors and processes return to their baseline after many create/delete cycles:
500 through the engine (fast), and a smaller number through HTTP and WebSockets."""

from __future__ import annotations

import os

from bench.client import PROMPT
from bench.server import fd_count
from mas_jupyter.core.manager import MASManager
from tests.conftest import until
from tests.reliability.harness import children_of

# `cat` exits on SIGHUP at once: the cycles measure the engine, not a program's start-up.
CAT = {"cat": {"argv": ["cat"], "kind": "terminal"}}


def own_fds() -> int:
    return fd_count(os.getpid())


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


async def test_500_engine_cycles_leave_no_fd_or_process(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    manager = MASManager(root_dir=str(root), tmux_socket=str(tmp_path / "tmux.sock"), backends=CAT)
    manager.start()
    try:

        async def cycle(i: int) -> None:
            spec = {"name": f"c{i}", "workers": [{"name": "w", "backend": "cat"}]}
            await manager.create_session(spec)
            await manager.delete_session(f"c{i}", purge=True)

        def cats() -> list[int]:
            return [p for p in children_of(os.getpid()) if _comm(p) == "cat"]

        for i in range(10):  # warm up: lazily opened files, caches, the pidfd machinery
            await cycle(i)
        await until(lambda: not cats(), what="warm-up workers gone")
        # Other fixtures may hold children of this process (servers): compare, do not demand 0.
        fds, kids = own_fds(), set(children_of(os.getpid()))
        for i in range(10, 510):
            await cycle(i)
        await until(lambda: own_fds() <= fds, timeout=10, what=f"fds back to {fds}")
        assert not cats()
        assert set(children_of(os.getpid())) <= kids
        assert manager.list_sessions() == []
        assert os.listdir(root / "mas-sessions" / ".mas" / "staging") == []
    finally:
        await manager.shutdown()


async def test_http_cycles_leave_no_fd_or_process(shared_server, api_for):
    api = api_for(shared_server)

    async def cycle(i: int) -> None:
        session = await api.ok(
            "POST", "sessions", {"name": f"h{i}", "workers": [{"kind": "terminal", "name": "sh"}]}
        )
        console = await api.connect(f"api/mas/{session['workers'][0]['channel']}")
        await console.read_until(PROMPT, 20)
        console.close()
        await api.ok("DELETE", f"sessions/h{i}?purge=true")

    for i in range(5):
        await cycle(i)
    pid = shared_server.pid
    await until(lambda: not children_of(pid), what="warm-up children gone")
    fds = shared_server.fds()
    for i in range(5, 65):
        await cycle(i)
    await until(lambda: shared_server.fds() <= fds, timeout=10, what=f"server fds back to {fds}")
    await until(lambda: not children_of(pid), timeout=10, what="no child process left")
