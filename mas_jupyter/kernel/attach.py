"""`jupyter mas attach`: the current terminal becomes a worker's console, as `tmux attach`.

The terminal is put in raw mode, so every key (Ctrl-C included) goes to the worker; Ctrl-]
(the telnet escape) detaches. A dropped connection is re-opened by the channel (see
channel.py): the terminal says so, and is cleared for the replay once reconnected. The
terminal's size is given to the worker on attach and on every SIGWINCH. The terminal
settings are restored on detach, when the worker exits, and on any error, and so are the
screen and modes the worker's output set (the alternate screen a `tmux attach` client or a
full-screen program switched to, application cursor keys, mouse reports, ...).
"""

from __future__ import annotations

import codecs
import os
import re
import select
import signal
import termios
import tty
from typing import Any

from ..core.models import ENDED_FOR_IT, how_it_ended
from .errors import MASClientError

DETACH_KEY = b"\x1d"  # Ctrl-]
DETACH_NAME = "Ctrl-]"
CLEAR_SCREEN = "\x1b[H\x1b[2J\x1b[3J"  # home, erase the screen and the scrollback
# The alternate screen switched on or off (xterm's three ways): its last one in the output.
ALTERNATE = re.compile(r"\x1b\[\?(?:1049|1047|47)([hl])")
ALTERNATE_TAIL = len("\x1b[?1049h") - 1  # a sequence split between messages has this many
LEAVE_ALTERNATE = "\x1b[?1049l"
# Modes a worker's program may have set in the terminal, back to their defaults: cursor shown,
# cursor keys and keypad normal, mouse reports, focus reports and bracketed paste off, plain
# text. Harmless when already so (a shell turns its bracketed paste on again at its prompt).
TERMINAL_DEFAULTS = (
    "\x1b[?25h\x1b[?1l\x1b>\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1004l"
    "\x1b[?2004l\x1b[0m"
)


def _ended(reason: str) -> str:
    if reason == "restarted":
        return "was restarted; attach again to follow it"
    again = " (resume it, then attach again)" if reason in ("paused", "stopped") else ""
    return f"stopped: {ENDED_FOR_IT[reason]}{again}"


# How a worker ended when not by itself (its exit_reason): words and what to do next.
ENDED = {reason: _ended(reason) for reason in ENDED_FOR_IT}


def _exited(code: int | None) -> str:
    """How a worker ended by itself, from its `exit` (the code, or minus the signal)."""
    if code is None:
        return "exited"
    return f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"


def _not_running(client: Any, record: Any, session: str) -> str:
    """Why an exited worker cannot be attached, and the command that runs it again: a
    resume when its session is paused or stopped (a resume starts every worker again), else
    a restart, with how it ended (its code or signal, or what ended it for it)."""
    status = client.session(record.session_key).status
    if status != "active":
        return f"session {session!r} is {status}; resume it first (jupyter mas resume {session})"
    reason = record.data.get("exit_reason")
    if reason == "deleted":  # a delete has begun: the channel would refuse it as gone
        return f"worker {record.name!r} is being deleted"
    how = how_it_ended(reason, record.data.get("exit_code"), record.data.get("exit_signal"))
    restart = f"jupyter mas restart {session} {record.name}"
    return f"worker {record.name!r} {how}; restart it first ({restart})"


def _size(fd: int) -> tuple[int, int]:
    size = os.get_terminal_size(fd)
    return size.lines, size.columns


def attach(client: Any, session: str, worker: str | None, stdin: int = 0, stdout: int = 1) -> str:
    """Connect this terminal to a worker until detached or it exits; returns what ended it."""
    if not os.isatty(stdin):
        raise MASClientError("attach needs a terminal (stdin is not a tty)", reason="invalid")
    record = client.worker(worker, session=session)
    if record.status == "exited":
        raise MASClientError(_not_running(client, record, session), reason="conflict")
    wake_r, wake_w = os.pipe()
    ended: dict[str, Any] = {}
    link = {"lost": False}  # a `reconnecting` came: the next `setup` is a reconnection
    # Whether the worker's output left the terminal in the alternate screen (a `tmux attach`
    # client, a full-screen program), and the end of the output a sequence may start in.
    screen = {"alternate": False, "tail": ""}

    def follow_modes(text: str) -> None:
        seen = screen["tail"] + text
        for match in ALTERNATE.finditer(seen):
            screen["alternate"] = match.group(1) == "h"
        screen["tail"] = seen[-ALTERNATE_TAIL:]

    def show(text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(stdout, data)
            except BlockingIOError:
                select.select([], [stdout], [], 1.0)
                continue
            except OSError:
                return
            data = data[written:]

    def on_message(kind: str, payload: Any) -> None:
        # On the client's loop thread: write output straight to the terminal.
        if kind == "stdout" and isinstance(payload, str):
            follow_modes(payload)
            show(payload)
        elif kind == "setup" and link["lost"]:
            link["lost"] = False  # reconnected: the replay that follows redraws the screen
            show(CLEAR_SCREEN + "[reconnected]\r\n")
        elif kind == "reconnecting" and not link["lost"]:
            link["lost"] = True
            show("\r\n[connection lost; reconnecting...]\r\n")
        elif kind == "exit":
            ended["exit"] = payload
        elif kind == "closed":
            ended.setdefault("closed", payload)
            os.write(wake_w, b"x")

    os.write(
        stdout,
        f"[attached to {record.name} in {session}; detach with {DETACH_NAME}]\r\n".encode(),
    )
    saved = termios.tcgetattr(stdin)
    old_winch = signal.getsignal(signal.SIGWINCH)
    channel = None
    try:
        tty.setraw(stdin)
        channel = client.channel(on_message, worker=record.id, session=record.session_id)
        rows, cols = _size(stdin)
        channel.resize(rows, cols)

        def on_winch(_signum: int, _frame: Any) -> None:
            os.write(wake_w, b"w")

        signal.signal(signal.SIGWINCH, on_winch)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                ready, _, _ = select.select([stdin, wake_r], [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                note = os.read(wake_r, 64)
                if b"w" in note:
                    rows, cols = _size(stdin)
                    channel.resize(rows, cols)
                if channel.closed.is_set():
                    break
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    ended["reason"] = "end of input"
                    break
                head, detach, _ = data.partition(DETACH_KEY)
                text = decoder.decode(head)
                if text:
                    channel.write(text)
                if detach:
                    ended["reason"] = "detached"
                    break
    finally:
        try:
            if channel is not None:
                channel.close()  # no more output: the terminal is ours again
            # The terminal as it was found: out of the alternate screen the worker left it in
            # (its main screen comes back, with what was there before), modes at defaults.
            show((LEAVE_ALTERNATE if screen["alternate"] else "") + TERMINAL_DEFAULTS)
        finally:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, old_winch)
        os.close(wake_r)
        os.close(wake_w)
    if "exit" in ended:
        reason = channel.exit_reason if channel is not None else None
        return f"worker {record.name} " + ENDED.get(reason, _exited(ended["exit"]))
    if ended.get("reason"):
        return ended["reason"]
    why = ended.get("closed")
    return "the connection to the worker closed" + (f": {why}" if why else "")
