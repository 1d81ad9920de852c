"""The server is SIGKILLed at each step of creating a session or a worker, and with 50 creates
in flight; after a restart every acknowledged session is there and nothing is half made."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import pytest

from mas_jupyter.core import processes
from tests.conftest import run_git, until
from tests.reliability.harness import db_rows, tree_gone


def make_repo(root: str) -> str:
    path = os.path.join(root, "repo")
    os.makedirs(path)
    run_git("init", "-q", "-b", "main", cwd=path)
    with open(os.path.join(path, "data.csv"), "w") as fh:
        fh.write("a,b\n1,2\n")
    run_git("add", "data.csv", cwd=path)
    run_git("commit", "-q", "-m", "first", cwd=path)
    return path


async def died(server, timeout: float = 30) -> None:
    """The server process ended by SIGKILL (its fault point fired)."""
    await asyncio.to_thread(server.proc.wait, timeout)
    assert server.proc.returncode == -signal.SIGKILL, server.log()


def check_consistent(server, acknowledged: set[str]) -> list[dict]:
    """After a restart: every acknowledged session is listed, nothing is half made."""
    code, sessions = server.mas("GET", "sessions")
    assert code == 200
    names = {s["name"] for s in sessions}
    assert acknowledged <= names, (acknowledged - names, server.log())
    # No row left in a transitional state, and the database is sound.
    states = {row[0] for row in db_rows(server, "SELECT row_state FROM sessions")}
    assert states <= {"ready"}, states
    assert db_rows(server, "PRAGMA integrity_check") == [("ok",)]
    staging = os.path.join(server.root, "mas-sessions", ".mas", "staging")
    assert os.listdir(staging) == []
    for s in sessions:
        assert os.path.isdir(s["workspace"]), s
        for w in s["workers"]:
            assert w["status"] in ("running", "exited"), w
            if w["status"] == "exited":
                assert tree_gone(w["pid"]), w
    return sessions


# Each step starts the server with a fault point armed and makes a request that reaches it;
# the server dies there, and the next start (which arms the next point) must have recovered.
# One chain on one root: each start both checks the previous crash and sets up the next.
STEPS = [
    ("session:row-inserted", "POST", "sessions", {"name": "q1", "kind": "quick"}),
    ("session:workspace-created", "POST", "sessions", {"name": "wt", "kind": "worktree"}),
    ("session:ready", "POST", "sessions", {"name": "q2", "kind": "quick"}),
    ("session:deleting", "DELETE", "sessions/doomed?purge=true", None),
    ("worker:row-inserted", "POST", "sessions/keep/workers", {"name": "w1", "kind": "terminal"}),
    ("worker:process-started", "POST", "sessions/keep/workers", {"name": "w3", "kind": "terminal"}),
    ("worker:spawned", "POST", "sessions/keep/workers", {"name": "w2", "kind": "terminal"}),
]
if shutil.which("tmux"):
    spec = {"name": "t1", "kind": "terminal", "runtime": "tmux"}
    STEPS.append(("worker:spawned", "POST", "sessions/keep/workers", spec))


async def test_kill_at_every_fault_point(servers, api_for):
    server = servers("chain", start=False)
    repo = make_repo(server.root)
    server.start()
    api = api_for(server)
    await api.ok("POST", "sessions", {"name": "keep"})
    doomed = await api.ok("POST", "sessions", {"name": "doomed", "workers": [{"kind": "terminal"}]})
    acknowledged = {"keep", "doomed"}
    server.stop()
    expected_after = {
        # What the crashed request leaves once recovered.
        "session:row-inserted": lambda names, workers: "q1" not in names,  # undone
        "session:workspace-created": lambda names, workers: "wt" in names,  # finished
        "session:ready": lambda names, workers: "q2" in names,  # finished
        "session:deleting": lambda names, workers: "doomed" not in names,  # finished
        "worker:row-inserted": lambda names, workers: workers.get("w1") in (None, "exited"),
        "worker:process-started": lambda names, workers: workers.get("w3") == "exited",
        "worker:spawned": lambda names, workers: True,
    }
    started_pids: list[int] = []
    previous = None
    for point, method, path, body in STEPS + [(None, None, None, None)]:
        server.start(fault=point)
        sessions = check_consistent(server, acknowledged)
        names = {s["name"] for s in sessions}
        keep = next(s for s in sessions if s["name"] == "keep")
        workers = {w["name"]: w["status"] for w in keep["workers"]}
        if previous is not None:
            assert expected_after[previous](names, workers), (previous, names, workers)
        if previous == "session:workspace-created":
            # Stale worktrees are pruned: git knows only the worktrees of listed sessions.
            listed = run_git("worktree", "list", "--porcelain", cwd=repo).splitlines()
            paths = {line.split(" ", 1)[1] for line in listed if line.startswith("worktree ")}
            assert paths == {repo} | {s["workspace"] for s in sessions if s["kind"] == "worktree"}
            assert run_git("worktree", "prune", "--dry-run", "-v", cwd=repo) == ""
        if previous == "session:deleting":
            assert not os.path.exists(doomed["workspace"])
        for w in keep["workers"]:
            if w["name"] == "t1":
                # A tmux worker survives the crash and is re-attached: the same process.
                assert w["status"] == "running" and w["pid"] in started_pids, w
            else:
                assert w["status"] == "exited", w
        # No orphan: a shell a dead server spawned is ended by the next one.
        for pid in started_pids:
            if not any(w["pid"] == pid and w["status"] == "running" for w in keep["workers"]):
                await until(lambda pid=pid: tree_gone(pid), what=f"orphan {pid} ended")
        if keep["status"] == "paused":
            # Nothing of it ran any more (its workers were interrupted): the restart paused
            # it. A resume would start them again, into this server's fault point: they go,
            # and the session is resumed for the next step.
            assert previous.startswith("worker:"), previous
            assert {w["exit_reason"] for w in keep["workers"]} == {"interrupted"}, keep
            for w in keep["workers"]:
                assert (await api.mas("DELETE", f"sessions/keep/workers/{w['id']}"))[0] == 204
            await api.ok("POST", "sessions/keep/resume", {})
        if point is None:
            break
        body = dict(body) if body else None
        if body and body.get("kind") == "worktree":
            body["repo"] = "repo"
        if method == "DELETE":
            acknowledged.discard("doomed")  # asked to go: either outcome is acknowledged
        with pytest.raises(Exception):  # noqa: B017 - the connection dies with the server
            await api.mas(method, path, body)
        await died(server)
        started_pids = [pid for (pid,) in db_rows(server, "SELECT pid FROM workers") if pid]
        previous = point
    assert names >= {"keep", "wt", "q2"}


async def test_kill_with_50_creates_in_flight(servers, api_for):
    server = servers("many", config={"MASManager": {"max_sessions": 200}})
    api = api_for(server)
    acknowledged: set[str] = set()

    async def create(i: int) -> None:
        spec = {"name": f"c{i:02d}"}
        if i % 5 == 0:
            spec["workers"] = [{"kind": "terminal"}]
        try:
            code, _ = await api.mas("POST", "sessions", spec)
        except Exception:
            return  # the server died under it: not acknowledged
        if code == 201:
            acknowledged.add(spec["name"])

    tasks = [asyncio.ensure_future(create(i)) for i in range(50)]
    await until(lambda: len(acknowledged) >= 10, timeout=60, what="some creates acknowledged")
    pids = [pid for (pid,) in db_rows(server, "SELECT pid FROM workers") if pid]
    server.kill(signal.SIGKILL)
    await asyncio.gather(*tasks)
    assert 10 <= len(acknowledged) < 50
    server.start()
    sessions = check_consistent(server, acknowledged)
    # Rows the dead server had not acknowledged were either finished or undone, never left.
    assert len(sessions) >= len(acknowledged)
    for pid in pids:
        await until(lambda pid=pid: tree_gone(pid), what=f"orphan {pid} ended")
    assert not [p for p in pids if processes.is_alive(p)]


def test_the_chain_covers_every_fault_point():
    from mas_jupyter.core import faults

    assert {step[0] for step in STEPS} == set(faults.POINTS)


async def test_a_console_after_a_kill_and_a_restart_replays_what_the_worker_printed(
    servers, api_for
):
    """The pty worker does not survive the server's death; its console, opened after the
    restart, shows what it printed (from its transcript), then says it exited."""
    server = servers("replay")
    api = api_for(server)
    await api.ok("POST", "sessions", {"name": "replay"})
    worker, console = await api.mas_shell("replay", "sh")
    console.send("echo before-$((6*7))\r")
    await console.read_until("before-42", 30)
    # Reading the transcript writes what it buffered: the output is in the file before the kill.
    page = await api.ok("GET", "sessions/replay/workers/sh/transcript?limit=10000")
    assert any("before-42" in r.get("data", "") for r in page["records"])
    server.kill(signal.SIGKILL)
    api.close()
    server.start()
    api = api_for(server)
    gone = await api.ok("GET", "sessions/replay/workers/sh")
    assert gone["status"] == "exited" and gone["exit_reason"] == "interrupted"
    output = await api.ok("GET", "sessions/replay/workers/sh/output")
    assert "before-42" in output["data"]
    console = await api.connect(f"api/mas/{worker['channel']}")
    await console.read_until("before-42", 30)
    assert await console.wait_closed(30) == (1000, "worker exited: interrupted")
    assert console.messages[-1][0] == "exit", console.messages
