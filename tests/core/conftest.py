"""Fixtures for the engine's tests: a manager on a temporary root."""

from __future__ import annotations

import pytest

from mas_jupyter.core.manager import MASManager


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
        manager = MASManager(**config)
        manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        if manager._store is not None:
            jp_asyncio_loop.run_until_complete(manager.shutdown())


@pytest.fixture
def manager(make_manager):
    """A started manager on the test root."""
    return make_manager()
