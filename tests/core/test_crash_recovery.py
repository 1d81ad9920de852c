"""A process that owns the manager dies at each step of a create or delete; a new one recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import GIT_ENV, run_git

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from mas_jupyter.core.manager import MASManager

    async def main():
        m = MASManager(root_dir=sys.argv[1])
        m.start()
        await m.recover()
        action = json.loads(sys.argv[2])
        if action["op"] == "create":
            await m.create_session(action["spec"])
        else:
            await m.delete_session(
                action["name"], purge=action.get("purge", False), force=action.get("force", False)
            )
        print("survived", flush=True)

    asyncio.run(main())
    """
)


def run_owner(root, action: dict, fault: str | None) -> subprocess.CompletedProcess:
    import json

    env = {**os.environ, **GIT_ENV}
    if fault:
        env["MAS_FAULT_POINT"] = fault
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), json.dumps(action)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("fault", ["session:row-inserted", "session:workspace-created"])
@pytest.mark.parametrize("kind", ["quick", "worktree"])
async def test_crash_during_create_leaves_nothing_half_made(
    make_manager, make_repo, root, fault, kind
):
    spec = {"kind": kind, "name": "s"}
    if kind == "worktree":
        spec["repo"] = make_repo()
    result = run_owner(root, {"op": "create", "spec": spec}, fault)
    assert result.returncode == -signal.SIGKILL, result.stderr
    manager = make_manager()
    report = await manager.recover()
    sessions = manager.list_sessions()
    if fault == "session:row-inserted":
        # The workspace was never made: the row is undone and no trace remains.
        assert report["undone"] == 1 and sessions == []
        assert not os.path.exists(root / "mas-sessions" / "s")
        if kind == "worktree":
            assert "mas/s" not in run_git("branch", "--list", cwd=spec["repo"])
    else:
        # The workspace is complete: the create is finished, not thrown away.
        assert report["finished"] == 1
        assert [s["name"] for s in sessions] == ["s"]
        assert os.path.isdir(sessions[0]["workspace"])
    assert os.listdir(root / "mas-sessions" / ".mas" / "staging") == []
    assert manager.store.integrity_ok()
    # The name is usable again either way (renamed if the first create was finished).
    if not sessions:
        await manager.create_session(spec)


async def test_a_worktree_left_locked_by_a_killed_create_is_undone(make_manager, make_repo, root):
    """`kill -9` while `git worktree add` checked out a large repository: its worktree stayed
    locked ("initializing"), `worktree remove --force` refused it, and the folder, the
    worktree and the branch stayed with no session (a retry: 'branch already exists'; QA)."""
    repo = make_repo()
    spec = {"kind": "worktree", "name": "s", "repo": repo}
    result = run_owner(root, {"op": "create", "spec": spec}, "session:row-inserted")
    assert result.returncode == -signal.SIGKILL, result.stderr
    workspace = str(root / "mas-sessions" / "s")  # as git worktree add had begun it
    run_git("worktree", "add", "-q", "-b", "mas/s", workspace, cwd=repo)
    with open(os.path.join(repo, ".git", "worktrees", "s", "locked"), "w") as fh:
        fh.write("initializing")
    manager = make_manager()
    report = await manager.recover()
    assert report["undone"] == 1
    assert not os.path.exists(workspace)
    assert workspace not in run_git("worktree", "list", cwd=repo)
    assert "mas/s" not in run_git("branch", "--list", cwd=repo)
    await manager.create_session(spec)  # the name and the branch are free again


async def test_crash_during_delete_is_finished_by_recovery(make_manager, root):
    first = make_manager()
    session = await first.create_session({"kind": "quick", "name": "s"})
    await first.shutdown()
    result = run_owner(root, {"op": "delete", "name": "s", "purge": True}, "session:deleting")
    assert result.returncode == -signal.SIGKILL, result.stderr
    manager = make_manager()
    assert manager.store.get_session("s") is None  # hidden while half-deleted
    report = await manager.recover()
    assert report["deleted"] == 1
    assert manager.store.get_session(session["id"], any_state=True) is None
    assert not os.path.exists(session["workspace"])


@pytest.mark.parametrize("force", [False, True])
async def test_a_purge_finished_by_recovery_keeps_the_force_it_was_given(
    make_manager, make_repo, root, force
):
    """A purge without force, cut by a crash, was finished with force: files a worker wrote
    meanwhile went, the ignored ones without a trace (QA: a model.pkl, a results file)."""
    repo = make_repo()
    with open(os.path.join(repo, ".gitignore"), "w") as fh:
        fh.write("*.pkl\n")
    run_git("add", ".gitignore", cwd=repo)
    run_git("commit", "-q", "-m", "ignore pickles", cwd=repo)
    first = make_manager()
    session = await first.create_session({"kind": "worktree", "name": "w", "repo": repo})
    await first.shutdown()
    action = {"op": "delete", "name": "w", "purge": True, "force": force}
    result = run_owner(root, action, "session:deleting")
    assert result.returncode == -signal.SIGKILL, result.stderr
    for name in ("model.pkl", "findings.md"):  # written after the check, before the crash
        with open(os.path.join(session["workspace"], name), "w") as fh:
            fh.write("the afternoon's work\n")
    manager = make_manager()
    report = await manager.recover()
    if force:
        assert report["deleted"] == 1 and len(report["rescued"]) == 1
        assert not os.path.exists(session["workspace"])
        shown = run_git("show", "--stat", report["rescued"][0], cwd=repo)
        assert "findings.md" in shown
    else:
        assert report["kept"] == 1 and report["deleted"] == 0
        assert {"findings.md", "model.pkl"} <= set(os.listdir(session["workspace"]))
        [kept] = manager.list_sessions()
        assert kept["status"] == "stopped"
        log = [a["type"] for a in manager.list_activities("w")]
        assert log[-1] == "purge-failed", log


async def test_a_run_without_faults_survives(root):
    result = run_owner(root, {"op": "create", "spec": {"kind": "quick", "name": "ok"}}, None)
    assert result.returncode == 0 and "survived" in result.stdout
