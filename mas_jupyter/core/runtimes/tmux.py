"""Workers whose process lives in a detached tmux session and survives a server restart.

The server attaches to the tmux session through a PTY (a `tmux attach` client), so output,
input and resizing work exactly as for the `pty` runtime. The pane's process is watched with a
pidfd; tmux keeps a dead pane (`remain-on-exit`) so its exit status can be read, then the tmux
session is removed. A person can take over with `tmux -L <socket> attach -t <name>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Callable

from .. import processes
from ..errors import MASError, UnavailableError
from .pty import ExitWatcher, PtyProcess, spawn_in_terminal, start_error

log = logging.getLogger(__name__)


def available() -> bool:
    """Whether tmux is installed."""
    return shutil.which("tmux") is not None


def session_name(session_id: str, worker_name: str) -> str:
    """The tmux session name of a worker: `mas-<8 hex>-<worker>`, its '.' written as '+'.

    tmux forbids '.' and ':' in a name; '+' is in no worker name, so two workers never get
    one tmux session (`x.y` and `x_y` did, when '.' became '_').
    """
    return f"mas-{session_id.replace('-', '')[:8]}-{worker_name.replace('.', '+')}"


Pane = tuple[int | None, bool, int | None, int | None]  # pid, dead, exit status, signal
# Fields are joined by ':' (no session name has one): tmux leaves the status empty when a
# signal ended the pane and the signal empty when it exited, and a split on white space read
# the signal as the status.
PANE_FORMAT = "#{pane_pid}:#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}"

# A worker's environment reaches its process through a file only the server's user can read:
# the pane's shell reads it, removes it and execs the worker's argv. tmux's `-e KEY=VALUE`
# would put every value (API keys among them) on the tmux server's command line, which stays
# readable by every user in `ps` for as long as the tmux server runs.
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOAD_ENV = '. "$0" && rm -f -- "$0" && exec "$@"'
_MAX_ARG_STRLEN = 32 * 4096  # Linux: the longest one argument or variable may be
_STALE_ENV_FILE = 60.0  # seconds; a file its pane never read (the pane died at once)


def _pane(line: str) -> Pane:
    parts = line.strip().split(":")
    if not parts or not parts[0].isdigit():
        return None, True, None, None
    dead = len(parts) > 1 and parts[1] == "1"
    status = int(parts[2]) if len(parts) > 2 and parts[2].lstrip("-").isdigit() else None
    sig = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
    return int(parts[0]), dead, status, sig


def _check_exec_size(argv: list[str], env: dict[str, str]) -> None:
    """Refuse what the pane's exec could not take (E2BIG), as the pty runtime's own exec does:
    the environment is not on tmux's command line, so tmux itself would start and the worker
    would die at once."""
    strings = [os.fsencode(a) for a in argv] + [os.fsencode(f"{k}={v}") for k, v in env.items()]
    total = sum(len(b) + 1 + 8 for b in strings)  # the string, its NUL, its pointer
    if total > os.sysconf("SC_ARG_MAX") or any(len(b) >= _MAX_ARG_STRLEN for b in strings):
        raise start_error(argv[0], OSError(errno.E2BIG, os.strerror(errno.E2BIG)))


class Tmux:
    """Runs tmux commands against one tmux server (a socket name or a socket path)."""

    def __init__(self, socket: str, env: dict[str, str], env_dir: str) -> None:
        self.socket = socket
        self.env = env
        self.env_dir = os.path.abspath(env_dir)  # private: a new worker's environment waits there

    @property
    def base(self) -> list[str]:
        """tmux and the option that selects our server; no user config is read."""
        flag = "-S" if "/" in self.socket else "-L"
        return ["tmux", flag, self.socket, "-f", "/dev/null"]

    def attach_command(self, name: str) -> str:
        """The shell command a person runs to attach to a worker's tmux session."""
        flag = "-S" if "/" in self.socket else "-L"
        return shlex.join(["tmux", flag, self.socket, "attach", "-t", name])

    async def run(self, *args: str) -> tuple[int, str]:
        """Run one tmux command; returns its exit code and output."""
        if not available():
            raise UnavailableError("tmux is not installed; install it or use the pty runtime")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.base,
                *args,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:  # an environment too large for exec, no more processes
            raise start_error("tmux", exc) from None
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def exists(self, name: str) -> bool:
        """Whether a tmux session of that name exists."""
        code, _ = await self.run("has-session", "-t", f"={name}")
        return code == 0

    async def pane(self, name: str) -> Pane:
        """The pane's pid, whether it is dead, and its exit status and signal if so."""
        code, out = await self.run("display-message", "-p", "-t", f"={name}:", PANE_FORMAT)
        return _pane(out if code == 0 else "")

    async def panes(self) -> dict[str, Pane]:
        """Every session's pane (as `pane` says it), by session name, in one tmux call."""
        if not available():
            return {}
        code, out = await self.run("list-panes", "-a", "-F", "#{session_name}\t" + PANE_FORMAT)
        if code != 0:  # no tmux server (no session left): nothing to attach to
            return {}
        panes: dict[str, Pane] = {}
        for line in out.splitlines():
            name, _, rest = line.partition("\t")
            panes.setdefault(name, _pane(rest))  # a worker's session has one pane
        return panes

    async def new_session(
        self, name: str, argv: list[str], cwd: str, env: dict[str, str], cols: int, rows: int
    ) -> None:
        """Start argv in a new detached tmux session: `sh` loads the environment from a private
        file, then execs argv (never parsed by a shell)."""
        _check_exec_size(argv, env)
        path = self._env_file({k: v for k, v in env.items() if _SHELL_NAME.fullmatch(k)})
        others = [
            a for k, v in env.items() if not _SHELL_NAME.fullmatch(k) for a in ("-e", f"{k}={v}")
        ]
        # An argument ending in ';' would be read by tmux as a command separator: escape it.
        command = ["/bin/sh", "-c", _LOAD_ENV, path, *argv]
        command = [a[:-1] + "\\;" if a.endswith(";") else a for a in command]
        # One invocation: a tmux server with no session exits at once, taking options with it.
        # remain-on-exit is set before the session starts, so even an instant exit is seen.
        # Only a server not set up yet is set up (`@mas-options` marks it): every set-option
        # redraws every attached client, which read as output, so the other agents looked busy.
        options = [
            ("-g", "remain-on-exit", "on"),
            ("-g", "status", "off"),
            ("-s", "escape-time", "0"),
            ("-g", "history-limit", "2000"),
            ("-g", "@mas-options", "1"),
        ]
        setup = " ; ".join(" ".join(("set-option", *opt)) for opt in options)
        code, out = 1, ""
        try:
            code, out = await self.run(
                "start-server", ";", "if-shell", "-F", "#{@mas-options}", "", setup, ";",
                "new-session", "-d", "-s", name, "-x", str(cols), "-y", str(rows), "-c", cwd,
                *others, *command,
            )  # fmt: skip
        finally:
            if code != 0:  # no pane will read it
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if code != 0:
            raise UnavailableError(f"tmux could not start the worker: {out.strip()}")

    def _env_file(self, env: dict[str, str]) -> str:
        """Write `export KEY='value'` lines to a new file only this user can read; its path."""
        os.makedirs(self.env_dir, mode=0o700, exist_ok=True)
        with os.scandir(self.env_dir) as entries:
            for entry in entries:  # the odd file a pane never read
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < time.time() - _STALE_ENV_FILE:
                        os.unlink(entry.path)
        fd, path = tempfile.mkstemp(prefix="env-", dir=self.env_dir)  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.writelines(os.fsencode(f"export {k}={shlex.quote(v)}\n") for k, v in env.items())
        return path

    async def kill_session(self, name: str) -> None:
        """Remove a tmux session (its processes get SIGHUP from tmux)."""
        await self.run("kill-session", "-t", f"={name}")


class TmuxProcess(PtyProcess):
    """A worker in a tmux session: the PTY is a `tmux attach` client, the pid is the pane's."""

    def __init__(
        self,
        tmux: Tmux,
        name: str,
        cols: int,
        rows: int,
        on_output: Callable[[bytes], None],
        on_eof: Callable[[], None],
        on_exit: Callable[[int | None, int | None], None],
        max_input_queue: int = 4 * 1024 * 1024,
    ) -> None:
        super().__init__(
            [*tmux.base, "attach-session", "-t", f"={name}"],
            "/",
            tmux.env,
            cols,
            rows,
            self._client_output,
            on_eof,
            on_exit,
            max_input_queue,
        )
        self._worker_output = on_output
        # Set once the pane's end is recorded: what the client prints after that is its own
        # goodbye, not the worker's output (see _client_output).
        self._pane_ended = False
        self._drawn = asyncio.Event()  # the client has drawn the pane (it printed something)
        self.tmux = tmux
        self.name = name
        self.pane_watcher: ExitWatcher | None = None
        self._finishing: asyncio.Future | None = None
        self._pane_started: int | None = None  # the pane process's start time
        self.client_pid: int | None = None
        self._closed = False
        self._reattaching: asyncio.Future | None = None
        self._attached_at = 0.0  # loop time the client was last started
        self._quick_ends = 0  # clients in a row that ended within a second of their start
        # What a client prints as it is detached, and what it printed last (the goodbye may
        # come in two reads): from then on, input waits for the next client (see _leaving).
        self._goodbye = f"[detached (from session {name})]".encode()
        self._tail = b""
        self._leaving: asyncio.TimerHandle | None = None

    async def create(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        """Start the worker's process in a new tmux session, then attach."""
        await self.tmux.new_session(self.name, argv, cwd, env, self.cols, self.rows)
        await self.attach()

    async def attach(self, pane: Pane | None = None) -> None:
        """Attach to the existing tmux session and watch its pane's process (`pane`: as
        `Tmux.pane` said it just now, if known)."""
        pane_pid, dead, _status, _sig = pane or await self.tmux.pane(self.name)
        if pane_pid is None:
            raise UnavailableError(f"the tmux session {self.name} is gone")
        self._spawn_client(pane_pid)
        self._pane_started = processes.start_time(pane_pid)
        if dead:
            self._finishing = asyncio.ensure_future(self._finish(drawn_within=1.0))
        else:
            self.pane_watcher = ExitWatcher(pane_pid, self._pane_gone, reap=False)

    def _spawn_client(self, pane_pid: int) -> None:
        self.spawn()  # the attach client, watched as `pid`: then `pid` is the pane's again
        self.client_pid, self.pid = self.pid, pane_pid
        self._attached_at = asyncio.get_running_loop().time()

    def _start(self) -> tuple[int, int]:
        # The attach client needs no cwd (`/` above is not used): spawned, not forked, as a
        # restart attaches hundreds of them.
        return spawn_in_terminal(self.argv, self.env, self.rows, self.cols)

    @property
    def alive(self) -> bool:
        """Whether the pane's process has not been seen to exit yet."""
        return self.pane_watcher is not None and not self.pane_watcher.done.is_set()

    @property
    def finishing(self) -> asyncio.Future | None:
        """The task recording the pane's exit, while it runs (await it before the loop ends)."""
        if self._finishing is None or self._finishing.done():
            return None
        return self._finishing

    def _client_output(self, data: bytes) -> None:
        """The attach client's output is the worker's, until the pane's end is recorded.

        When the tmux session is killed after that, the client clears its screen, leaves the
        alternate screen and prints `[exited]`: kept, that was the end of the worker's output,
        and a console that replayed it (after an exit, a pause, a server restart) showed
        `[exited]` alone, not what the worker printed last.
        """
        if self._pane_ended:
            return
        self._drawn.set()
        if self._leaving is None and self._says_goodbye(data):
            # Input written to this client now would be lost with it: it waits for the next.
            # Should the client stay after all (a program printed those words), it goes on.
            self._leaving = asyncio.get_running_loop().call_later(2.0, self._stays)
        self._worker_output(data)

    def _says_goodbye(self, data: bytes) -> bool:
        size = len(self._goodbye)
        seen = self._goodbye in data or self._goodbye in self._tail + data[:size]
        self._tail = (self._tail + data[-size:])[-size:]
        return seen

    def _stays(self) -> None:
        self._leaving = None
        self._flush()

    def _flush(self) -> None:
        if self._leaving is None:
            super()._flush()
        elif self._writing and self.fd is not None:  # wait: no writer callback meanwhile
            asyncio.get_running_loop().remove_writer(self.fd)
            self._writing = False

    def _pane_gone(self, _code: int | None, _sig: int | None) -> None:
        self._finishing = asyncio.ensure_future(self._finish())

    async def _finish(self, drawn_within: float = 0.0) -> None:
        if drawn_within:  # a client attached to a dead pane: let it draw what the pane shows
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drawn.wait(), drawn_within)
        # Until tmux reaps the pane's process, the kernel tells its status (and tmux 3.3a
        # sometimes leaves a killed pane unreaped for seconds, its status empty meanwhile).
        # Once reaped, tmux tells it: it marks the pane dead when its terminal closes and
        # records the status when it reaps, a moment after our pidfd fires, in either order.
        known = processes.zombie_status(self.pid, self._pane_started) if self.pid else None
        status, sig = known or await self._status_from_tmux()
        self.exit_code, self.exit_signal = status, sig
        self.on_exit(status, sig)  # passes on what the client drew until now
        self._pane_ended = True
        await self.tmux.kill_session(self.name)

    async def _status_from_tmux(self) -> tuple[int | None, int | None]:
        """The pane's exit code and signal as tmux records them (both None if it never says)."""
        status = sig = None
        delay = 0.005
        for _ in range(14):
            pid, dead, status, sig = await self.tmux.pane(self.name)
            if pid is None and not await self.tmux.exists(self.name):
                break  # the session is gone: nothing more to learn
            if dead and (status is not None or sig is not None):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        return status, sig

    def _on_exit(self, code: int | None, sig: int | None) -> None:
        # The attach client ended. The worker's state follows the pane, not the client: while
        # the pane lives (a person ran `detach-client`, or took the session over with
        # `attach -d`), attach again, or input would go nowhere and the console would freeze.
        if not self._closed and not self._pane_ended and self.alive:
            self._reattaching = asyncio.ensure_future(self._reattach())

    @property
    def takes_input(self) -> bool:
        """Input typed while a client leaves, or the next one is started, waits for it."""
        if self._closed:
            return False
        reattaching = self._reattaching is not None and not self._reattaching.done()
        return self._leaving is not None or reattaching or super().takes_input

    async def _reattach(self) -> None:
        loop = asyncio.get_running_loop()
        quick = loop.time() - self._attached_at < 1.0
        self._quick_ends = self._quick_ends + 1 if quick else 0
        if self._quick_ends:  # not a client tmux keeps ending at once, again and again
            await asyncio.sleep(min(0.1 * 2**self._quick_ends, 5.0))
        self.drain()  # what the old client printed last (its goodbye)
        self._stop_reading()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        self.eof = False
        pane_pid, dead, _status, _sig = await self.tmux.pane(self.name)
        if self._closed or self._pane_ended or not self.alive or dead or pane_pid != self.pid:
            return  # ended meanwhile: the pane's watcher records it
        try:
            self._spawn_client(pane_pid)
        except MASError as exc:  # no more processes, say: the console stays as it is
            log.warning("cannot attach to tmux session %s again: %s", self.name, exc)
            return
        self._stop_leaving()
        self._flush()  # input typed meanwhile

    def _stop_leaving(self) -> None:
        if self._leaving is not None:
            self._leaving.cancel()
            self._leaving = None
        self._tail = b""

    def close(self) -> None:
        """Detach: end the attach client and stop watching (the tmux session lives on)."""
        self._closed = True
        self._stop_leaving()
        if self._reattaching is not None:
            self._reattaching.cancel()
        if self.pane_watcher is not None:
            self.pane_watcher.close()
        if self.client_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.client_pid, signal.SIGHUP)
        super().close()
