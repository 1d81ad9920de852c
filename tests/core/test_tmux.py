"""tmux workers: each worker has a tmux session of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import subprocess

import pexpect
import pytest

from mas_jupyter.core.runtimes.tmux import session_name
from mas_jupyter.core.screen import Screen
from tests.conftest import until
from tests.core.test_workers import screen_text

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_every_worker_name_has_its_own_tmux_name():
    sid = "0123abcd-0000-4000-8000-000000000000"
    names = ["x.y", "x_y", "x-y", "x.y.z", "x_y_z", "x.y_z", "x_y.z", "x._y", "x_.y"]
    tmux_names = [session_name(sid, n) for n in names]
    assert len(set(tmux_names)) == len(names), tmux_names
    assert all("." not in t and ":" not in t for t in tmux_names)  # tmux refuses both


@needs_tmux
async def test_a_new_worker_never_ends_another_workers_tmux_session(manager):
    # Before, "x.y" and "x_y" both became "mas-<id>-x_y": creating the second killed the first.
    await manager.create_session({"kind": "quick", "name": "s"})
    spec = {"kind": "terminal", "runtime": "tmux"}
    first = await manager.create_worker("s", {"name": "x.y", **spec})
    second = await manager.create_worker("s", {"name": "x_y", **spec})
    assert first["tmux_session"] != second["tmux_session"]
    await manager.delete_worker("s", "x_y")
    assert manager.get_worker("s", "x.y")["status"] == "running"
    manager.write_input("s", "x.y", "echo alive-$((6*7))\r")
    await until(
        lambda: "alive-42" in "\n".join(manager.get_screen("s", "x.y")["lines"]), what="echo"
    )


@needs_tmux
@pytest.mark.parametrize("runtime", ["pty", "tmux"])
async def test_a_worker_ended_by_a_signal_reports_the_signal(manager, runtime):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal", "runtime": runtime})
    manager.write_input("s", "sh", "kill -9 $$\r")
    await until(lambda: manager.get_worker("s", "sh")["status"] == "exited", what="the exit")
    worker = manager.get_worker("s", "sh")
    assert (worker["exit_code"], worker["exit_signal"]) == (None, 9), worker
    assert worker["exit_reason"] == "crashed"


@needs_tmux
@pytest.mark.parametrize("runtime", ["pty", "tmux"])
async def test_a_paused_worker_reports_how_the_pause_ended_it(manager, runtime):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal", "runtime": runtime})
    await manager.pause_session("s")
    worker = manager.get_worker("s", "sh")
    assert worker["exit_reason"] == "paused", worker
    assert (worker["exit_code"], worker["exit_signal"]) == (None, 1), worker  # SIGHUP


def _command_lines() -> str:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(lines)


@needs_tmux
@pytest.mark.parametrize("tail", ["", ";"])  # tmux read a value ending in ';' as a separator
async def test_a_tmux_workers_environment_is_on_no_command_line(manager, tail):
    # Every user can read a process's command line (`ps`); tmux keeps the command line that
    # started its server. A worker's env (an API key) must reach the worker and stay off it.
    secret = "sk-secret-4242"
    tricky = 'it\'s $(touch pwned) `x` "q"\nline two; \\ end' + tail
    await manager.create_session({"kind": "quick", "name": "s"})
    env = {"MY_API_KEY": secret, "TRICKY": tricky}
    await manager.create_worker(
        "s", {"name": "sh", "kind": "terminal", "runtime": "tmux", "env": env}
    )
    manager.write_input(
        "s", "sh", 'printf %s "$MY_API_KEY" > key.out; printf %s "$TRICKY" > tricky.out\r'
    )
    workspace = pathlib.Path(manager.get_session("s")["workspace"])
    await until(lambda: (workspace / "tricky.out").exists(), what="the worker writing its env")
    await until(lambda: (workspace / "key.out").read_text() == secret, what="the key")
    assert (workspace / "tricky.out").read_text() == tricky
    assert not (workspace / "pwned").exists()
    assert secret not in _command_lines()
    assert os.listdir(os.path.join(manager.workspaces.state_dir, "tmux-env")) == []  # read


def _rendered_output(manager, session: str, worker: str) -> str:
    """What a console that replays the worker's output shows (a VT emulator, as xterm.js)."""
    screen = Screen(120, 40)
    screen.feed(manager.get_output(session, worker)["data"].encode())
    return "\n".join(screen.lines())


@needs_tmux
@pytest.mark.parametrize("how", ["exits", "paused", "exits while the server is down"])
async def test_the_console_of_an_ended_tmux_worker_shows_what_it_printed_last(
    make_manager, root, how
):
    # The `tmux attach` client's goodbye (it clears its screen, leaves the alternate screen
    # and prints "[exited]") was kept as the worker's output: a console opened afterwards,
    # or `GET .../output` rendered, showed "[exited]" and nothing the worker printed.
    manager = make_manager()
    await manager.create_session({"kind": "quick", "name": "s"})
    w = await manager.create_worker("s", {"name": "sh", "kind": "terminal", "runtime": "tmux"})
    manager.write_input("s", "sh", "echo last-words-$((6*7))\r")
    await until(lambda: "last-words-42" in screen_text(manager, "s", "sh"), what="the echo")
    if how == "paused":
        await manager.pause_session("s")
    elif how == "exits":
        manager.write_input("s", "sh", "exit 3\r")
    else:
        await manager.shutdown()  # the tmux worker lives on, and exits while nobody watches
        tmux = ["tmux", "-S", str(root.parent / "tmux.sock")]
        target = f"={w['tmux_session']}:"
        subprocess.run([*tmux, "send-keys", "-t", target, "exit 3", "Enter"], check=True)

        def pane_dead() -> bool:
            shown = [*tmux, "display-message", "-p", "-t", target, "#{pane_dead}"]
            return subprocess.run(shown, capture_output=True, text=True).stdout.strip() == "1"

        await until(pane_dead, what="the pane's end")
        manager = make_manager()
        await manager.recover()
    await until(lambda: manager.get_worker("s", "sh")["status"] == "exited", what="the end")
    shown = _rendered_output(manager, "s", "sh")
    assert "last-words-42" in shown and "[exited]" not in shown, shown


@needs_tmux
@pytest.mark.parametrize("how", ["detach-client", "another attach -d"])
async def test_a_tmux_worker_whose_attach_client_ends_is_attached_again(manager, root, how):
    # A person detaching every client (or taking the session over with `attach -d`) ended the
    # server's `tmux attach` client: the worker stayed running, its input went nowhere and its
    # console froze until the server restarted.
    await manager.create_session({"kind": "quick", "name": "s"})
    w = await manager.create_worker("s", {"name": "sh", "kind": "terminal", "runtime": "tmux"})
    tmux = ["tmux", "-S", str(root.parent / "tmux.sock")]

    def clients() -> str:
        shown = [*tmux, "list-clients", "-t", f"={w['tmux_session']}"]
        return subprocess.run(shown, capture_output=True, text=True).stdout

    await until(clients, what="the server's client attached")
    if how == "detach-client":
        subprocess.run([*tmux, "detach-client", "-s", f"={w['tmux_session']}"], check=True)
    else:  # someone attaches with -d (detaching the others), then leaves

        def take_over_and_leave() -> None:
            person = pexpect.spawn(tmux[0], [*tmux[1:], "attach", "-d", "-t", w["tmux_session"]])
            person.expect(r"\x1b\[1;\d+H", timeout=20)  # the pane drawn: attached
            person.sendcontrol("b")  # tmux's prefix, then d: detach
            person.send("d")
            person.expect(pexpect.EOF, timeout=20)

        await asyncio.to_thread(take_over_and_leave)

    def detached(times: int) -> bool:  # what a client prints as it leaves: it is gone
        return manager.get_output("s", "sh")["data"].count("[detached") == times

    for n in (1, 2):  # a second round: the new client is watched too
        await until(lambda n=n: detached(n), what="the client's goodbye")
        manager.write_input("s", "sh", f"echo back-{n}-$((6*7))\r")
        await until(lambda n=n: f"back-{n}-42" in screen_text(manager, "s", "sh"), what="echo")
        if n == 1:
            subprocess.run([*tmux, "detach-client", "-s", f"={w['tmux_session']}"], check=True)
    assert manager.get_worker("s", "sh")["status"] == "running"
