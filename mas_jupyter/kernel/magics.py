"""`%mas` and `%%mas`: the daily operations as IPython magics over the default client.

Each subcommand has its own argparse parser (`%mas <sub> --help`). Bad arguments, unknown
subcommands and errors from the server raise a `UsageError` (IPython prints `UsageError:
...`, never a traceback; the cell fails). Its first line is the error (`%mas list: ...`);
bad usage is that line alone. When the server gave details, indented lines follow: its
`error: ...` and `warning: ...` lines, and for a refused stop a hint (`%mas stop --force`).
Results are displayed with the client's records, so they read as text in a terminal and as
escaped HTML or Markdown in a notebook.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display

from .client import SECONDS, is_seconds
from .discovery import from_here
from .errors import MASClientError
from .records import deleted_text
from .render import (
    NO_WAIT_TIMEOUT,
    TerminalProgress,
    esc,
    in_option_words,
    working_text,
)

PROGRESS_TICK = 0.5


class _HelpShown(Exception):
    """--help was printed: nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors become one UsageError line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            raise UsageError(message.strip())
        raise _HelpShown()

    def print_help(self, file: Any = None) -> None:
        """Help goes to stdout, so a notebook shows it as normal output."""
        super().print_help(file or sys.stdout)


def _session_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--session", help="the session (default: the active one)")


def _worker_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("worker", nargs="?", help="the worker (default: the active one, else the agent)")
    _session_arg(p)


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not is_seconds(value):
        raise argparse.ArgumentTypeError(f"must be {SECONDS}, not {text!r}")
    return value


def _env_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        action="append",
        type=_env_pair,
        metavar="KEY=VALUE",
        help="an environment variable for the agent (repeatable)",
    )


def _parsers() -> dict[str, _Parser]:
    subs: dict[str, _Parser] = {}

    def add(name: str, help_text: str) -> _Parser:
        subs[name] = _Parser(prog=f"%mas {name}", description=help_text, add_help=True)
        subs[name].help_text = help_text  # type: ignore[attr-defined]
        return subs[name]

    p = add("list", "List sessions with their workers.")
    p.add_argument("--status", choices=["active", "paused", "stopped"])
    p.add_argument("--kind", choices=["quick", "worktree", "dir"])
    p.add_argument("--task", help="only sessions of this task")

    p = add("new", "Create a session (and an agent in it) and make it active.")
    p.add_argument("name", nargs="?", help="the session name (default: session-NNN)")
    p.add_argument("--name", dest="name_opt", metavar="NAME", help="the session name")
    p.add_argument("--kind", choices=["quick", "worktree", "dir"], default="quick")
    p.add_argument("--template", help="quick: the template to fill the folder from")
    p.add_argument("--repo", help="worktree: the repository to branch (from this folder)")
    p.add_argument("--branch", help="worktree: the branch (default mas/<name>)")
    p.add_argument("--base", help="worktree: the revision to start from (default HEAD)")
    p.add_argument("--path", help="dir: the existing folder to use, shared (from this folder)")
    p.add_argument("--task", help="the task label (e.g. a ticket id)")
    p.add_argument("--agent", metavar="BACKEND", help="start an agent (see %%mas backends)")
    p.add_argument("--persona", help="the agent's role (pm, qa, specialist, ...)")
    _env_arg(p)
    p.add_argument("--terminal", action="store_true", help="also start a terminal")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the agent's prompt")

    p = add("use", "Make a session (and a worker) active; without arguments, show them.")
    p.add_argument("session", nargs="?")
    p.add_argument("worker", nargs="?")
    p.add_argument("--clear", action="store_true", help="forget the active session")

    p = add("workers", "List a session's workers.")
    p.add_argument("session", nargs="?")

    p = add("add", "Start a worker in a session: an agent or a terminal.")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--agent", metavar="BACKEND", help="an agent of this backend")
    kind.add_argument("--terminal", action="store_true", help="a shell")
    p.add_argument("--name", help="the worker name (default: the backend's)")
    p.add_argument("--persona", help="the agent's role")
    p.add_argument("--runtime", choices=["pty", "tmux"])
    _env_arg(p)
    p.add_argument("--no-wait", action="store_true", help="do not wait for the agent's prompt")
    _session_arg(p)

    p = add("send", "Send a message and show the reply (%%mas send [WORKER] sends the cell).")
    p.add_argument("text", nargs="*", help="the message (line form)")
    p.add_argument("-w", "--worker", help="the worker (default: the active one)")
    _session_arg(p)
    p.add_argument("--no-wait", action="store_true", help="do not wait for the reply")
    p.add_argument("--timeout", type=_seconds, help="seconds to wait (default 600)")

    for name, what in (
        ("console", "Open an interactive terminal on a worker."),
        ("screen", "Show a worker's screen."),
        ("restart", "Restart a worker (an agent continues its conversation)."),
    ):
        _worker_arg(add(name, what))

    p = add("log", "Show a worker's transcript (what was sent and printed).")
    _worker_arg(p)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=200)

    p = add("activity", "Show a session's activity log.")
    p.add_argument("session", nargs="?")
    p.add_argument("--limit", type=int, help="the newest N entries")

    add("pause", "Pause a session: stop its processes, keep its workspace.").add_argument(
        "session", nargs="?"
    )
    p = add("resume", "Resume a paused or stopped session.")
    p.add_argument("session", nargs="?")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the agents' prompts")

    p = add("stop", "Stop a session; refused on busy agents or worktree changes unless --force.")
    p.add_argument("session", nargs="?")
    p.add_argument("--force", action="store_true")

    p = add(
        "delete",
        "Delete a session (named explicitly); --purge removes its workspace (a dir session's "
        "folder is kept).",
    )
    p.add_argument("session")
    p.add_argument("--purge", action="store_true", help="also remove the workspace")
    p.add_argument("--force", action="store_true", help="purge a worktree with changes")

    add("backends", "List agent backends and whether each can run here.")
    add("personas", "List personas (roles).")
    add("templates", "List templates for quick sessions.")
    add("sessions", "Show the live session list widget.")
    return subs


def usage(subs: dict[str, _Parser]) -> str:
    """The overview printed by %mas and %mas --help."""
    width = max(map(len, subs))
    lines = [
        "%mas SUBCOMMAND [options]   (%mas SUBCOMMAND --help for its options)",
        "%%mas send [WORKER]         sends the cell as a message and shows the reply",
        "",
    ]
    lines += [f"  {name.ljust(width)}  {p.help_text}" for name, p in subs.items()]  # type: ignore[attr-defined]
    return "\n".join(lines)


class Progress:
    """What %%mas send shows in a notebook while the agent works."""

    def __init__(self, who: str, started: float) -> None:
        self.who = who
        self.started = started

    def _text(self) -> str:
        return working_text(self.who, time.monotonic() - self.started)

    def __repr__(self) -> str:
        return self._text()

    def _repr_html_(self) -> str:
        return f"<span class='mas-progress'>{esc(self._text())}</span>"


def _send_line(line: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """A line-form `%mas send`: its options (as a line to parse) and its message as typed,
    quotes, backslashes and spacing kept. Options (those of `parser`) are the words before
    the message, and the words after it when every one of them is an option (`%mas send hi
    --timeout 5`), so `use the --no-wait flag` is all message."""
    # Each option and the number of words it takes: its own, and a value unless a flag.
    options = {
        name: 0 if action.nargs == 0 else 1
        for action in parser._actions
        for name in action.option_strings
    }
    words = list(re.finditer(r"\S+", line))

    def options_end(i: int) -> int:
        """Where the options starting at word i end."""
        while i < len(words):
            word = words[i].group()
            name = word.split("=", 1)[0]
            if name not in options:
                break
            i += 1 + (options[name] if "=" not in word else 0)
        return min(i, len(words))

    start = options_end(0)
    if start == len(words):
        return line, ""
    end = next(j for j in range(start + 1, len(words) + 1) if options_end(j) == len(words))
    message = line[words[start].start() : words[end - 1].end()]
    return line[: words[start].start()] + line[words[end - 1].end() :], message


@magics_class
class MASMagics(Magics):
    """The %mas line magic and %%mas cell magic."""

    def __init__(self, shell: Any = None, client_factory: Callable[[], Any] | None = None):
        super().__init__(shell)
        self.parsers = _parsers()
        self._client_factory = client_factory

    @property
    def client(self) -> Any:
        """The default client (found on first use)."""
        if self._client_factory is not None:
            return self._client_factory()
        from . import connect

        return connect()

    @line_cell_magic
    @no_var_expand  # `$total` and `{cols}` in a message are the user's words, not variables
    def mas(self, line: str, cell: str | None = None) -> None:
        """Work with mas_jupyter sessions and agents: `%mas --help` lists the subcommands."""
        message = None
        words = line.split(maxsplit=1)
        if cell is None and words[:1] == ["send"]:
            options, message = _send_line(words[1] if len(words) > 1 else "", self.parsers["send"])
            line = f"send {options}"
        try:
            argv = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%mas: cannot read the arguments: {e}") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(usage(self.parsers))
            return
        sub, rest = argv[0], argv[1:]
        if sub not in self.parsers:
            raise UsageError(
                f"%mas: unknown subcommand {sub!r}; one of: {', '.join(self.parsers)} (%mas --help)"
            )
        if cell is not None and sub != "send":
            raise UsageError(f"%%mas {sub}: only %%mas send takes a cell body")
        try:
            args = self.parsers[sub].parse_args(rest)
        except _HelpShown:
            return
        if sub == "send":
            args.message = message
        try:
            getattr(self, f"_do_{sub}")(args, cell)
        except MASClientError as e:
            raise UsageError(_error_text(sub, e)) from None

    # subcommands

    def _do_list(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.sessions(status=args.status, kind=args.kind, task=args.task))

    def _do_new(self, args: argparse.Namespace, cell: str | None) -> None:
        if args.name and args.name_opt and args.name != args.name_opt:
            raise UsageError("%mas new: give the name once (NAME or --name)")
        if (args.persona or args.env) and not args.agent:
            raise UsageError("%mas new: --persona and --env need --agent BACKEND")
        session = self.client.create_session(
            args.name or args.name_opt,
            args.kind,
            template=args.template,
            repo=from_here(args.repo),
            branch=args.branch,
            base=args.base,
            path=from_here(args.path),
            task=args.task,
            agent=args.agent,
            persona=args.persona,
            env=dict(args.env or []),
            terminal=args.terminal,
        )
        self.client.use(session.name)
        if args.agent and not args.no_wait:
            session = self.client.wait_agents_ready(session.id)
        display(session)

    def _do_use(self, args: argparse.Namespace, cell: str | None) -> None:
        if args.clear:
            self.client.use()
            print("no active session")
        elif args.session:
            print(repr(self.client.use(args.session, args.worker)))
        else:
            print(repr(self.client.use(self.client.active_session, self.client.active_worker)))

    def _do_workers(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.workers(args.session))

    def _do_add(self, args: argparse.Namespace, cell: str | None) -> None:
        if args.terminal and (args.persona or args.env):
            raise UsageError("%mas add: a terminal has no persona or agent environment")
        worker = self.client.add_worker(
            args.name,
            kind="terminal" if args.terminal else "agent",
            backend=None if args.terminal else args.agent,
            persona=args.persona,
            runtime=args.runtime,
            env=dict(args.env) if args.env else None,
            session=args.session,
        )
        if not args.terminal and not args.no_wait:
            worker = self.client.wait_ready(worker.id, session=worker.session_key)
        display(worker)

    def _do_send(self, args: argparse.Namespace, cell: str | None) -> None:
        if cell is not None and args.text:  # %%mas send WORKER: the worker is positional
            if len(args.text) > 1 or args.worker:
                raise UsageError("%%mas send: the message is the cell; the line takes only WORKER")
            args.worker = args.text[0]
        text = cell if cell is not None else (args.message or "")
        if not text.strip():
            raise UsageError("%mas send: nothing to send (give the message, or use %%mas send)")
        if args.no_wait and args.timeout is not None:
            raise UsageError(f"%mas send: {NO_WAIT_TIMEOUT}")
        client = self.client
        if args.no_wait:
            display(client.send(text, worker=args.worker, session=args.session, wait=False))
            return
        worker = args.worker
        if worker is None:  # the progress line names it: the active worker, else the agent
            worker = client.worker(None, session=args.session).name
        future = client._loop.submit(
            client.asend(text, worker=worker, session=args.session, wait=True, timeout=args.timeout)
        )
        self._show_when_done(future, worker)

    def _show_when_done(self, future: concurrent.futures.Future, who: str) -> None:
        """Wait for the reply, showing the progress line from the first tick on: an answer
        sooner (a refusal, an unknown worker, a quick reply) shows no progress at all, since
        a notebook output once displayed can only be replaced, not removed. In a notebook
        the line is an output the reply replaces; in a terminal it is on stderr, redrawn in
        place and erased (nothing when stderr is not a terminal)."""
        progress = Progress(who, time.monotonic())
        in_kernel = _in_kernel(self.shell)
        handle = None
        ticker: Any = contextlib.nullcontext()
        if not in_kernel and sys.stderr.isatty():
            ticker = TerminalProgress(who, sys.stderr)
        try:
            with ticker:
                while True:
                    try:
                        reply = future.result(PROGRESS_TICK)
                        break
                    except concurrent.futures.TimeoutError:
                        if not in_kernel:
                            continue
                        if handle is None:
                            handle = display(progress, display_id=True)
                        else:
                            handle.update(progress)
        except KeyboardInterrupt:
            future.cancel()
            # The send's connection closes: the server drops a message still waiting for its
            # turn; one already typed is being answered.
            message = (
                "stopped waiting: the message was not sent if the agent was still busy; "
                "otherwise it goes on answering (see %mas screen)"
            )
            if handle is not None:
                handle.update(_Text(message))
            else:
                print(message)
            raise  # the cell was stopped: a Run All stops here too
        except MASClientError:
            if handle is not None:
                handle.update(_Text(""))
            raise
        if handle is not None:
            handle.update(reply)
        else:
            display(reply)

    def _do_console(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.worker(args.worker, session=args.session).console())

    def _do_screen(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.screen(worker=args.worker, session=args.session))

    def _do_restart(self, args: argparse.Namespace, cell: str | None) -> None:
        worker = self.client.restart(worker=args.worker, session=args.session)
        if worker.kind == "agent":  # as after %mas add: at its prompt, not `unknown`
            worker = self.client.wait_ready(worker.id, session=worker.session_key)
        display(worker)

    def _do_log(self, args: argparse.Namespace, cell: str | None) -> None:
        display(
            self.client.transcript(
                args.offset, args.limit, worker=args.worker, session=args.session
            )
        )

    def _do_activity(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.activities(args.session, limit=args.limit))

    def _do_pause(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.pause(args.session))

    def _do_resume(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self.client.resume(args.session)
        if not args.no_wait:  # as after %mas new: agents at their prompts, not `unknown`
            session = self.client.wait_agents_ready(session.id)
        display(session)

    def _do_stop(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self.client.stop(args.session, force=args.force)
        display(session)
        for warning in session.data.get("warnings") or []:
            print(f"warning: {warning}")

    def _do_delete(self, args: argparse.Namespace, cell: str | None) -> None:
        session = self.client.session(args.session)
        rescue_ref = self.client.delete(session, purge=args.purge, force=args.force)
        print(f"deleted session {args.session}" + deleted_text(session, args.purge, rescue_ref))

    def _do_backends(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.backends())

    def _do_personas(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.personas())

    def _do_templates(self, args: argparse.Namespace, cell: str | None) -> None:
        display(self.client.templates())

    def _do_sessions(self, args: argparse.Namespace, cell: str | None) -> None:
        from .widgets.sessions import SessionList

        display(SessionList(client=self.client))


class _Text:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _in_kernel(shell: Any) -> bool:
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _error_text(sub: str, error: MASClientError) -> str:
    message = in_option_words(error.message, error.details, "%mas add --agent demo -s {session}")
    if error.details.get("missing") == "session":  # the client's words name Python's ways
        message = (
            "no session given and none is active: make one active with %mas use NAME, or "
            f"name one (see %mas {sub} --help)"
        )
    lines = [f"%mas {sub}: {message}"]
    lines += [f"  error: {e}" for e in error.errors if e not in error.message]
    lines += [f"  warning: {w}" for w in error.warnings]
    if sub == "stop" and error.errors:
        lines.append("  (%mas stop --force stops it anyway)")
    return "\n".join(lines)


def load_ipython_extension(ipython: Any) -> None:
    """Register %mas and %%mas."""
    ipython.register_magics(MASMagics(ipython))
