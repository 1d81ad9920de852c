"""Changes to one session happen one at a time, whatever the order requests arrive in."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from mas_jupyter.core.errors import LimitError, NotFoundError, UnavailableError
from tests.core.conftest import alive

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.mark.parametrize("runtime", ["pty", pytest.param("tmux", marks=needs_tmux)])
async def test_a_pause_racing_a_new_worker_leaves_nothing_running(manager, runtime):
    await manager.create_session({"kind": "quick", "name": "s"})
    spec = {"name": "late", "kind": "terminal", "runtime": runtime}
    created, paused = await asyncio.gather(
        manager.create_worker("s", spec), manager.pause_session("s")
    )
    assert paused["status"] == "paused"
    assert manager.get_session("s")["status"] == "paused"
    assert manager.get_worker("s", "late")["status"] == "exited"
    assert not alive(created["pid"])


async def test_the_second_of_two_deletes_is_not_found(manager, make_repo):
    # A worktree's delete looks at git before it marks the row: the second came in meanwhile.
    session = await manager.create_session({"kind": "worktree", "name": "s", "repo": make_repo()})
    results = await asyncio.gather(
        manager.delete_session("s", purge=True),
        manager.delete_session("s", purge=True),
        return_exceptions=True,
    )
    assert results[0]["purged"] is True
    assert isinstance(results[1], NotFoundError)
    assert not os.path.exists(session["workspace"])


async def test_a_delete_racing_a_pause_leaves_no_workspace_behind(manager):
    session = await manager.create_session(
        {"kind": "quick", "name": "s", "workers": [{"name": "sh", "kind": "terminal"}]}
    )
    paused, deleted = await asyncio.gather(
        manager.pause_session("s"), manager.delete_session("s", purge=True)
    )
    assert paused["status"] == "paused" and deleted["purged"] is True
    assert not os.path.exists(session["workspace"])
    assert manager.list_sessions() == []


async def test_concurrent_restarts_leave_one_process(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    first = await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    restarted = await asyncio.gather(*(manager.restart_worker("s", "sh") for _ in range(3)))
    pids = [first["pid"], *(r["pid"] for r in restarted)]
    assert len(set(pids)) == 4
    current = manager.get_worker("s", "sh")
    assert current["status"] == "running" and current["pid"] == pids[-1]
    for pid in pids[:-1]:
        for _ in range(200):  # the stop is awaited; reaping may lag a moment
            if not alive(pid):
                break
            await asyncio.sleep(0.01)
        assert not alive(pid), f"process {pid} of an earlier start is still running"


async def test_a_session_whose_workers_cannot_all_start_is_not_left_half_made(
    make_manager, monkeypatch
):
    manager = make_manager(max_workers=2)
    two = [{"name": "a", "kind": "terminal"}, {"name": "b", "kind": "terminal"}]
    await manager.create_session({"kind": "quick", "name": "first", "workers": two[:1]})
    # Over the server's limit: refused before anything is made.
    with pytest.raises(LimitError, match="max_workers"):
        await manager.create_session({"kind": "quick", "name": "s", "workers": two})
    assert [s["name"] for s in manager.list_sessions()] == ["first"]
    # A worker that fails to start: the session and its other worker go too.
    await manager.delete_session("first", purge=True)
    create = manager.supervisor.create_worker
    calls = []

    async def second_fails(session, spec):
        calls.append(spec["name"])
        if len(calls) == 2:
            raise UnavailableError("cannot start 'b'")
        return await create(session, spec)

    monkeypatch.setattr(manager.supervisor, "create_worker", second_fails)
    with pytest.raises(UnavailableError):
        await manager.create_session({"kind": "quick", "name": "s", "workers": two})
    assert manager.list_sessions() == []
    assert manager.store.count_workers() == 0
    assert not os.path.exists(os.path.join(manager.workspaces.root, "s"))
    monkeypatch.undo()
    made = await manager.create_session({"kind": "quick", "name": "s", "workers": two})
    assert [w["status"] for w in made["workers"]] == ["running", "running"]
