"""A server that owns workers is killed with SIGKILL; a new manager on the same store recovers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from mas_jupyter.core import processes
from mas_jupyter.core.errors import UnavailableError
from tests.conftest import PLAIN_BASH
from tests.core.test_workers import FAST, screen_text, until

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

OWNER = textwrap.dedent(
    """
    import asyncio, json, sys
    from mas_jupyter.core.manager import MASManager

    STUBBORN = [sys.executable, "-c",
                "import signal,time\\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\\n"
                "print('stubborn up', flush=True)\\ntime.sleep(600)"]

    async def main():
        m = MASManager(root_dir=sys.argv[1], tmux_socket=sys.argv[2],
                       backends={"stubborn": {"argv": STUBBORN, "kind": "terminal"},
                                 "shell": {"argv": ["bash", "--norc", "--noprofile", "-i"]}})
        m.start()
        await m.recover()
        await m.create_session({"kind": "quick", "name": "s"})
        pty = await m.create_worker("s", {"name": "stubborn", "backend": "stubborn"})
        # Only once it ignores SIGHUP is it a real orphan-to-be.
        while "stubborn up" not in m.get_output("s", "stubborn")["data"]:
            await asyncio.sleep(0.01)
        info = {"pty": pty}
        if sys.argv[3] == "tmux":
            info["tmux"] = await m.create_worker(
                "s", {"name": "tm", "kind": "terminal", "runtime": "tmux"})
            m.write_input("s", "tm", "echo before-crash\\r")
        print(json.dumps(info), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


def start_owner(root, socket, with_tmux: bool):
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(root), socket, "tmux" if with_tmux else "pty"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line, "the owner process did not start"
    return proc, json.loads(line)


@pytest.mark.parametrize("with_tmux", [pytest.param(True, marks=needs_tmux), False])
async def test_recovery_after_the_owner_is_killed(make_manager, root, with_tmux):
    socket = str(root.parent / "tmux.sock")
    owner, info = start_owner(root, socket, with_tmux)
    stubborn = info["pty"]
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    owner.stdout.close()
    assert processes.is_alive(stubborn["pid"])  # an orphan, left by the dead server
    # As if the session had been active for 1,000 s and the server last marked itself alive
    # (its heartbeat on the root's lock file) 100 s ago, then died.
    [lock] = root.rglob("engine.lock")
    [db] = root.rglob("state.sqlite")
    t = time.time()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE sessions SET active_since = ? WHERE name = 's'", (t - 1000,))
    os.utime(lock, (t - 100, t - 100))

    stubborn_argv = [sys.executable, "-c", "import time\ntime.sleep(600)"]
    manager = make_manager(
        tmux_socket=socket, backends={"stubborn": {"argv": stubborn_argv, "kind": "terminal"}}
    )
    report = await manager.recover()
    assert report["workers"]["orphans_ended"] == 1
    assert not processes.is_alive(stubborn["pid"])
    w = manager.get_worker("s", "stubborn")
    assert w["status"] == "exited" and w["exit_reason"] == "interrupted"
    if with_tmux:
        assert report["workers"]["reattached"] == 1
        tm = manager.get_worker("s", "tm")
        assert tm["status"] == "running" and tm["pid"] == info["tmux"]["pid"]
        manager.write_input("s", "tm", "echo after-crash-$((40+2))\r")
        await until(lambda: "after-crash-42" in screen_text(manager, "s", "tm"), what="tmux")
        # Its tmux worker runs on, so it stays active; the pty worker is restarted on demand.
        assert manager.get_session("s")["status"] == "active" and report["paused"] == 0
        assert manager.get_session("s")["active_seconds"] >= 1000  # it ran all along
        # Its log says it lived through the restart (before: nothing after its start).
        entries = [(a["type"], a["worker_id"], a["detail"]) for a in manager.list_activities("s")]
        assert ("worker-reattached", tm["id"], {"name": "tm"}) in entries
        restarted = await manager.restart_worker("s", "stubborn")
    else:
        # Nothing of it runs any more: it comes back paused, and one resume restarts it.
        assert manager.get_session("s")["status"] == "paused" and report["paused"] == 1
        # Active until the server was last known alive, not until this restart.
        assert 899 <= manager.get_session("s")["active_seconds"] <= 901
        last = manager.list_activities("s")[-1]
        assert (last["type"], last["detail"]) == ("paused", {"reason": "interrupted"})
        await manager.resume_session("s")
        restarted = manager.get_worker("s", "stubborn")
    assert restarted["status"] == "running"
    await manager.delete_session("s")
    assert not os.path.exists(f"/proc/{restarted['pid']}/status") or not processes.is_alive(
        restarted["pid"]
    )


async def test_the_transcript_of_a_worker_killed_with_its_server_ends_and_says_why(
    make_manager, root
):
    """A worker that died with a killed server: its transcript ends with an `exit` saying
    `interrupted` (before, it stopped mid-run, and the next run's `start` followed as if the
    first had never ended); the transcript as the client shows it, and `attach`, say so in
    words, and a pause's end reads as a pause, not `code None signal 1`."""
    from mas_jupyter.kernel.outputs import Transcript

    owner, _info = start_owner(root, str(root.parent / "tmux.sock"), False)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    owner.stdout.close()
    stubborn_argv = [sys.executable, "-c", "import time\ntime.sleep(600)"]
    manager = make_manager(backends={"stubborn": {"argv": stubborn_argv, "kind": "terminal"}})
    await manager.recover()
    records = manager.get_transcript("s", "stubborn")["records"]
    assert [r["type"] for r in records][0] == "start"
    last = records[-1]
    assert (last["type"], last["reason"]) == ("exit", "interrupted"), records
    shown = repr(Transcript(None, manager.get_transcript("s", "stubborn")))
    assert shown.endswith("--- exit: stopped: it did not survive the server's restart"), shown

    await manager.resume_session("s")
    await manager.pause_session("s")
    records = manager.get_transcript("s", "stubborn")["records"]
    assert [r["type"] for r in records].count("exit") == 2
    assert (records[-1]["type"], records[-1]["reason"]) == ("exit", "paused")
    shown = repr(Transcript(None, manager.get_transcript("s", "stubborn")))
    assert shown.endswith("--- exit: stopped: its session was paused"), shown


@needs_tmux
async def test_recovery_reads_every_tmux_pane_at_once(make_manager, root):
    """What happened to tmux workers while no server ran: one ran on, one exited, one's
    tmux session was killed; later the whole tmux server was."""
    socket = str(root.parent / "tmux.sock")

    def tmux(*args: str) -> str:
        done = subprocess.run(["tmux", "-S", socket, *args], capture_output=True, timeout=10)
        return done.stdout.decode().strip()

    first = make_manager()
    await first.create_session({"kind": "quick", "name": "s"})
    made = {}
    for name in ("runs", "ends", "killed"):
        spec = {"name": name, "kind": "terminal", "runtime": "tmux"}
        made[name] = await first.create_worker("s", spec)
    await first.shutdown()  # the tmux workers live on
    ends, killed = made["ends"]["tmux_session"], made["killed"]["tmux_session"]
    tmux("send-keys", "-t", f"={ends}:", "exit 3", "Enter")
    tmux("kill-session", "-t", f"={killed}")
    await until(lambda: tmux("display-message", "-p", "-t", f"={ends}:", "#{pane_dead}") == "1",
                what="the pane to die while no server runs")  # fmt: skip

    second = make_manager()
    report = await second.recover()
    assert report["workers"] == {"reattached": 2, "interrupted": 1, "orphans_ended": 0}
    runs = second.get_worker("s", "runs")
    assert runs["status"] == "running" and runs["pid"] == made["runs"]["pid"]
    second.write_input("s", "runs", "echo still-$((40+2))\r")
    await until(lambda: "still-42" in screen_text(second, "s", "runs"), what="typing")
    await until(lambda: second.get_worker("s", "ends")["status"] == "exited", what="the exit")
    assert second.get_worker("s", "ends")["exit_code"] == 3
    assert second.get_worker("s", "killed")["exit_reason"] == "interrupted"
    await second.shutdown()

    tmux("kill-server")  # no tmux server at all: nothing to attach to
    third = make_manager()
    report = await third.recover()
    # (its shell may still be dying of the SIGHUP: then it is ended as an orphan too)
    assert report["workers"]["reattached"] == 0 and report["workers"]["interrupted"] == 1
    assert third.get_worker("s", "runs")["exit_reason"] == "interrupted"


@needs_tmux
async def test_a_tmux_worker_of_a_backend_made_invalid_runs_on_but_is_not_restarted(make_manager):
    """The server restarts with a typo in the configuration of a running worker's backend:
    the worker is reattached (a typo does not end work in progress), its backend is listed
    unavailable, and a restart is refused before the process is ended."""
    mysh = {"argv": PLAIN_BASH, "kind": "terminal"}
    first = make_manager(backends={"mysh": mysh})
    await first.create_session({"kind": "quick", "name": "s"})
    w = await first.create_worker("s", {"name": "sh", "backend": "mysh", "runtime": "tmux"})
    await first.shutdown()

    second = make_manager(backends={"mysh": {**mysh, "paste": "fancy"}})
    report = await second.recover()
    assert report["workers"]["reattached"] == 1
    (listed,) = [b for b in second.list_backends() if b["name"] == "mysh"]
    assert listed["available"] is False and listed["kind"] == "terminal"
    assert listed["reason"].startswith("invalid configuration (c.MASManager.backends['mysh'])")
    second.write_input("s", "sh", "echo still-$((40+2))\r")
    await until(lambda: "still-42" in screen_text(second, "s", "sh"), what="typing")
    with pytest.raises(UnavailableError, match="backend 'mysh' is unavailable: invalid conf"):
        await second.restart_worker("s", "sh")
    again = second.get_worker("s", "sh")
    assert again["status"] == "running" and again["pid"] == w["pid"]


async def test_output_of_a_worker_that_did_not_survive_a_restart_is_read_back(make_manager):
    """A paused worker and a pty worker the server's stop ended: after a restart, their output
    comes from their transcripts (a console replays it: tests/reliability/test_server_kill.py)."""
    first = make_manager()
    before = {}
    for name in ("paused", "ended"):
        await first.create_session({"kind": "quick", "name": name})
        await first.create_worker(name, {"name": "sh", "kind": "terminal"})
        first.write_input(name, "sh", f"echo {name}-$((6*7))\r")
        await until(lambda n=name: f"{n}-42" in first.get_output(n, "sh")["data"], what="echo")
    await first.pause_session("paused")
    for name in ("paused", "ended"):
        before[name] = first.get_output(name, "sh")
    await first.shutdown()

    second = make_manager()
    await second.recover()
    for name in ("paused", "ended"):
        assert second.get_worker(name, "sh")["status"] != "running"
        after = second.get_output(name, "sh")
        assert f"{name}-42" in after["data"]
        assert before[name]["data"] in after["data"]  # and what bash printed as it ended
        assert after["end"] >= before[name]["end"] > 0
        assert after["start"] == after["end"] - len(after["data"].encode())
        newest = second.get_output(name, "sh", tail=10)
        assert newest["data"] == after["data"][-10:] and newest["end"] == after["end"]


async def test_a_session_the_server_stop_left_without_workers_comes_back_paused(make_manager):
    """A clean server stop ends pty workers: their session is paused (its active time stops
    then), so after the restart one resume brings its agents back, continuing their
    conversation. A session with a worker that had ended on its own, or with none, is not
    the stop's doing and stays active."""
    first = make_manager()
    await first.create_session({"kind": "quick", "name": "work"})
    await first.create_worker("work", {"name": "agent", "backend": "demo", "env": FAST})
    await first.create_worker("work", {"name": "sh", "kind": "terminal"})
    await until(lambda: first.get_worker("work", "agent")["activity"] == "idle", what="idle")
    await first.send_message("work", "agent", "remember the churn table", wait=True, timeout=30)
    first.write_input("work", "sh", "echo before-$((6*7))\r")
    await until(lambda: "before-42" in first.get_output("work", "sh")["data"], what="echo")
    await first.create_session({"kind": "quick", "name": "done"})
    await first.create_worker("done", {"name": "sh", "kind": "terminal"})
    first.write_input("done", "sh", "exit 4\r")
    await until(lambda: first.get_worker("done", "sh")["status"] == "exited", what="the exit")
    await first.create_session({"kind": "quick", "name": "empty"})
    await first.shutdown()

    second = make_manager()
    report = await second.recover()
    assert report["paused"] == 0  # paused by the stop, before the restart
    work = second.get_session("work")
    assert work["status"] == "paused"
    frozen = work["active_seconds"]
    last = second.list_activities("work")[-1]
    assert (last["type"], last["detail"]) == ("paused", {"reason": "server stopped"})
    assert second.get_session("done")["status"] == "active"
    assert second.get_session("empty")["status"] == "active"
    assert second.get_session("work")["active_seconds"] == frozen  # not counting while paused

    resumed = await second.resume_session("work")
    assert resumed["status"] == "active"
    assert [w["status"] for w in second.list_workers("work")] == ["running", "running"]
    await until(
        lambda: "continuing conversation (1 earlier" in screen_text(second, "work", "agent"),
        what="the agent to continue its conversation",
    )


@needs_tmux
async def test_tmux_workers_the_rebuilt_database_does_not_know_are_ended(make_manager, root):
    """The state database lost, its sessions came back from their workspaces, paused, and
    their tmux workers ran on forever: neither re-attached nor ended."""
    socket = str(root.parent / "tmux.sock")
    first = make_manager()
    await first.create_session({"kind": "quick", "name": "s"})
    spec = {"name": "sh.1", "kind": "terminal", "runtime": "tmux"}
    made = await first.create_worker("s", spec)
    await first.shutdown()  # the tmux worker lives on
    # Another server's worker on the same tmux socket, of a session this store never had.
    foreign = "mas-0badcafe-w"
    subprocess.run(
        ["tmux", "-S", socket, "new-session", "-d", "-s", foreign, "sleep 600"], timeout=10
    )
    for leftover in (root / "mas-sessions" / ".mas").glob("state.sqlite*"):
        leftover.unlink()

    second = make_manager()
    report = await second.recover()
    assert report["reindexed"] == 1 and report["workers"]["orphans_ended"] == 1
    assert not processes.is_alive(made["pid"])
    listed = subprocess.run(
        ["tmux", "-S", socket, "list-sessions", "-F", "#{session_name}"],
        capture_output=True, text=True, timeout=10,
    ).stdout.split()  # fmt: skip
    assert listed == [foreign]
    assert second.get_session("s")["status"] == "paused"
    last = second.list_activities("s")[-1]
    assert (last["type"], last["detail"]) == (
        "worker-exited",
        {"name": "sh.1", "reason": "interrupted"},
    )
    subprocess.run(["tmux", "-S", socket, "kill-session", "-t", f"={foreign}"], timeout=10)


OWNER_HEAD = textwrap.dedent(
    """
    import asyncio, json, os, re, sys
    from mas_jupyter.core.manager import MASManager

    async def main():
        m = MASManager(root_dir=sys.argv[1], tmux_socket=sys.argv[2],
                       backends={"shell": {"argv": ["bash", "--norc", "--noprofile", "-i"]}})
        m.start()
        await m.recover()
        await m.create_session({"kind": "quick", "name": "s"})
    """
)


def owner_script(body: str) -> str:
    """A script that owns a manager with a session `s`, then runs `body` in its main()."""
    steps = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f"{OWNER_HEAD}{steps}\n\nasyncio.run(main())\n"


RESUMER = owner_script(
    """
    await m.create_worker("s", {"name": "tm", "kind": "terminal", "runtime": "tmux"})
    if sys.argv[3] == "resume":
        await m.pause_session("s")
    os.environ["MAS_FAULT_POINT"] = "worker:process-started"
    print("dying", flush=True)
    if sys.argv[3] == "resume":
        await m.resume_session("s")
    else:
        await m.restart_worker("s", "tm")
    """
)


@needs_tmux
@pytest.mark.parametrize("step", ["resume", "restart"])
async def test_a_tmux_worker_started_just_before_a_kill_is_not_lost(make_manager, root, step):
    """The server is killed after it started a tmux worker (a resume, a restart) and before
    its row said so: the row said `exited`, and recovery looks only at rows that did not, so
    that tmux session lived on, unknown, through a `stop` too; its transcript had a start
    and no end. Now it is re-attached: the session is active and the worker runs."""
    socket = str(root.parent / "tmux.sock")
    owner = subprocess.run(
        [sys.executable, "-c", RESUMER, str(root), socket, step],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert owner.returncode == -signal.SIGKILL and "dying" in owner.stdout, owner.stderr

    manager = make_manager(tmux_socket=socket)
    report = await manager.recover()
    assert report["workers"]["reattached"] == 1, report
    tm = manager.get_worker("s", "tm")
    assert tm["status"] == "running" and processes.is_alive(tm["pid"]), tm
    manager.write_input("s", "tm", "echo alive-$((40+2))\r")
    await until(lambda: "alive-42" in screen_text(manager, "s", "tm"), what="typing")
    await manager.stop_session("s", force=True)
    assert not processes.is_alive(tm["pid"])
    listed = subprocess.run(
        ["tmux", "-S", socket, "list-sessions"], capture_output=True, text=True, timeout=10
    )
    assert tm["tmux_session"] not in listed.stdout


@needs_tmux
async def test_a_tmux_session_left_by_an_exited_worker_is_removed_by_recovery(make_manager, root):
    """A worker whose end was recorded, but not the removal of its tmux session (the server
    was killed between the two; here its tmux session is made again by hand), or one of a
    paused session started again by a resume the kill cut short: nothing would ever end it."""
    socket = str(root.parent / "tmux.sock")
    first = make_manager()
    await first.create_session({"kind": "quick", "name": "s"})
    made = await first.create_worker("s", {"name": "tm", "kind": "terminal", "runtime": "tmux"})
    await first.pause_session("s")
    await first.shutdown()
    subprocess.run(
        ["tmux", "-S", socket, "new-session", "-d", "-s", made["tmux_session"], "sleep 600"],
        timeout=10,
    )  # fmt: skip

    manager = make_manager()
    report = await manager.recover()
    assert report["workers"]["orphans_ended"] == 1, report
    assert manager.get_worker("s", "tm")["status"] == "exited"
    assert manager.get_session("s")["status"] == "paused"
    listed = subprocess.run(
        ["tmux", "-S", socket, "list-sessions"], capture_output=True, text=True, timeout=10
    )
    assert made["tmux_session"] not in listed.stdout


BACKGROUND = owner_script(
    """
    w = await m.create_worker("s", {"name": "sh", "kind": "terminal"})
    m.write_input("s", "sh", "nohup sleep 600 >/dev/null 2>&1 & echo bg=$!\\r")
    while not (found := re.search(r"bg=([0-9]+)\\r\\n", m.get_output("s", "sh")["data"])):
        await asyncio.sleep(0.01)
    bg = int(found[1])
    # Until nohup has run sleep, the hang-up would end it too.
    while open(f"/proc/{bg}/cmdline", "rb").read().split(b"\\0")[0] != b"sleep":
        await asyncio.sleep(0.01)
    print(json.dumps({"shell": w["pid"], "background": bg}), flush=True)
    await asyncio.sleep(600)
    """
)


async def test_a_pty_workers_background_children_do_not_outlive_a_killed_server(make_manager, root):
    """`kill -9` of the server: the worker's shell dies of the hang-up, its `nohup`
    children do not, and recovery ended a tree only when its leader lived: they ran on."""
    owner = subprocess.Popen(
        [sys.executable, "-c", BACKGROUND, str(root), str(root.parent / "tmux.sock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    info = json.loads(owner.stdout.readline())
    # Someone else's process in a session of its own: never touched.
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    owner.stdout.close()
    await until(lambda: not processes.is_alive(info["shell"]), what="the shell's hang-up")
    assert processes.is_alive(info["background"])

    try:
        manager = make_manager()
        report = await manager.recover()
        assert report["workers"]["orphans_ended"] == 1, report
        assert not processes.is_alive(info["background"])
        assert processes.is_alive(stranger.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["background"], signal.SIGKILL)
        stranger.kill()
        stranger.wait(timeout=10)
