"""Workers through the manager: real PTYs, real shells, real tmux and the demo agent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time

import pytest

from mas_jupyter.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    LimitError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)
from tests.core.conftest import MANAGERS, alive

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
FAST = {"MAS_DEMO_DELAY": "0.3"}


async def until(predicate, timeout: float = 15.0, what: str = "condition"):
    """Wait for a condition the engine reaches through events; bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {_last_screens()}"
        await asyncio.sleep(0.02)


def _last_screens() -> str:
    """What the workers showed when a wait timed out, for the failure message."""
    shown = []
    for manager in MANAGERS:
        for live in manager.supervisor.live.values():
            shown.append(f"{live.record.name} [{live.activity}]: {live.screen.lines()[-8:]}")
    return "\n".join(shown)


def screen_text(manager, session, worker) -> str:
    return "\n".join(manager.get_screen(session, worker)["lines"])


async def test_terminal_worker_runs_a_shell_in_the_workspace(manager, monkeypatch):
    monkeypatch.setenv("JUPYTER_TOKEN", "secret-server-token")
    s = await manager.create_session({"kind": "quick", "name": "s"})
    w = await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    assert w["status"] == "running" and w["backend"] == "shell" and w["pid"]
    manager.write_input("s", "sh", "echo hi-$((6*7)) && pwd\r")
    await until(lambda: "hi-42" in screen_text(manager, "s", "sh"), what="echo")
    assert s["workspace"] in screen_text(manager, "s", "sh")
    # No Jupyter secret reaches a worker's environment.
    manager.write_input("s", "sh", "echo token=${JUPYTER_TOKEN:-none}=\r")
    await until(lambda: "token=none=" in screen_text(manager, "s", "sh"), what="env")
    assert "secret-server-token" not in manager.get_output("s", "sh")["data"]


async def test_terminal_activity_follows_the_foreground_process(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    events = []
    manager.events.subscribe(lambda e: events.append(e))
    await until(lambda: manager.get_worker("s", "sh")["activity"] == "idle", what="idle")
    manager.write_input("s", "sh", "sleep 1.5\r")
    await until(lambda: manager.get_worker("s", "sh")["activity"] == "busy", what="busy")
    await until(lambda: manager.get_worker("s", "sh")["activity"] == "idle", what="idle again")
    changes = [e["activity"] for e in events if e["type"] == "activity-changed"]
    assert changes[-2:] == ["busy", "idle"]


async def test_demo_agent_send_and_wait_returns_the_reply(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    result = await manager.send_message("s", "bot", "count the rows", wait=True, timeout=30)
    assert result["timed_out"] is False
    assert result["activity"] == "idle"
    assert "count the rows" in result["reply"]
    assert "demo>" not in result["reply"]  # prompt stripped
    assert "\x1b" not in result["reply"]  # ANSI removed
    log = manager.list_activities("s")
    types = [a["type"] for a in log]
    assert "worker-created" in types
    # The message is logged when it is sent, before the agent's work on it.
    sent = types.index("message-sent")
    assert log[sent]["detail"]["text"] == "count the rows"
    assert [a["detail"]["to"] for a in log[sent + 1 :] if a["type"] == "activity-changed"][
        -1
    ] == "idle"
    # Each entry about the worker names it, activity changes too (before: only its id).
    assert {a["detail"].get("worker", a["detail"].get("name")) for a in log if a["worker_id"]} == {
        "bot"
    }


async def test_multi_line_message_arrives_as_one_message(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    result = await manager.send_message("s", "bot", "line one\nline two", wait=True, timeout=30)
    assert "2 lines" in result["reply"]


async def test_waiting_for_an_answer_and_back(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    result = await manager.send_message("s", "bot", "/ask", wait=True, timeout=30)
    assert result["activity"] == "waiting"
    assert "(yes/no)" in result["reply"]
    check = await manager.check_stop("s")
    assert any("waiting for an answer" in e for e in check["errors"])
    with pytest.raises(ConflictError, match="waiting for an answer"):
        await manager.stop_session("s")
    result = await manager.send_message("s", "bot", "yes", wait=True, timeout=30)
    assert result["activity"] == "idle"


async def test_transcript_records_input_output_activity_and_exit(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    await manager.send_message("s", "bot", "hello transcript", wait=True, timeout=30)
    manager.write_input("s", "bot", "/exit\r")
    await until(lambda: manager.get_worker("s", "bot")["status"] == "exited", what="exit")
    page = manager.get_transcript("s", "bot")
    types = [r["type"] for r in page["records"]]
    assert types[0] == "start" and types[-1] == "exit"
    assert {"input", "output", "activity"} <= set(types)
    inputs = [r for r in page["records"] if r["type"] == "input"]
    assert inputs[0]["text"] == "hello transcript"
    assert page["records"][-1]["code"] == 0
    first = manager.get_transcript("s", "bot", offset=0, limit=2)
    assert len(first["records"]) == 2 and first["next_offset"] == 2


async def test_attach_replays_history_then_streams_without_gap(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    manager.write_input("s", "sh", "echo before-$((1+1))\r")
    await until(lambda: "before-2\r\n" in manager.get_output("s", "sh")["data"])
    received = []
    replay, detach = manager.attach("s", "sh", lambda kind, data: received.append((kind, data)))
    assert "before-2" in replay
    manager.write_input("s", "sh", "echo after-$((1+1))\r")
    live = lambda: "".join(d for k, d in received if k == "stdout")  # noqa: E731
    await until(lambda: "after-2\r\n" in live(), what="live output")
    # Replay + live together are exactly the output, once: no gap, no repeat.
    assert (replay + live()).count("before-2\r\n") == 1
    assert (replay + live()).count("after-2\r\n") == 1
    assert replay + live() == manager.get_output("s", "sh")["data"]
    detach()


async def test_a_listener_told_of_an_exit_finds_why_already_recorded(manager):
    # Consoles word a restart's end ("restarted", not a crash) from the worker's record.
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    seen = []

    def listener(kind, data):
        if kind == "exit":
            worker = manager.get_worker("s", "sh")
            seen.append((data, worker["status"], worker["exit_reason"]))

    manager.attach("s", "sh", listener)
    await manager.restart_worker("s", "sh")
    assert seen == [(-1, "exited", "restarted")]


@pytest.mark.parametrize("runtime", ["pty", pytest.param("tmux", marks=needs_tmux)])
async def test_resize_changes_the_terminal_size(manager, runtime):
    # tmux: the attach client's terminal is resized, which must signal the client (its
    # controlling terminal), which resizes the pane.
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker(
        "s", {"name": "sh", "kind": "terminal", "cols": 80, "rows": 24, "runtime": runtime}
    )
    if runtime == "tmux":  # its terminal controls the attach client: resizing signals it
        worker = manager.get_worker("s", "sh")
        proc = manager.supervisor.live[worker["id"]].process
        assert os.tcgetpgrp(proc.fd) == proc.client_pid
    manager.resize_worker("s", "sh", 100, 30)
    manager.write_input("s", "sh", "stty size\r")
    await until(lambda: "30 100" in screen_text(manager, "s", "sh"), what="new size")
    assert manager.get_screen("s", "sh")["cols"] == 100
    with pytest.raises(InvalidError):
        manager.resize_worker("s", "sh", 0, 30)
    # A console's view: the nearest size there is; a view with no size changes nothing.
    for cols, rows, size in ((8, 3, (10, 5)), (0, 40, (10, 5)), (5000, 900, (1000, 500))):
        manager.fit_worker("s", "sh", cols, rows)
        worker = manager.get_worker("s", "sh")
        assert (worker["cols"], worker["rows"]) == size


@needs_tmux
def open_files(pid: int | str = "self") -> dict[str, str]:
    """A process's descriptors and what each is open on."""
    files = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own, for one)
            files[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return files


async def test_a_tmux_attach_client_holds_no_other_terminal(manager):
    # A terminal stays open while any process holds its master: a leaked one would keep a
    # deleted worker's terminal from hanging up.
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "p", "kind": "terminal"})
    await manager.create_worker("s", {"name": "t", "kind": "terminal", "runtime": "tmux"})
    worker = manager.get_worker("s", "t")
    client = manager.supervisor.live[worker["id"]].process.client_pid
    fds = open_files(client)
    assert "/dev/ptmx" not in fds.values(), fds
    assert fds["0"].startswith("/dev/pts/"), fds


async def test_restart_continues_the_agent_conversation(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    await manager.send_message("s", "bot", "remember the churn table", wait=True, timeout=30)
    first_pid = manager.get_worker("s", "bot")["pid"]
    restarted = await manager.restart_worker("s", "bot")
    assert restarted["pid"] != first_pid and restarted["status"] == "running"
    await until(
        lambda: "continuing conversation (1 earlier" in screen_text(manager, "s", "bot"),
        what="resume banner",
    )


async def test_pause_stops_processes_and_resume_continues(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    await manager.send_message("s", "bot", "hello", wait=True, timeout=30)
    pids = [w["pid"] for w in manager.list_workers("s")]
    await manager.pause_session("s")
    for w in manager.list_workers("s"):
        assert w["status"] == "exited" and w["exit_reason"] == "paused"
    for pid in pids:
        assert (
            not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        )
    await manager.resume_session("s")
    assert [w["status"] for w in manager.list_workers("s")] == ["running", "running"]
    await until(
        lambda: "continuing conversation" in screen_text(manager, "s", "bot"), what="continue"
    )


async def test_stopping_a_paused_session_says_its_workers_were_stopped(manager):
    # Before: they kept exit_reason "paused" (and a console offered to resume a session that
    # can no longer be resumed). A worker that had crashed on its own keeps its reason.
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    manager.write_input("s", "sh", "exit 3\r")
    await until(lambda: manager.get_worker("s", "sh")["status"] == "exited", what="sh exited")
    await manager.pause_session("s")
    assert manager.get_worker("s", "bot")["exit_reason"] == "paused"
    events = []
    manager.events.subscribe(events.append)
    stopped = await manager.stop_session("s")
    reasons = {w["name"]: w["exit_reason"] for w in manager.list_workers("s")}
    assert reasons == {"bot": "stopped", "sh": "crashed"}
    assert {w["name"]: w["exit_reason"] for w in stopped["workers"]} == reasons
    [event] = [e for e in events if e["type"] == "session-stopped"]
    assert {w["name"]: w["exit_reason"] for w in event["session"]["workers"]} == reasons


async def test_worker_exit_codes_and_crash(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    manager.write_input("s", "bot", "/crash\r")
    await until(lambda: manager.get_worker("s", "bot")["status"] == "exited", what="crash")
    w = manager.get_worker("s", "bot")
    assert w["exit_code"] == 3 and w["exit_reason"] == "crashed"
    # The refusal says how it ended (before: only "is not running").
    refusal = "worker 'bot' has exited \\(code 3\\); restart it first"
    with pytest.raises(ConflictError, match=refusal):
        manager.write_input("s", "bot", "x")
    with pytest.raises(ConflictError, match=refusal):
        await manager.send_message("s", "bot", "hi", wait=False)


async def test_delete_worker_ends_its_processes(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    w = await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    manager.write_input("s", "sh", "sleep 300 &\r")
    events = []
    manager.events.subscribe(events.append)
    await manager.delete_worker("s", "sh")
    from mas_jupyter.core.processes import session_members

    assert session_members(w["pid"]) == []
    assert manager.list_workers("s") == []
    assert "worker-deleted" in [e["type"] for e in events]
    with pytest.raises(NotFoundError):
        manager.get_worker("s", "sh")


async def test_a_worker_whose_delete_has_begun_cannot_be_attached(manager, held_stops):
    # From the start of a delete until its row is gone, the worker is still listed (as
    # "running" while its process is being ended) but is gone to consoles: attach says it is
    # not found, so a console is told it was deleted, not that it exited. Before, attach
    # raised a ConflictError ("not running") and the console's handler guessed.
    await manager.create_session({"kind": "quick", "name": "s"})
    w = await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    entered, release = held_stops
    deleting = asyncio.ensure_future(manager.delete_worker("s", "sh"))
    try:
        await asyncio.wait_for(entered.wait(), 15)
        for key in (w["id"], "sh"):
            with pytest.raises(NotFoundError, match="being deleted"):
                manager.attach("s", key, lambda kind, data: None)
        assert manager.get_worker("s", "sh")["status"] == "running"  # REST still lists it
    finally:
        release.set()
        await asyncio.wait_for(deleting, 15)
    assert manager.supervisor.being_deleted == set()
    with pytest.raises(NotFoundError):
        manager.attach("s", w["id"], lambda kind, data: None)


async def test_a_delete_that_failed_after_ending_the_process_leaves_the_worker_unattachable(
    manager, monkeypatch
):
    # The row is left, its exit_reason "deleted": consoles are told it is gone (as before,
    # when the handler read exit_reason); deleting it again finishes the delete.
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})

    def fail(worker_id):
        raise OSError("disk full")

    monkeypatch.setattr(manager.store, "delete_worker", fail)
    with pytest.raises(OSError):
        await manager.delete_worker("s", "sh")
    monkeypatch.undo()
    assert manager.supervisor.being_deleted == set()
    left = manager.get_worker("s", "sh")
    assert (left["status"], left["exit_reason"]) == ("exited", "deleted")
    with pytest.raises(NotFoundError, match="being deleted"):
        manager.attach("s", "sh", lambda kind, data: None)
    await manager.delete_worker("s", "sh")
    assert manager.list_workers("s") == []


async def test_an_unknown_backend_names_the_usable_ones_apart(make_manager):
    """The refusal listed every known backend alike, uninstalled agent CLIs among them."""
    manager = make_manager(backends={"ghost": {"argv": ["/nonexistent/ghost-cli"]}})
    await manager.create_session({"kind": "quick", "name": "s"})
    with pytest.raises(NotFoundError) as refused:
        await manager.create_worker("s", {"name": "b", "backend": "nosuch"})
    message = refused.value.message
    usable, missing = message.split("; available: ")[1].split(" (not installed: ")
    assert {"demo", "shell"} <= set(usable.split(", ")) and "ghost" not in usable
    assert "ghost" in missing.rstrip(")").split(", ")


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ({"name": "b", "backend": "nope"}, NotFoundError, "no backend named 'nope'"),
        ({"name": "b", "kind": "agent"}, InvalidError, "needs 'backend'"),
        ({"name": "../b", "kind": "terminal"}, InvalidError, "not allowed"),
        ({"name": "b", "kind": "robot"}, InvalidError, "worker kind"),
        ({"name": "b", "kind": "terminal", "env": {"LD_PRELOAD": "x.so"}}, InvalidError, "refused"),
        (
            {"name": "b", "kind": "terminal", "env": {"NODE_OPTIONS": "-r x"}},
            InvalidError,
            "refused",
        ),
        ({"name": "b", "kind": "terminal", "argv": ["rm"]}, InvalidError, "unknown field"),
        ({"name": "b", "kind": "terminal", "cols": 5}, InvalidError, "cols"),
        ({"name": "b", "persona": "nobody", "kind": "terminal"}, NotFoundError, "no persona"),
        ({"name": "b", "backend": "ghost"}, UnavailableError, "not found on PATH"),
        ({"kind": "terminal", "backend": "demo"}, InvalidError, "kind 'agent', not 'terminal'"),
        ({"kind": "agent", "backend": "shell"}, InvalidError, "kind 'terminal', not 'agent'"),
        ({"backend": "shell", "persona": "pm"}, InvalidError, "runs a terminal"),
        ({"kind": "terminal", "persona": "pm"}, InvalidError, "runs a terminal"),
    ],
)
async def test_bad_worker_specs_start_nothing(make_manager, spec, error, message):
    manager = make_manager(backends={"ghost": {"argv": ["no-such-agent-cli"]}})
    await manager.create_session({"kind": "quick", "name": "s"})
    with pytest.raises(error, match=message):
        await manager.create_worker("s", spec)
    assert manager.list_workers("s") == []


BIG_ENV = {f"K{i}": "v" * 32768 for i in range(200)}  # each value allowed, together too big


@pytest.mark.parametrize(
    "problem, spec, error, message",
    [
        ("folder", {"backend": "bot", "persona": "pm"}, ConflictError, "BOT.md .*directory"),
        ("link", {"backend": "bot", "persona": "pm"}, ForbiddenError, "links outside"),
        (None, {"kind": "terminal", "env": BIG_ENV}, TooLargeError, "larger than the system"),
        (
            None,
            {"kind": "terminal", "runtime": "tmux", "env": BIG_ENV},
            TooLargeError,
            "larger than the system",
        ),
    ],
)
async def test_a_worker_that_cannot_start_leaves_nothing_behind(
    make_manager, tmp_path, problem, spec, error, message
):
    if spec.get("runtime") == "tmux" and shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    manager = make_manager(backends={"bot": {"argv": ["cat"], "instructions_file": "BOT.md"}})
    ws = (await manager.create_session({"kind": "quick", "name": "s"}))["workspace"]
    target = os.path.join(ws, "BOT.md")
    if problem == "folder":
        os.mkdir(target)
    elif problem == "link":
        os.symlink(tmp_path / "outside.md", target)
    with pytest.raises(error, match=message):
        await manager.create_worker("s", {"name": "w", **spec})
    assert manager.list_workers("s") == []
    # Its transcript file is closed, not left to the garbage collector.
    assert not [f for f in open_files().values() if "/transcripts/" in f]
    # The name is free again: once the problem is gone, the same worker starts.
    if problem == "folder":
        os.rmdir(target)
    elif problem == "link":
        os.unlink(target)
    spec = {key: value for key, value in spec.items() if key != "env"}
    assert (await manager.create_worker("s", {"name": "w", **spec}))["status"] == "running"
    assert not (tmp_path / "outside.md").exists()


async def test_a_dir_session_keeps_its_transcripts_out_of_the_users_folder(manager, root):
    shared = root / "project"
    shared.mkdir()
    (shared / "keep.txt").write_text("mine")
    s = await manager.create_session({"kind": "dir", "name": "d", "path": "project"})
    await manager.create_worker("d", {"name": "sh", "kind": "terminal"})
    manager.write_input("d", "sh", "echo in-dir-$((6*7))\r")
    await until(lambda: "in-dir-42" in screen_text(manager, "d", "sh"), what="echo")
    await manager.stop_session("d", force=True)
    records = manager.get_transcript("d", "sh")["records"]
    assert any("in-dir-42" in r.get("data", "") for r in records)
    assert sorted(os.listdir(shared)) == ["keep.txt"]  # no .mas folder in the user's folder
    kept = root / "mas-sessions" / ".mas" / "dir-sessions" / s["id"]
    assert (kept / "transcripts").is_dir()
    await manager.delete_session("d", purge=True)
    assert not kept.exists() and sorted(os.listdir(shared)) == ["keep.txt"]


async def test_a_workspace_replaced_by_a_link_is_not_used(manager, root, tmp_path):
    # A worker can swap its workspace for a link to elsewhere: the engine then starts, reads
    # and writes nothing there (the folders it may use are the configured ones).
    outside = tmp_path / "outside"
    outside.mkdir()
    s = await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    await manager.pause_session("s")
    ws = s["workspace"]
    os.rename(ws, ws + ".moved")
    os.symlink(outside, ws)
    with pytest.raises(ForbiddenError, match="a link replaced it"):
        await manager.resume_session("s")
    assert manager.get_session("s")["status"] == "paused"
    with pytest.raises(ForbiddenError, match="a link replaced it"):
        manager.get_transcript("s", "sh")
    manager.update_session("s", {"task": "T-1"})  # its metadata is not written there
    await manager.delete_session("s", purge=True)
    assert list(outside.iterdir()) == []
    assert os.path.isdir(ws + ".moved")  # the folder itself is left where the worker put it
    # A dir session's metadata lives in the state folder: deleting it removes that file even
    # when its folder now leads outside the allowed roots (else it would come back).
    (root / "project").mkdir()
    d = await manager.create_session({"kind": "dir", "name": "d", "path": "project"})
    os.rename(root / "project", root / "project.moved")
    os.symlink(outside, root / "project")
    await manager.delete_session("d")
    state = root / "mas-sessions" / ".mas" / "dir-sessions"
    assert not (state / f"{d['id']}.json").exists() and list(outside.iterdir()) == []


async def test_worker_names_are_unique_in_a_session(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    with pytest.raises(ConflictError, match="already exists"):
        await manager.create_worker("s", {"name": "sh", "kind": "terminal"})


async def test_unnamed_workers_of_one_backend_get_the_next_free_name(manager):
    """Before, the second `{"backend": "demo"}` of a session was a 409 (`demo` exists)."""
    spec = {"backend": "demo", "env": FAST}
    made = await manager.create_session(
        {
            "kind": "quick",
            "name": "s",
            "workers": [spec, {"name": "demo-2", "kind": "terminal"}, spec],
        }
    )
    assert [w["name"] for w in made["workers"]] == ["demo", "demo-2", "demo-3"]
    assert (await manager.create_worker("s", spec))["name"] == "demo-4"
    await manager.delete_worker("s", "demo-2")
    again = await manager.create_worker("s", {"kind": "terminal"})
    assert again["name"] == "shell"
    assert (await manager.create_worker("s", {"backend": "demo"}))["name"] == "demo-2"
    # A name that is given is still that name, or a conflict.
    with pytest.raises(ConflictError, match="already exists"):
        await manager.create_worker("s", {"name": "demo", "backend": "demo"})


async def test_worker_limits(make_manager):
    manager = make_manager(max_workers_per_session=2, max_workers=3)
    await manager.create_session({"kind": "quick", "name": "a"})
    await manager.create_session({"kind": "quick", "name": "b"})
    await manager.create_worker("a", {"name": "1", "kind": "terminal"})
    await manager.create_worker("a", {"name": "2", "kind": "terminal"})
    with pytest.raises(LimitError, match="max_workers_per_session"):
        await manager.create_worker("a", {"name": "3", "kind": "terminal"})
    await manager.create_worker("b", {"name": "1", "kind": "terminal"})
    with pytest.raises(LimitError, match="max_workers"):
        await manager.create_worker("b", {"name": "2", "kind": "terminal"})


async def test_oversized_input_is_refused(make_manager):
    manager = make_manager(max_input_bytes=1000)
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    with pytest.raises(TooLargeError, match="over the limit of 1000"):
        manager.write_input("s", "sh", "x" * 1001)


async def test_flood_keeps_memory_bounded(make_manager):
    manager = make_manager(output_buffer_bytes=256 * 1024, transcript_max_bytes=1024 * 1024)
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    result = await manager.send_message("s", "bot", "/flood 20000000", wait=True, timeout=120)
    assert result["timed_out"] is False
    live = manager.supervisor.live[manager.get_worker("s", "bot")["id"]]
    assert live.ring.total >= 20_000_000
    assert len(live.ring.snapshot()) <= 256 * 1024
    path = live.transcript.path
    assert os.path.getsize(path) <= 1024 * 1024 + 64 * 1024
    # Still responsive afterwards.
    result = await manager.send_message("s", "bot", "still there?", wait=True, timeout=30)
    assert "still there?" in result["reply"]


async def test_session_with_initial_workers_and_a_persona(manager):
    s = await manager.create_session(
        {
            "kind": "quick",
            "name": "s",
            "task": "CHURN-1",
            "workers": [{"name": "pm", "backend": "demo", "persona": "pm", "env": FAST}],
        }
    )
    assert [w["name"] for w in s["workers"]] == ["pm"]
    assert s["workers"][0]["persona_icon"]


async def test_a_second_persona_does_not_take_over_the_first_ones_file(make_manager, tmp_path):
    """An instructions file holds one persona: a second worker's section replaced the first's,
    so every agent reading the file (the first one too, on its next start) took the second's
    role and name; and a deleted worker's section went on steering the next agent."""
    manager = make_manager(
        backends={"demo": {"instructions_file": "BOT.md", "persona_delivery": "file"}}
    )
    session = await manager.create_session({"kind": "quick", "name": "s"})
    bot_md = os.path.join(session["workspace"], "BOT.md")
    lead = {"name": "lead", "backend": "demo", "persona": "pm", "env": FAST}
    await manager.create_worker("s", lead)
    await manager.create_worker(
        "s", {"name": "tester", "backend": "demo", "persona": "qa", "env": FAST}
    )
    with open(bot_md) as f:
        text = f.read()
    assert 'worker "lead"' in text and "Your role: product manager" in text
    assert "quality assurance" not in text and "tester" not in text
    # The second worker gets its persona as its first message.
    await until(
        lambda: "quality assurance" in screen_text(manager, "s", "tester"), what="first message"
    )
    # Deleting a worker takes its section out; another worker's section is not its own.
    await manager.delete_worker("s", "tester")
    with open(bot_md) as f:
        assert f.read() == text
    await manager.delete_worker("s", "lead")
    assert not os.path.exists(bot_md)
    # The name is free again, and the file with it.
    await manager.create_worker("s", {**lead, "persona": "qa"})
    with open(bot_md) as f:
        assert "quality assurance" in f.read()


async def test_a_child_left_by_an_exited_shell_is_ended_before_shutdown_returns(manager, tmp_path):
    """The task ending it was left pending when the loop closed ("Task was destroyed but it
    is pending"), and a child that ignores SIGHUP lived on after the server."""
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    pidfile = tmp_path / "child.pid"
    manager.write_input("s", "sh", f"(trap '' HUP; exec sleep 300) & echo $! > {pidfile}; exit\r")
    await until(lambda: manager.get_worker("s", "sh")["status"] == "exited", what="exit")
    pid = int(pidfile.read_text())
    await manager.shutdown()
    assert not alive(pid)


async def test_shell_exits_at_once(make_manager):
    manager = make_manager(backends={"quick": {"argv": ["true"], "kind": "terminal"}})
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "q", "backend": "quick"})
    await until(lambda: manager.get_worker("s", "q")["status"] == "exited", what="exit")
    assert manager.get_worker("s", "q")["exit_code"] == 0


@needs_tmux
async def test_tmux_worker_streams_and_can_be_attached_by_a_person(manager, root):
    await manager.create_session({"kind": "quick", "name": "s"})
    w = await manager.create_worker("s", {"name": "sh", "kind": "terminal", "runtime": "tmux"})
    assert w["runtime"] == "tmux" and w["tmux_session"].startswith("mas-")
    manager.write_input("s", "sh", "echo via-tmux-$((2*21))\r")
    await until(lambda: "via-tmux-42" in screen_text(manager, "s", "sh"), what="tmux echo")
    socket = manager.tmux_socket
    pane = subprocess.run(
        ["tmux", "-S", socket, "capture-pane", "-p", "-t", w["tmux_session"]],
        capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip
    assert "via-tmux-42" in pane
    assert w["tmux_attach"].startswith("tmux -S ")
    manager.write_input("s", "sh", "exit 4\r")
    await until(lambda: manager.get_worker("s", "sh")["status"] == "exited", what="tmux exit")
    # tmux sometimes marks the pane dead without ever recording its exit status (seen under
    # load with tmux 3.3a); then the code is unknown (null), never a wrong number.
    assert manager.get_worker("s", "sh")["exit_code"] in (4, None)


@needs_tmux
async def test_a_new_tmux_worker_does_not_redraw_the_others(manager):
    """Every tmux worker's start set the tmux server's options again, and each set-option
    redrew every attached client: the other workers got a screenful of output, so their
    agents read as busy (a stop was refused) and a waited reply had the screen in it."""
    await manager.create_session({"kind": "quick", "name": "s"})
    a = await manager.create_worker("s", {"name": "a", "kind": "terminal", "runtime": "tmux"})
    manager.write_input("s", "a", "echo ready-$((1+1))\r")
    await until(lambda: "ready-2" in screen_text(manager, "s", "a"), what="a ready")
    ring = manager.supervisor.live[a["id"]].ring
    before = ring.total
    await manager.create_worker("s", {"name": "b", "kind": "terminal", "runtime": "tmux"})
    manager.write_input("s", "a", "echo mark-$((2+2))\r")
    await until(lambda: b"mark-4" in ring.since(before), what="the mark")
    seen = ring.since(before)
    assert len(seen[: seen.index(b"echo mark")]) < 64, seen  # a redraw was 200-430 bytes


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "", "kind": "terminal"}, "worker name must not be empty"),
        ({"name": "w", "backend": ""}, "backend must be a non-empty string"),
        ({"name": "w", "backend": False}, "backend must be a non-empty string"),
        ({"name": "w", "kind": "terminal", "runtime": ""}, "runtime must be one of"),
        ({"name": "w", "kind": "terminal", "runtime": False}, "runtime must be one of"),
        # null is "not given" only where the API says a field may be null (persona).
        ({"name": None, "kind": "terminal"}, "'name' must not be null"),
        ({"name": "w", "kind": None}, "'kind' must not be null"),
        ({"name": "w", "backend": None}, "'backend' must not be null"),
        ({"name": "w", "kind": "terminal", "runtime": None}, "'runtime' must not be null"),
        ({"name": "w", "kind": "terminal", "env": None}, "'env' must not be null"),
        ({"name": "w", "kind": "terminal", "cols": None}, "'cols' must not be null"),
        (
            {"name": "123e4567-e89b-12d3-a456-426614174000", "kind": "terminal"},
            "looks like an id",
        ),
        # Before it was refused, "\ud800" made the forked child fail in exec and go on
        # running the server's event loop.
        ({"name": "w", "kind": "terminal", "env": {"A": "\ud800"}}, "'A' is not valid Unicode"),
        ({"name": "w", "kind": "terminal", "env": {"A": "\udc80"}}, "'A' is not valid Unicode"),
        ({"name": "w", "kind": "terminal", "env": {"A": "x" * 40000}}, "'A' is longer than"),
    ],
)
async def test_wrong_values_in_a_worker_spec_are_refused_not_defaulted(manager, spec, message):
    await manager.create_session({"kind": "quick", "name": "s"})
    with pytest.raises(InvalidError, match=message):
        await manager.create_worker("s", spec)
    with pytest.raises(InvalidError, match=message):
        await manager.create_session({"name": "t", "workers": [spec]})
    assert manager.list_workers("s") == []
    assert [s["name"] for s in manager.list_sessions()] == ["s"]


async def test_null_persona_is_no_persona(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    worker = await manager.create_worker("s", {"name": "w", "kind": "terminal", "persona": None})
    assert worker["persona"] is None


@pytest.mark.parametrize("text", ["\ud800", "x\udfff", "\udc80", "ok\ud800ok"])
async def test_input_that_is_not_unicode_is_refused(manager, text):
    # "\udc80" would otherwise reach the terminal as the raw byte 0x80.
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    with pytest.raises(InvalidError, match="data is not valid Unicode"):
        manager.write_input("s", "sh", text)
    with pytest.raises(InvalidError, match="text is not valid Unicode"):
        await manager.send_message("s", "sh", text)
    assert manager.get_worker("s", "sh")["status"] == "running"


# An agent whose prompt is `ready> ` and which, for each line, prints only terminal modes
# (as a `tmux attach` client does after attaching): the cursor hidden, its blink, shown again.
MODES_AGENT = (
    "import sys, termios\n"
    "a = termios.tcgetattr(0); a[3] &= ~termios.ECHO; termios.tcsetattr(0, termios.TCSANOW, a)\n"
    "sys.stdout.write('ready> '); sys.stdout.flush()\n"
    "for line in sys.stdin:\n"
    "    sys.stdout.write('\\x1b[?25l\\x1b[?12l\\x1b[?25h'); sys.stdout.flush()\n"
)


async def test_output_that_only_sets_terminal_modes_does_not_make_an_agent_busy(make_manager):
    """A tmux agent went idle -> busy -> idle twice after every attach (server restarts
    included), in its activity log, for the tmux client's mode changes, which show nothing."""
    backend = {"argv": [sys.executable, "-c", MODES_AGENT], "patterns": {"idle": [r"ready>\Z"]}}
    manager = make_manager(backends={"modes": {**backend, "idle_stable_seconds": 0.3}})
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "modes"})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")
    states, output, changed = [], asyncio.Event(), asyncio.Event()

    def listen(kind, data):
        if kind == "activity":
            states.append(data)
            changed.set()
        elif "\x1b[?25h" in data:
            output.set()

    _, detach = manager.attach("s", "bot", listen)
    manager.write_input("s", "bot", "x\r")
    await asyncio.wait_for(output.wait(), 10)
    # The activity is checked within idle_stable_seconds (0.3 s) of output: a busy would come
    # within that (the old code's did, then idle again); none comes.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(changed.wait(), 1.0)
    assert states == [] and manager.get_worker("s", "bot")["activity"] == "idle"
    detach()
