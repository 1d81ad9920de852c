"""A process in a pseudo-terminal, read and written through the asyncio loop, never blocking.

The process is started with pexpect (fork, setsid, exec of an argv list: no shell) and then
driven directly: the master fd is read through the loop's read pump (`pump.py`: large chunks
for a worker streaming alone, short shared turns when many stream, typed-into workers first;
a stream's output held a moment and passed on in fewer, larger pieces),
input goes through a bounded queue
and the loop's writer callback, and the process's exit is watched through a pidfd. End of
output and exit are separate events that may come in either order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import shutil
import termios
from collections.abc import Callable

import pexpect

from ..errors import MASError, TooLargeError, UnavailableError
from ..processes import DEFAULT_SIGNALS, reset_signals
from . import pump as pumps
from .pump import pump

READ_SIZE = 65536
HOLD_BYTES = 256 * 1024  # a stream's held output is passed on at once when this much is held
# What a terminal may hold of a program's output that its reader has not read: 17,408 bytes
# measured here (Linux 6.18); the bound leaves room for kernels that buffer more.
TERMINAL_BUFFER = 64 * 1024


def set_size(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's size (on the master: the kernel signals the foreground with SIGWINCH)."""
    termios.tcsetwinsize(fd, (rows, cols))


def spawn_in_terminal(
    argv: list[str], env: dict[str, str], rows: int, cols: int
) -> tuple[int, int]:
    """Start argv in a new PTY, its controlling terminal, without copying the server's memory:
    (pid, the PTY's master fd). It runs in the server's cwd (`posix_spawn` has no chdir here).

    `posix_spawn` (glibc: a vfork-like clone) costs ~0.2 ms whatever the server's size, where
    a fork (pexpect) copies the page tables of the server's ~100 MB: 5-8 ms, and more while
    the child execs. The child starts a new session, then opens the PTY by its path, which
    makes it the session's controlling terminal (resizing signals it), with default signal
    dispositions and an empty signal mask (`processes.reset_signals`).
    """
    program = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if program is None:
        raise UnavailableError(f"cannot start {argv[0]!r}: not found on PATH")
    master, slave = os.openpty()  # neither is inherited by the child
    try:
        set_size(slave, rows, cols)
        actions: list[tuple] = [
            (os.POSIX_SPAWN_OPEN, 0, os.ttyname(slave), os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1),
            (os.POSIX_SPAWN_DUP2, 0, 2),
        ]
        # Python opens files close-on-exec; close any other fd the server was given, as a
        # fork by pexpect does.
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds() if fd > 2]
        pid = os.posix_spawn(
            program,
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=DEFAULT_SIGNALS,
            setsigmask=(),
        )
    except OSError as exc:
        os.close(master)
        raise start_error(argv[0], exc) from None
    finally:
        os.close(slave)
    return pid, master


def _inheritable_fds() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            if os.get_inheritable(int(name)):
                found.append(int(name))
    return found


class ExitWatcher:
    """Calls back once when a process ends, through a pidfd on the loop (no polling, no waits).

    With `reap`, the process is our child and its exit status is collected with waitpid.
    """

    def __init__(
        self,
        pid: int,
        on_exit: Callable[[int | None, int | None], None],
        reap: bool = True,
    ) -> None:
        self.pid = pid
        self.reap = reap
        self.on_exit = on_exit
        self.done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = None
            self._loop.call_soon(self._fire)
            return
        self._loop.add_reader(self._fd, self._fire)

    def _fire(self) -> None:
        code = sig = None
        if self.reap:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid == 0:
                return  # spurious wake-up: not ended yet
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
            else:
                code = os.waitstatus_to_exitcode(status)
        self.close()
        if not self.done.is_set():
            self.done.set()
            self.on_exit(code, sig)

    def close(self) -> None:
        """Stop watching (the callback will not be called afterwards)."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def start_error(program: str, exc: OSError) -> MASError:
    """The error for a program that could not be started: a 413 when its command line and
    environment are larger than the system takes (E2BIG), else a 409 with the reason."""
    if exc.errno == errno.E2BIG:
        return TooLargeError(
            f"cannot start {program!r}: its command line and environment are larger than the "
            "system allows; make the worker's env smaller"
        )
    # pexpect passes exec's error on as text only: the errno says it.
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return UnavailableError(f"cannot start {program!r}: {reason}")


def _check_exec_args(argv: list[str], cwd: str, env: dict[str, str]) -> None:
    """Refuse, before the fork, what exec could not take.

    pexpect's child reports only an OSError from exec to the parent. Any other error there
    (a string with a lone surrogate cannot be encoded; one with NUL is a ValueError) would
    go up the forked child's stack, which is a copy of the server's, and run its event loop.
    """
    texts = [*argv, cwd, *env, *env.values()]
    for text in texts:
        try:
            encoded = os.fsencode(text)
        except (UnicodeError, TypeError):
            problem = f"{text!r} is not valid text"
            raise UnavailableError(f"cannot start {argv[0]!r}: {problem}") from None
        if b"\0" in encoded:
            raise UnavailableError(f"cannot start {argv[0]!r}: {text!r} contains NUL")


class PtyProcess:
    """One argv running in a PTY, with non-blocking output, input and exit callbacks."""

    def __init__(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        cols: int,
        rows: int,
        on_output: Callable[[bytes], None],
        on_eof: Callable[[], None],
        on_exit: Callable[[int | None, int | None], None],
        max_input_queue: int = 4 * 1024 * 1024,
    ) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.cols, self.rows = cols, rows
        self.on_output, self.on_eof, self.on_exit = on_output, on_eof, on_exit
        self.max_input_queue = max_input_queue
        self.pid: int | None = None
        self.fd: int | None = None
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.eof = False
        self.typed_at: float | None = None  # loop time of the last input (the pump reads it)
        self.printed_since_typed = 0  # bytes read since then (the pump reads it)
        self._held: list[bytes] = []  # output read but not passed on yet
        self._held_bytes = 0
        self._release_timer: asyncio.TimerHandle | None = None
        self._held_at = self._held_until = 0.0  # loop times: last piece held, latest release
        self._printed_since_command: int | None = None  # by the process (see _command_ended)
        self._child: pexpect.spawn | None = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._writing = False
        self.watcher: ExitWatcher | None = None

    def spawn(self) -> None:
        """Start the process (returns once exec happened or failed) and watch it."""
        self.pid, self.fd = self._start()
        os.set_blocking(self.fd, False)
        self._pump = pump()
        self._pump.watch(self)
        self.watcher = ExitWatcher(self.pid, self._on_exit)

    def _start(self) -> tuple[int, int]:
        """Fork and exec the argv in a new PTY, in its cwd: (pid, the PTY's master fd)."""
        _check_exec_args(self.argv, self.cwd, self.env)
        try:
            child = pexpect.spawn(
                self.argv[0],
                self.argv[1:],
                cwd=self.cwd,
                env=self.env,
                echo=True,
                encoding=None,
                dimensions=(self.rows, self.cols),
                preexec_fn=reset_signals,
            )
        except pexpect.ExceptionPexpect as exc:
            raise UnavailableError(f"cannot start {self.argv[0]!r}: {exc}") from None
        except OSError as exc:
            raise start_error(self.argv[0], exc) from None
        self._child = child
        os.set_inheritable(child.child_fd, False)  # no other child holds this terminal open
        return child.pid, child.child_fd

    @property
    def alive(self) -> bool:
        """Whether the process has not been seen to exit yet."""
        return self.watcher is not None and not self.watcher.done.is_set()

    def read_burst(self, reads: int) -> bool:
        """Read what is there (at most `reads` reads) and pass it on (see `_pass_on`).

        True when every read brought output: there may be more (the pump reads it later).
        """
        chunks, ended, more = [], False, True
        for _ in range(reads):
            try:
                data = os.read(self.fd, READ_SIZE)  # type: ignore[arg-type]
            except BlockingIOError:
                more = False
                break
            except OSError:  # EIO: every holder of the terminal's slave side closed it
                ended = True
                break
            if not data:
                ended = True
                break
            chunks.append(data)
        if chunks:
            data = b"".join(chunks)
            self.printed_since_typed += len(data)
            self._pass_on(data)
        if ended:
            self.release()
            self._stop_reading()
            self.eof = True
            self.on_eof()
            return False
        return more

    def _pass_on(self, data: bytes) -> None:
        """Output of a PTY someone is answering goes on at once; a stream's is held a moment.

        While a PTY streams, each read brings a few KiB and each chunk passed on costs the
        engine and every console (a frame, for the server and for the client). A stream's
        output is held until it printed nothing more for `HOLD_SECONDS` (20 ms: the end of a
        command's output is not kept waiting), for at most the pump's `hold_seconds()`
        (20-250 ms, longer when many PTYs hold output), or until `HOLD_BYTES` are held: fewer,
        larger chunks. A keystroke's echo or an answer to input is never held, and neither is
        the end of a command's output (`_command_ended`).
        """
        if (
            self._held_bytes + len(data) < HOLD_BYTES
            and not self._pump.interactive(self)
            and not self._command_ended(len(data))
        ):
            self._held.append(data)
            self._held_bytes += len(data)
            now = self._pump.loop.time()
            self._held_at = now
            if self._release_timer is None:
                self._pump.holding += 1
                self._held_until = now + self._pump.hold_seconds()
                self._release_timer = self._pump.loop.call_at(
                    min(now + pumps.HOLD_SECONDS, self._held_until), self._release_when_due
                )
            return
        if self._held:
            self._held.append(data)
            data = self._take_held()
        self.on_output(data)

    def _command_ended(self, size: int) -> bool:
        """Whether this output is a shell's, after a command of it that printed has ended (the
        rest of the command line, the prompt): the command's output is complete, and it goes
        on now with what follows, not after the quiet time. Up to `ECHO_BYTES` of it, as for
        an answer to input, after what the terminal still held of the command's output when
        the command ended (up to `TERMINAL_BUFFER`).

        A shell with job control gives the terminal's foreground to each command it runs and
        takes it back when the command ends; a program that runs nothing in the foreground
        (an agent, `tmux attach`) keeps it, and its output is held as before.
        """
        try:
            foreground = os.tcgetpgrp(self.fd)  # type: ignore[arg-type]
        except OSError:
            return False
        if foreground != self.pid:  # a command has the terminal: count from its end
            self._printed_since_command = 0
            return False
        if self._printed_since_command is None:  # no command has printed yet
            return False
        self._printed_since_command += size
        return self._printed_since_command <= TERMINAL_BUFFER + pumps.ECHO_BYTES

    def _take_held(self) -> bytes:
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self._stop_timer()
        return data

    def _stop_timer(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
            self._pump.holding -= 1

    def _release_when_due(self) -> None:
        # Due once the stream printed nothing for `HOLD_SECONDS` (its command may be done),
        # or once its output was held for as long as the pump allows.
        due = min(self._held_at + pumps.HOLD_SECONDS, self._held_until)
        if self._pump.loop.time() >= due:
            self.release()
        else:
            self._release_timer = self._pump.loop.call_at(due, self._release_when_due)

    def release(self) -> None:
        """Pass on the output held so far."""
        if self._held:
            self.on_output(self._take_held())
        else:
            self._stop_timer()

    def drain(self) -> None:
        """Read what the process left in the terminal and pass everything on (at its exit)."""
        if self.fd is not None and not self.eof:
            self.read_burst(64)
        self.release()

    def _on_exit(self, code: int | None, sig: int | None) -> None:
        self.exit_code, self.exit_signal = code, sig
        self.on_exit(code, sig)

    def write(self, data: bytes) -> None:
        """Queue input for the process; refuses when the queue is over its bound."""
        if not self.takes_input:
            return
        if self._queued + len(data) > self.max_input_queue:
            raise TooLargeError(
                f"the worker is not reading its input: {self._queued} bytes are still queued "
                f"(limit {self.max_input_queue}); wait for it or interrupt it"
            )
        self._queue.append(data)
        self._queued += len(data)
        self.typed_at = asyncio.get_running_loop().time()
        self.printed_since_typed = 0
        self._pump.typed(self)
        self._flush()

    @property
    def takes_input(self) -> bool:
        """Whether input written now reaches the process (its terminal is open)."""
        return self.fd is not None and not self.eof

    def _flush(self) -> None:
        while self._queue and self.fd is not None:
            chunk = self._queue[0]
            try:
                written = os.write(self.fd, chunk)
            except BlockingIOError:
                written = 0
            except OSError:
                self._queue.clear()
                self._queued = 0
                break
            self._queued -= written
            if written < len(chunk):
                self._queue[0] = chunk[written:]
                break
            self._queue.popleft()
        loop = asyncio.get_running_loop()
        want = bool(self._queue) and self.fd is not None
        if want and not self._writing:
            loop.add_writer(self.fd, self._flush)  # type: ignore[arg-type]
        elif not want and self._writing and self.fd is not None:
            loop.remove_writer(self.fd)
        self._writing = want

    @property
    def queued_input(self) -> int:
        """Bytes of input waiting for the process to read them."""
        return self._queued

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size (the kernel sends SIGWINCH to the foreground program)."""
        self.cols, self.rows = cols, rows
        if self.fd is not None:
            with contextlib.suppress(OSError):
                set_size(self.fd, rows, cols)

    def _stop_reading(self) -> None:
        if self.fd is not None:
            loop = asyncio.get_running_loop()
            self._pump.forget(self)
            if self._writing:
                loop.remove_writer(self.fd)
                self._writing = False

    def close(self) -> None:
        """Release the terminal and the watchers (the process itself is ended elsewhere)."""
        self.release()
        self._stop_reading()
        if self._child is not None:
            ptyproc = self._child.ptyproc
            # Close the fd ourselves and mark pexpect's objects closed: their own close()
            # sleeps and may block in waitpid, which would freeze the event loop.
            with contextlib.suppress(OSError):
                ptyproc.fileobj.close()
            ptyproc.closed = True
            self._child.closed = True
            self._child = None
        elif self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None
