"""Fixtures for the engine's tests: a manager on a temporary root."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mas_jupyter.core.manager import MASManager
from tests.conftest import PLAIN_BASH

# The managers of the running test, so a failed wait can show what their workers displayed.
MANAGERS: list[MASManager] = []


@pytest.fixture
def root(tmp_path):
    """The server root a manager works in."""
    path = tmp_path / "root"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def make_manager(root, jp_asyncio_loop):
    """Build started managers on the test root; all are shut down after the test."""
    made = []

    def make(**config) -> MASManager:
        config.setdefault("root_dir", str(root))
        config.setdefault("tmux_socket", str(root.parent / "tmux.sock"))
        # The machine's own ~/.bashrc may be slow (pyenv rehash waits on a lock); tests use
        # a plain interactive bash so they measure the engine, not the rc files.
        backends = dict(config.get("backends") or {})
        backends.setdefault("shell", {"argv": PLAIN_BASH})
        config["backends"] = backends
        manager = MASManager(**config)
        manager.start()
        made.append(manager)
        MANAGERS.append(manager)
        return manager

    yield make
    MANAGERS.clear()
    for manager in made:
        if manager._store is not None:
            jp_asyncio_loop.run_until_complete(manager.shutdown())
    # tmux workers outlive a manager by design: end the test's tmux server.
    socket = root.parent / "tmux.sock"
    if socket.exists() and shutil.which("tmux"):
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def manager(make_manager):
    """A started manager on the test root."""
    return make_manager()


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
