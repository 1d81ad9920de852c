"""One engine per sessions root: a second one is refused until the first shuts down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mas_jupyter.core import manager as manager_module
from mas_jupyter.core.manager import MASManager
from mas_jupyter.core.store import StoreError
from tests.core.test_workers import until


async def test_a_second_engine_on_the_same_sessions_root_is_refused(make_manager, root):
    first = make_manager()
    await first.create_session({"kind": "quick", "name": "s"})
    second = MASManager(root_dir=str(root))
    with pytest.raises(StoreError) as refused:
        second.start()
    message = str(refused.value)
    assert first.resolved_sessions_root in message and f"pid {os.getpid()}" in message
    assert "c.MASManager.sessions_root" in message
    assert second._store is None  # nothing opened, nothing written
    assert first.get_session("s")["status"] == "active"
    await first.shutdown()
    second.start()  # free again
    try:
        assert second.get_session("s")["name"] == "s"
    finally:
        await second.shutdown()


async def test_a_separate_database_is_locked_too(make_manager, root, tmp_path):
    db = str(tmp_path / "elsewhere.sqlite")
    make_manager(sessions_root=str(tmp_path / "one"), db_path=db)
    other = MASManager(root_dir=str(root), sessions_root=str(tmp_path / "two"), db_path=db)
    with pytest.raises(StoreError, match="the state database .*elsewhere.sqlite is in use"):
        other.start()


async def test_the_lock_goes_with_a_killed_holder(root):
    # A server killed with -9 leaves no lock behind: the kernel drops it with the process.
    code = (
        "import os, sys\n"
        "from mas_jupyter.core.manager import MASManager\n"
        f"MASManager(root_dir={str(root)!r}).start()\n"
        "print('started', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "started" and done.returncode == -9, done.stderr
    manager = MASManager(root_dir=str(root))
    manager.start()
    # It left its pid behind: the next engine knows when it was last alive.
    [lock] = root.rglob("engine.lock")
    assert manager._locks[0].holder_died_at is not None
    assert manager._locks[0].holder_died_at <= os.stat(lock).st_mtime
    await manager.shutdown()
    # A clean shutdown leaves none.
    manager.start()
    assert manager._locks[0].holder_died_at is None
    await manager.shutdown()


async def test_a_running_engine_marks_itself_alive_until_it_shuts_down(
    make_manager, root, monkeypatch
):
    monkeypatch.setattr(manager_module, "HEARTBEAT_SECONDS", 0.02)
    manager = make_manager()
    [lock] = root.rglob("engine.lock")
    os.utime(lock, (1, 1))
    await manager.recover()
    assert os.stat(lock).st_mtime > 1  # at once
    for _ in range(2):  # and again, on its timer
        os.utime(lock, (1, 1))
        await until(lambda: os.stat(lock).st_mtime > 1, what="a heartbeat")
    await manager.shutdown()
    assert manager._heartbeat is None
