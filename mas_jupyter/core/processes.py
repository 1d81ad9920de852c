"""Process facts from /proc and ending whole process trees without blocking.

A worker's process is a session leader (the PTY makes it one), and everything it starts
inherits its session id even when job control moves it to another process group. So "the
worker's processes" are the members of that session, found in /proc, and ending a worker
signals every one of them, escalating SIGHUP, SIGTERM, SIGKILL with awaited timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot): with the pid, it names one process."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def is_alive(pid: int, started: int | None = None) -> bool:
    """Whether pid runs (and, if given, is the process that started at `started`)."""
    fields = stat_fields(pid)
    if not fields or fields[0] == "Z":
        return False
    return started is None or start_time(pid) == started


def zombie_status(pid: int, started: int | None = None) -> tuple[int | None, int | None] | None:
    """How an exited process that its parent has not reaped yet ended: (exit code, None) or
    (None, signal); None if pid is not such a zombie (or, with `started`, another process).

    The kernel shows the wait status in /proc/<pid>/stat (field 52) until the parent reaps.
    """
    fields = stat_fields(pid)
    if not fields or fields[0] != "Z" or len(fields) < 50 or not fields[49].isdigit():
        return None
    if started is not None and start_time(pid) != started:
        return None
    status = int(fields[49])
    return (None, status & 0x7F) if status & 0x7F else ((status >> 8) & 0xFF, None)


def session_members(sid: int) -> list[int]:
    """Every live process whose session id is sid."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            # fields: state, ppid, pgrp, session, ...
            if fields and len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
                members.append(int(entry))
    return members


def leftovers(sid: int, started: int | None, marks: dict[str, str]) -> dict[int, int]:
    """What is left of a worker whose session leader is gone (its background children): the
    members of its session that started no earlier than it and whose environment has every
    one of `marks`; {pid: start time}.

    A pid is reused, and so is a session id; these three together name the worker's own, so
    nobody else's process is ever signalled.
    """
    wanted = [os.fsencode(f"{k}={v}") for k, v in marks.items()]
    found = {}
    for pid in session_members(sid):
        began = start_time(pid)
        if began is None or (started is not None and began < started):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = set(fh.read().split(b"\0"))
        except OSError:
            continue
        if all(w in env for w in wanted):
            found[pid] = began
    return found


def gits_at(folder: str) -> dict[int, int]:
    """git processes working on `folder`: run in it, or naming it (`git worktree add FOLDER`,
    left running by a server that was killed); {pid: start time}."""
    folder = os.path.realpath(folder)
    named = os.fsencode(folder)
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as fh:
                if fh.read().strip() != b"git":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if named in args or cwd == folder or cwd.startswith(folder + os.sep):
            began = start_time(int(entry))
            if began is not None:
                found[int(entry)] = began
    return found


async def end_leftovers(found: dict[int, int], timeout: float) -> None:
    """End those processes (as `leftovers` names them), escalating SIGHUP, SIGTERM, SIGKILL."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, began in found.items() if is_alive(pid, began)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        delay = 0.002
        while time.monotonic() < deadline and any(is_alive(p, found[p]) for p in alive):
            await asyncio.sleep(delay)  # not our children: no exit event to wait on
            delay = min(delay * 2, 0.05)


def _signal_tree(sid: int, sig: int) -> int:
    """Signal every member of the session and its process group; returns how many there were."""
    members = session_members(sid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(members)


# Trees being ended in the background; the loop keeps only weak references to its tasks.
_ending: set[asyncio.Task] = set()
LEFTOVER_SECONDS = 1.0  # how long a background tree gets per signal


def end_tree_soon(sid: int) -> None:
    """End what is left of a worker's process tree (its background children) in the
    background; `wait_for_ended` lets a shutdown see it through."""
    task = asyncio.ensure_future(end_tree(sid, LEFTOVER_SECONDS))
    _ending.add(task)
    task.add_done_callback(_ending.discard)


async def wait_for_ended() -> None:
    """Wait (bounded) for the trees this loop is ending in the background."""
    loop = asyncio.get_running_loop()
    tasks = [t for t in _ending if t.get_loop() is loop]
    if tasks:
        await asyncio.wait(tasks, timeout=3 * LEFTOVER_SECONDS + 0.5)


async def end_tree(
    sid: int,
    timeout: float,
    gone: asyncio.Event | None = None,
    signals: tuple[int, ...] = (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL),
) -> int | None:
    """End a worker's whole process tree; returns the signal that finished it (None: was gone).

    `gone`, when given, is set by the caller's exit watcher as soon as the leader is reaped,
    so a process that exits on SIGHUP costs milliseconds, not a fixed sleep.
    """
    for sig in signals:
        # Scanning /proc costs milliseconds on a busy machine: off the loop, so a hundred
        # workers ending at once never stall everyone else's output.
        remaining = await asyncio.to_thread(_signal_tree, sid, sig)
        if not remaining and (gone is None or gone.is_set()):
            return None if sig == signals[0] else sig
        if await _wait_until_gone(sid, timeout, gone):
            return sig
    return signals[-1]


async def _wait_until_gone(sid: int, timeout: float, gone: asyncio.Event | None) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while time.monotonic() < deadline:
        if gone is not None and not gone.is_set():
            # The leader first: its exit is an event, no polling needed.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), max(0.0, deadline - time.monotonic()))
            if not gone.is_set():
                return False
        if not await asyncio.to_thread(session_members, sid):
            return True
        # Stragglers (background children) have no exit event we can wait on: poll briefly.
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return not await asyncio.to_thread(session_members, sid)


# Signals a server may ignore or handle, which its workers must see with default dispositions.
DEFAULT_SIGNALS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


def reset_signals() -> None:
    """Run in the child before exec: default signal dispositions and an empty signal mask.

    A server started in the background inherits SIGINT ignored; without this its workers would
    inherit that too, and Ctrl-C would do nothing in them.
    """
    for sig in DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
