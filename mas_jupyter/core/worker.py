"""One live worker: its process, output ring, VT screen, transcript, activity and listeners.

Everything here runs on the event loop and never blocks. Output from the PTY goes, in one
pass per read burst, to the ring (replay), the screen (activity and `screen`), the transcript
and every attached listener (consoles). Activity is re-evaluated on a timer after output, so a
flood costs one screen evaluation per interval, not one per read.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import TYPE_CHECKING, Protocol

from . import processes
from .activity import ActivityRules, terminal_activity
from .errors import ConflictError, TooLargeError
from .queries import Answerer, without_queries
from .reply import extract_reply
from .ring import OutputRing, first_character
from .runtimes.pty import PtyProcess
from .runtimes.tmux import Pane, Tmux, TmuxProcess
from .screen import Screen, shows_nothing_new
from .transcript import Transcript

if TYPE_CHECKING:
    from .backends import Backend
    from .models import Worker

Listener = Callable[[str, object], None]
CHECK_DELAY = 0.1  # seconds between output and the next activity evaluation
BUSY_RECHECK = 1.0  # while busy without output, look again this often


def exit_status(code: int | None, signal: int | None) -> int | None:
    """What a console is told of an exit: the code, or minus the signal that ended it."""
    return code if signal is None else -signal


class WorkerHooks(Protocol):
    """What a live worker reports to its supervisor."""

    def activity_changed(self, worker: LiveWorker, old: str, new: str) -> None: ...

    def exited(self, worker: LiveWorker, code: int | None, sig: int | None) -> None: ...


class LiveWorker:
    """A running worker and everything that watches its output."""

    def __init__(
        self,
        record: Worker,
        backend: Backend,
        transcript_path: str,
        hooks: WorkerHooks,
        ring_bytes: int,
        transcript_bytes: int,
        max_input_queue: int = 4 * 1024 * 1024,
    ) -> None:
        self.record = record
        self.backend = backend
        self.hooks = hooks
        self.ring = OutputRing(ring_bytes)
        self.screen = Screen(record.cols, record.rows)
        self.rules = ActivityRules(backend.patterns, backend.idle_stable_seconds)
        self.transcript = Transcript(transcript_path, transcript_bytes)
        self.max_input_queue = max_input_queue
        self.activity = "unknown"
        self.process: PtyProcess | None = None
        self.exited = asyncio.Event()
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self._listeners: list[Listener] = []
        self._answerer = Answerer()  # which console answers the program's terminal queries
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._last_output = time.monotonic()
        self._bells_seen = 0
        self._check: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._asking = asyncio.Lock()  # one waited message at a time: see `turn`

    # starting

    def _callbacks(self) -> dict:
        return {"on_output": self._on_output, "on_eof": self._on_eof, "on_exit": self._on_exit}

    def start_pty(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        """Start argv in a PTY that is a child of this process."""
        self.transcript.start(argv, self.record.backend)
        proc = PtyProcess(
            argv, cwd, env, self.record.cols, self.record.rows,
            max_input_queue=self.max_input_queue, **self._callbacks(),
        )  # fmt: skip
        proc.spawn()
        self.process = proc

    async def start_tmux(self, tmux: Tmux, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        """Start argv in a new tmux session and attach to it."""
        self.transcript.start(argv, self.record.backend)
        proc = self._tmux_process(tmux)
        await proc.create(argv, cwd, env)
        self.process = proc

    async def reattach_tmux(self, tmux: Tmux, pane: Pane) -> None:
        """Attach to the tmux session a previous server started (its pane as tmux said)."""
        proc = self._tmux_process(tmux)
        await proc.attach(pane)
        self.transcript.note("re-attached after a server restart")
        self.process = proc

    def _tmux_process(self, tmux: Tmux) -> TmuxProcess:
        assert self.record.tmux_name
        return TmuxProcess(
            tmux, self.record.tmux_name, self.record.cols, self.record.rows,
            max_input_queue=self.max_input_queue, **self._callbacks(),
        )  # fmt: skip

    @property
    def pid(self) -> int | None:
        """The worker's process id (for tmux workers, the pane's)."""
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        """Whether the worker's process has not exited yet."""
        return self.process is not None and not self.exited.is_set()

    # output

    def _on_output(self, data: bytes) -> None:
        self.ring.append(data)
        self.screen.feed(data)
        self.transcript.output(data)
        if not shows_nothing_new(data):  # a change of modes alone is not the agent at work
            self._last_output = time.monotonic()
        text = self._decoder.decode(data)
        if text:
            self._answerer.saw(text)
            for listener in list(self._listeners):
                listener("stdout", text)
        self._schedule_check(CHECK_DELAY)

    def _on_eof(self) -> None:
        self.transcript.flush()

    def _on_exit(self, code: int | None, sig: int | None) -> None:
        if self.exited.is_set():
            return
        if self.process is not None:
            self.process.drain()  # collect what the process printed last
        self.exit_code, self.exit_signal = code, sig
        self._cancel_check()
        self.transcript.exit(code, sig, self.exit_reason_for(code))
        self.exited.set()
        self._changed.set()
        # Recorded first: a console told of the exit finds the worker's exit_reason set.
        self.hooks.exited(self, code, sig)
        for listener in list(self._listeners):
            listener("exit", exit_status(code, sig))
        # Background children must not outlive the worker they belong to.
        if self.pid is not None:
            processes.end_tree_soon(self.pid)

    def exit_reason_for(self, code: int | None) -> str:
        """Why it ended: what ended it for it (a pause, a restart, ...), else by itself."""
        return getattr(self, "stop_reason", None) or ("exited" if code == 0 else "crashed")

    def attach(self, listener: Listener) -> tuple[str, Callable[[], None]]:
        """The recent output as text, and listener subscribed to what follows: no gap, no repeat."""
        data = self.ring.snapshot()
        pending = self._decoder.getstate()[0]
        if pending:
            data = data[: len(data) - len(pending)]
        replay = without_queries(data[first_character(data) :].decode("utf-8", "replace"))
        self._listeners.append(listener)

        def detach() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return replay, detach

    @property
    def listener_count(self) -> int:
        """How many consoles are attached."""
        return len(self._listeners)

    # activity

    def _schedule_check(self, delay: float) -> None:
        if self._check is None and not self.exited.is_set():
            self._check = self._loop.call_later(delay, self._evaluate)

    def _cancel_check(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None

    def _evaluate(self) -> None:
        self._check = None
        self.transcript.flush()
        if self.exited.is_set() or self.process is None:
            return
        stable_for = time.monotonic() - self._last_output
        if self.record.kind == "terminal":
            state = terminal_activity(self.pid) if self.pid else "unknown"
            if state == "busy":
                self._schedule_check(BUSY_RECHECK)
        else:
            bell = self.screen.bell_count > self._bells_seen
            self._bells_seen = self.screen.bell_count
            state = self.rules.classify(self.screen.lines(), stable_for, bell)
            window = self.rules.idle_stable_seconds
            if state in ("busy", "unknown") and stable_for < window:
                self._schedule_check(max(0.02, window - stable_for + 0.01))
            elif state == "busy":
                self._schedule_check(BUSY_RECHECK)
        self.set_activity(state)

    def set_activity(self, state: str) -> None:
        """Record a new activity state and tell everyone who listens."""
        if state == self.activity:
            return
        old, self.activity = self.activity, state
        self.transcript.activity(state)
        self._changed.set()
        for listener in list(self._listeners):
            listener("activity", state)
        self.hooks.activity_changed(self, old, state)

    def deleting(self) -> None:
        """Tell who listens that the worker (or its session) is being deleted, before its
        process is ended: consoles then say it is gone (`disconnect`), not that it exited."""
        for listener in list(self._listeners):
            listener("disconnect", 1)

    def evaluate_soon(self) -> None:
        """Look at the screen again shortly (after a restart, a resize)."""
        self._schedule_check(CHECK_DELAY)

    async def wait_for(self, states: tuple[str, ...], timeout: float, after: int = 0) -> bool:
        """Wait until activity is one of states (and output went past `after`), or exit."""
        deadline = time.monotonic() + timeout
        while not self.exited.is_set():
            if self.activity in states and self.ring.total > after:
                return True
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return False

    # input

    def write(self, data: str, limit: int, console: Hashable | None = None) -> None:
        """Type raw keystrokes into the worker; from `console` (a console's identity), answers
        to terminal queries that another console has answered already are dropped."""
        raw = data.encode("utf-8", "surrogateescape")
        if len(raw) > limit:
            raise TooLargeError(f"input of {len(raw)} bytes is over the limit of {limit} bytes")
        if not self.running or self.process is None:
            raise ConflictError(f"worker {self.record.name!r} has exited; restart it first")
        if self._answerer.admits(data, console):
            self.process.write(raw)

    def keys_for(self, text: str) -> str:
        """The keystrokes that type and submit a message the way the backend expects."""
        text = text.replace("\r\n", "\n")
        if "\n" in text.strip("\n"):
            if self.backend.paste == "bracketed":
                return "\x1b[200~" + text.strip("\n") + "\x1b[201~" + self.backend.submit
            return self.backend.submit.join(text.strip("\n").split("\n")) + self.backend.submit
        return text.strip("\n") + self.backend.submit

    def submit(self, text: str, limit: int) -> int:
        """Type a message and submit it; returns the output offset its reply starts at."""
        offset = self.ring.total
        self.write(self.keys_for(text), limit)
        self.transcript.input(text)
        self.set_activity("busy")  # it has work now, whatever the screen still shows
        return offset

    @contextlib.asynccontextmanager
    async def turn(self, timeout: float) -> AsyncIterator[float]:
        """The turn of a message whose reply is awaited: once no other such message is being
        answered and the worker is no longer busy, so that what it prints next answers this
        one, not the work it was busy with. Yields the seconds left of `timeout`; a
        ConflictError, and nothing typed, when the turn does not come within it."""
        deadline = time.monotonic() + timeout
        name = self.record.name
        # Not wait_for: before Python 3.12 it can return the lock and swallow a cancellation
        # that comes in the same instant (the client left just as the turn came).
        acquiring = asyncio.ensure_future(self._asking.acquire())
        try:
            await asyncio.wait((acquiring,), timeout=timeout)
        except asyncio.CancelledError:
            if acquiring.done() and not acquiring.cancelled():
                self._asking.release()
            acquiring.cancel()
            raise
        if not acquiring.done():
            acquiring.cancel()  # a Lock's acquire cancelled takes nothing
            raise ConflictError(
                f"{name!r} was still answering another message after {timeout:g} s; "
                "this one was not sent"
            )
        try:
            if self.activity == "busy":
                await self.wait_for(("idle", "waiting", "unknown"), deadline - time.monotonic())
                if self.running and self.activity == "busy":
                    raise ConflictError(
                        f"{name!r} was still busy after {timeout:g} s; the message was not "
                        "sent (send it with 'wait': false to type it ahead)",
                        field="wait",
                    )
            yield max(0.0, deadline - time.monotonic())
        finally:
            self._asking.release()

    async def reply(self, text: str, offset: int, timeout: float) -> dict:
        """Wait until the agent is idle or waiting again, and return what it replied."""
        done = await self.wait_for(("idle", "waiting"), timeout, after=offset)
        patterns = self.backend.patterns
        reply = extract_reply(
            self.ring.since(offset), text, patterns.get("idle", []), patterns.get("busy", [])
        )
        return self.outcome(reply, done)

    def outcome(self, reply: str | None, done: bool) -> dict:
        """A send's answer: the reply, and how the worker is (or why it ended)."""
        return {
            "reply": reply,
            "activity": self.activity if self.running else "exited",
            "timed_out": not done and self.running,
            "exit_code": self.exit_code if self.exited.is_set() else None,
            # Why it ended before it replied (paused, deleted, ...; the supervisor recorded it
            # as the process exited), so a reply cut off is not taken for a crash.
            "exit_reason": self.record.exit_reason if self.exited.is_set() else None,
        }

    def resize(self, cols: int, rows: int) -> None:
        """Change the terminal size of the worker and of its screen."""
        self.record.cols, self.record.rows = cols, rows
        self.screen.resize(cols, rows)
        if self.process is not None:
            self.process.resize(cols, rows)

    # ending

    async def stop(self, timeout: float) -> None:
        """End the worker's whole process tree (SIGHUP, SIGTERM, SIGKILL) and release it."""
        proc = self.process
        if proc is not None and self.running and self.pid is not None:
            gone = (
                proc.pane_watcher.done
                if isinstance(proc, TmuxProcess) and proc.pane_watcher
                else None
            )
            if not isinstance(proc, TmuxProcess) and proc.watcher is not None:
                gone = proc.watcher.done
            await processes.end_tree(self.pid, timeout, gone)
            if isinstance(proc, TmuxProcess):
                if proc.finishing is not None:  # it learns from tmux how the pane ended
                    await asyncio.wait([proc.finishing], timeout=timeout)
                await proc.tmux.kill_session(proc.name)
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except asyncio.TimeoutError:
                self._on_exit(None, 9)
        self.close()

    def close(self) -> None:
        """Release the terminal, timers and transcript (tmux sessions are only detached)."""
        if self.process is not None:
            self.process.close()  # passes on held output first, which may schedule a check
        self._cancel_check()
        self.transcript.close()
        for listener in list(self._listeners):
            listener("disconnect", 0)
        self._listeners.clear()

    def screen_dict(self) -> dict:
        """The rendered screen as the API shows it."""
        return {
            "lines": self.screen.lines(),
            "cursor": self.screen.cursor(),
            "activity": self.activity,
            "cols": self.record.cols,
            "rows": self.record.rows,
        }


def transcript_path(folder: str, record: Worker) -> str:
    """Where a worker's transcript lives in its session's transcripts folder."""
    return os.path.join(folder, f"{record.name}-{record.id[:8]}.jsonl")
