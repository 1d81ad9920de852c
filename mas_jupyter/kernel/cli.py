"""`jupyter mas`: sessions from a plain terminal (list, new, send, attach, stop, delete).

It talks to a running Jupyter server, found like the Python client finds it (--url/--token,
MAS_SERVER_URL/MAS_TOKEN, else the running server whose root contains the working
directory). A command line that cannot be read (an unknown command or option, the wrong
number of arguments) prints what is wrong and the usage, and exits with status 2; any other
error prints `jupyter mas COMMAND: message` (then indented details, if the server gave
reasons) and exits with status 1. Output cut short by a closed stdout (`| head -1`) ends
quietly with status 141, as a command killed by SIGPIPE does.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import sys
from typing import Any, NoReturn

from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode
from traitlets.config.loader import KVArgParseConfigLoader

from .._version import __version__
from .client import SECONDS, is_seconds
from .discovery import from_here
from .errors import Conflict, MASClientError
from .records import deleted_text
from .render import NO_WAIT_TIMEOUT, TerminalProgress, in_option_words
from .transport import DEFAULT_SEND_TIMEOUT, HTTPTransport

_COMMON_ALIASES = {
    **base_aliases,
    "url": "MASCommand.url",
    "token": "MASCommand.token",
}
_COMMON_FLAGS = {**base_flags}


class _Loader(KVArgParseConfigLoader):
    """The command-line loader of a subcommand: what argparse refuses (an option without its
    value) and an unknown `--option=value` (which traitlets would only warn about, and
    ignore) are usage errors in the CLI's format. Options may come between the arguments,
    as with git (`send SESSION --worker=W TEXT`)."""

    app: MASCommand

    def _create_parser(self) -> None:
        super()._create_parser()
        self.parser.error = self._parse_error  # argparse reports through self.error(message)
        # traitlets parses with parse_args, where the arguments (`extra_args`, nargs="*")
        # are one run: those after an option would be refused as unrecognized.
        self.parser.parse_args = self.parser.parse_intermixed_args  # type: ignore[method-assign]

    def _parse_error(self, message: str) -> None:
        # traitlets takes any `--word` for an option with a value: an unknown one without
        # `=value` (`stop S --purge`) is refused by argparse as "expected one argument".
        missing = re.fullmatch(r"argument --([\w-]+): expected one argument", message)
        if missing and missing.group(1) not in {*self.app.aliases, *self.app.flags}:
            self._handle_unrecognized_alias(missing.group(1))
        # argparse names an option by its trait (--ListCommand.status): use the option's name.
        for option, target in self.app.options().items():
            message = message.replace(f"--{target}:", f"--{option}:")
        self.app.usage_error(message)

    def _handle_unrecognized_alias(self, arg: str) -> None:
        self.app.usage_error(f"unrecognized option --{arg}")


def _text(help: str) -> Any:
    """An optional text option of a command, with its help."""
    return Unicode(None, allow_none=True, help=help).tag(config=True)


class Seconds(Float):
    """A number of seconds, as the client takes them (`is_seconds`)."""

    info_text = SECONDS

    def validate(self, obj: Any, value: Any) -> Any:
        value = super().validate(obj, value)
        if value is not None and not is_seconds(value):
            self.error(obj, value)
        return value


class _Transport(HTTPTransport):
    """The client's transport, its messages naming the CLI's options."""

    url_hint = "pass --url=URL --token=TOKEN, or set MAS_SERVER_URL and MAS_TOKEN"
    token_hint = "--token, MAS_TOKEN, or the token in --url"


class MASCommand(JupyterApp):
    """What every `jupyter mas` subcommand shares: finding the server, printing errors."""

    version = __version__
    url = Unicode("", help="The Jupyter server's URL (default: discovered).").tag(config=True)
    token = Unicode("", help="The server's token (default: discovered).").tag(config=True)
    aliases = _COMMON_ALIASES
    flags = _COMMON_FLAGS
    usage = ""  # the arguments, for usage lines: "SESSION [--force]"

    def _create_loader(
        self, argv: list[str] | None, aliases: dict, flags: dict, classes: Any
    ) -> KVArgParseConfigLoader:
        """traitlets' command-line loader, with the CLI's usage errors."""
        loader = _Loader(
            argv, aliases, flags, classes=classes, log=self.log, subcommands=self.subcommands
        )
        loader.app = self
        return loader

    def emit_description(self) -> Any:
        """The description, then the usage line (traitlets' help shows no usage)."""
        yield from super().emit_description()
        yield f"usage: jupyter mas {self.name} {self.usage}".rstrip()
        yield ""

    def update_config(self, config: Any) -> None:
        """Load options; an empty value or one a trait refuses is one line in the CLI's
        format, status 1 (traitlets would log `[ListCommand] CRITICAL | Bad config ...`, and
        take `--agent=` as no agent)."""
        problem = self._bad_value(config)
        if problem:
            self.fail(problem)
        try:
            super().update_config(config)
        except TraitError as e:
            self.fail(str(e))

    def options(self) -> dict[str, str]:
        """Each option's name on the command line and the trait it sets, as argparse names
        it (`{"status": "ListCommand.status"}`)."""
        options = {}
        for option, target in self.aliases.items():
            name = (target[0] if isinstance(target, tuple) else target).rpartition(".")[2]
            options[option] = f"{type(self).__name__}.{name}"
        return options

    def _bad_value(self, config: Any) -> str | None:
        """`--status must be one of active, paused, stopped, not 'bogus'`, for the first
        option whose value is empty or one its trait refuses."""
        options = {target.rpartition(".")[2]: option for option, target in self.options().items()}
        traits = self.traits(config=True)
        for cls in type(self).__mro__:
            for name, value in (config.get(cls.__name__) or {}).items():
                trait = traits.get(name)
                if trait is None:
                    continue
                option = "--" + options.get(name, name)
                if value == "":  # never "the default", as in the REST API
                    return f"{option} must not be empty"
                try:
                    trait.validate(self, value)
                except TraitError:
                    if isinstance(value, float):
                        value = f"{value:g}"  # as typed: 'nan', '-5'
                    if isinstance(trait, Enum):
                        choices = ", ".join(str(v) for v in trait.values or ())
                        return f"{option} must be one of {choices}, not {value!r}"
                    if isinstance(trait, Seconds):
                        return f"{option} must be {trait.info_text}, not {value!r}"
                    if isinstance(trait, (Float, Int)):
                        return f"{option} must be a number, not {value!r}"
                    return None
        return None

    def client(self) -> Any:
        """A client of the server (never an in-process engine: it would end with the CLI)."""
        from . import MASClient
        from .discovery import discover
        from .loop import LoopThread

        found = discover(self.url or None, self.token or None)
        if found is None:
            self.fail(
                "no running Jupyter server found for this directory; start one (jupyter lab) "
                "or pass --url=URL --token=TOKEN (or set MAS_SERVER_URL and MAS_TOKEN)"
            )
        return MASClient(_Transport(found.url, found.token), LoopThread(), found.how)

    def fail(self, message: str) -> None:
        """Print `jupyter mas NAME: message` (and any indented details) to stderr, exit 1."""
        print(f"jupyter mas {self.name}: {message}", file=sys.stderr)
        self.exit(1)

    def usage_error(self, message: str) -> None:
        """A command line that cannot be read: what is wrong and the usage, exit 2."""
        print(f"jupyter mas {self.name}: {message}", file=sys.stderr)
        print(f"usage: jupyter mas {self.name} {self.usage}".rstrip(), file=sys.stderr)
        self.exit(2)

    def args(self, least: int, most: int) -> list[str]:
        """The positional arguments, checked against their count; a name (SESSION, WORKER,
        NAME in the usage) may not be empty: `""` is no session, not the default one."""
        args = list(self.extra_args)
        if len(args) < least:
            self.usage_error(f"expected {_count(least, 'argument')}, got {len(args)}")
        if len(args) > most:
            extra = " ".join(args[most:])
            self.usage_error(f"unexpected argument{'s' * (len(args) - most > 1)}: {extra}")
        names = [w.strip("[]") for w in self.usage.split() if not w.lstrip("[").startswith("-")]
        for name, arg in zip(names, args, strict=False):
            if arg == "" and not name.endswith("..."):
                self.fail(f"{name} must not be empty")
        return args

    def start(self) -> None:
        """Run the command; client errors become one line and status 1."""
        try:
            self.run()
        except MASClientError as e:
            how = "%mas add --agent demo in a notebook, or + on it in Lab's side panel"
            message = in_option_words(e.message, e.details, add_worker=how)
            lines = [message] + [f"  error: {x}" for x in e.errors if x not in e.message]
            lines += [f"  warning: {w}" for w in e.warnings]
            if self.name == "stop" and e.errors:
                lines.append("  (jupyter mas stop --force stops it anyway)")
            self.fail("\n".join(lines))

    def run(self) -> None:
        """The command's work."""
        raise NotImplementedError


class ListCommand(MASCommand):
    """List sessions and their workers."""

    name = "list"
    usage = "[--status=S] [--kind=K] [--task=T] [--json]"
    description = "List sessions and their workers (--json for machine-readable output)."
    status = Enum(
        ["active", "paused", "stopped"], None, allow_none=True, help="Only sessions in this state."
    ).tag(config=True)
    kind = Enum(
        ["quick", "worktree", "dir"], None, allow_none=True, help="Only sessions of this kind."
    ).tag(config=True)
    task = Unicode(None, allow_none=True, help="Only sessions with this task label.").tag(
        config=True
    )
    as_json = Bool(False, help="Print JSON.").tag(config=True)
    aliases = {
        **_COMMON_ALIASES,
        "status": "ListCommand.status",
        "kind": "ListCommand.kind",
        "task": "ListCommand.task",
    }
    flags = {**_COMMON_FLAGS, "json": ({"ListCommand": {"as_json": True}}, "Print JSON.")}

    def run(self) -> None:
        """Print the sessions."""
        self.args(0, 0)
        table = self.client().sessions(status=self.status, kind=self.kind, task=self.task)
        print(json.dumps([s.data for s in table], indent=2) if self.as_json else repr(table))


class NewCommand(MASCommand):
    """Create a session."""

    name = "new"
    usage = (
        "[NAME] [--agent=BACKEND] [--persona=P] [--kind=quick|worktree|dir] [--template=T] "
        "[--repo=R] [--branch=B] [--base=REV] [--path=P] [--task=T] [--terminal] [--no-wait]"
    )
    description = "Create a session: jupyter mas new [NAME] [--agent=BACKEND] [--kind=...]"
    kind = Enum(
        ["quick", "worktree", "dir"],
        "quick",
        help="quick: a new folder; worktree: a git worktree of --repo; dir: --path, shared.",
    ).tag(config=True)
    template = _text("quick: the template to fill the folder from.")
    repo = _text("worktree: the repository to branch (from this folder).")
    branch = _text("worktree: the branch (default mas/NAME).")
    base = _text("worktree: the revision to start from (default HEAD).")
    path = _text("dir: the existing folder to use, shared (from this folder).")
    task = _text("The task label (e.g. a ticket id).")
    agent = _text("Start an agent of this backend (demo, claude, codex, ...).")
    persona = _text("The agent's role (pm, qa, specialist, ...).")
    terminal = Bool(False).tag(config=True)
    no_wait = Bool(False).tag(config=True)
    aliases = {
        **_COMMON_ALIASES,
        **{
            k: f"NewCommand.{k}"
            for k in ("kind", "template", "repo", "branch", "base", "path", "task")
        },
        "agent": "NewCommand.agent",
        "persona": "NewCommand.persona",
    }
    flags = {
        **_COMMON_FLAGS,
        "terminal": ({"NewCommand": {"terminal": True}}, "Also start a terminal."),
        "no-wait": ({"NewCommand": {"no_wait": True}}, "Do not wait for the agent's prompt."),
    }

    def run(self) -> None:
        """Create it and print it."""
        args = self.args(0, 1)
        if self.persona and not self.agent:
            self.fail("--persona needs --agent=BACKEND")
        client = self.client()
        session = client.create_session(
            args[0] if args else None,
            self.kind,
            template=self.template,
            repo=from_here(self.repo),
            branch=self.branch,
            base=self.base,
            path=from_here(self.path),
            task=self.task,
            agent=self.agent,
            persona=self.persona,
            terminal=self.terminal,
        )
        if self.agent and not self.no_wait:
            session = client.wait_agents_ready(session.id)
        print(repr(session))


class SendCommand(MASCommand):
    """Send a message to an agent and print its reply."""

    name = "send"
    usage = "SESSION [TEXT...] [--worker=W] [--no-wait] [--timeout=S]"
    description = (
        "Send a message and print the reply: jupyter mas send SESSION [TEXT...] "
        "(the text from stdin when not given)"
    )
    worker = Unicode(None, allow_none=True, help="The worker (default: the agent).").tag(
        config=True
    )
    no_wait = Bool(False).tag(config=True)
    timeout = Seconds(
        None, allow_none=True, help="Seconds to wait for the reply (default 600, at most 3600)."
    ).tag(config=True)
    aliases = {
        **_COMMON_ALIASES,
        "worker": "SendCommand.worker",
        "timeout": "SendCommand.timeout",
    }
    flags = {
        **_COMMON_FLAGS,
        "no-wait": ({"SendCommand": {"no_wait": True}}, "Do not wait for the reply."),
    }

    def run(self) -> None:
        """Send and print the reply (the text is read from stdin when not given). While it
        waits, a terminal on stderr shows the progress line (erased before the reply); a
        pipe gets nothing extra. No reply (the agent ended, or is still busy at the
        timeout) is status 1."""
        args = self.args(1, 10_000)
        session, worker = args[0], self.worker
        text = " ".join(args[1:]) if len(args) > 1 else sys.stdin.read()
        if not text.strip():
            self.fail("nothing to send")
        if self.no_wait and self.timeout is not None:
            self.fail(NO_WAIT_TIMEOUT)
        client = self.client()
        progress: Any = contextlib.nullcontext()
        if not self.no_wait and sys.stderr.isatty():
            if worker is None:  # the progress line names it: the session's agent
                worker = client.worker(None, session=session).name
            progress = TerminalProgress(worker, sys.stderr)
        with progress, _next_step(client, session, worker):
            reply = client.send(
                text, worker=worker, session=session, wait=not self.no_wait, timeout=self.timeout
            )
        print(repr(reply).rstrip("\n"))
        if reply.ended:  # no reply: the agent ended (by itself, or paused, deleted, ...)
            self.exit(1)
        if reply.data.get("timed_out"):
            waited = self.timeout if self.timeout is not None else DEFAULT_SEND_TIMEOUT
            where = shlex.join([session, reply.worker])
            sys.stdout.flush()  # the partial reply first, then the error under it
            self.fail(
                f"{reply.worker} is still busy after {waited:g} s (no reply yet); see what "
                f"it is doing with: jupyter mas attach {where} (Ctrl-] detaches, the agent "
                "goes on)"
            )


class AttachCommand(MASCommand):
    """Take over a worker's console from this terminal."""

    name = "attach"
    usage = "SESSION [WORKER]"
    description = "Connect this terminal to a worker's console; detach with Ctrl-]."

    def run(self) -> None:
        """Attach until detached or the worker exits."""
        from .attach import attach

        args = self.args(1, 2)
        client = self.client()
        how = attach(client, args[0], args[1] if len(args) > 1 else None)
        print(f"\r\n[{how}]")


class StopCommand(MASCommand):
    """Stop a session."""

    name = "stop"
    usage = "SESSION [--force]"
    description = "Stop a session; refused (with the reasons) on busy agents unless --force."
    force = Bool(False).tag(config=True)
    flags = {**_COMMON_FLAGS, "force": ({"StopCommand": {"force": True}}, "Stop anyway.")}

    def run(self) -> None:
        """Stop it and print the warnings."""
        args = self.args(1, 1)
        session = self.client().stop(args[0], force=self.force)
        print(f"stopped {session.name}")
        for warning in session.data.get("warnings") or []:
            print(f"warning: {warning}")


class _SessionCommand(MASCommand):
    """A command on one session that prints the session after: the client method `name`."""

    usage = "SESSION"

    def run(self) -> None:
        """Call the client method named like the command and print the session."""
        args = self.args(1, 1)
        print(repr(getattr(self.client(), self.name)(args[0])))


class PauseCommand(_SessionCommand):
    """Pause a session."""

    name = "pause"
    description = "Pause a session: its processes stop, its workspace and conversations stay."


class ResumeCommand(MASCommand):
    """Resume a session."""

    name = "resume"
    usage = "SESSION [--no-wait]"
    description = "Resume a paused or stopped session; agents continue their conversation."
    no_wait = Bool(False).tag(config=True)
    flags = {
        **_COMMON_FLAGS,
        "no-wait": ({"ResumeCommand": {"no_wait": True}}, "Do not wait for the agents' prompts."),
    }

    def run(self) -> None:
        """Resume it and, as `new` does, wait for its agents' prompts before printing it
        (printed at once, its agents read `unknown`: not yet known)."""
        args = self.args(1, 1)
        client = self.client()
        session = client.resume(args[0])
        if not self.no_wait:
            session = client.wait_agents_ready(session.id)
        print(repr(session))


class RestartCommand(MASCommand):
    """Restart a worker."""

    name = "restart"
    usage = "SESSION [WORKER]"
    description = (
        "Restart a worker (default: the session's agent); an agent continues its conversation."
    )

    def run(self) -> None:
        """Restart it."""
        args = self.args(1, 2)
        worker = args[1] if len(args) > 1 else None
        client = self.client()
        with _next_step(client, args[0], worker):
            print(repr(client.restart(worker, session=args[0])))


class DeleteCommand(MASCommand):
    """Delete a session."""

    name = "delete"
    usage = "SESSION [--purge] [--force]"
    description = (
        "Delete a session; --purge also removes its workspace (a dir session's folder is kept)."
    )
    purge = Bool(False).tag(config=True)
    force = Bool(False).tag(config=True)
    flags = {
        **_COMMON_FLAGS,
        "purge": ({"DeleteCommand": {"purge": True}}, "Also remove the workspace."),
        "force": ({"DeleteCommand": {"force": True}}, "Purge a worktree with changes."),
    }

    def run(self) -> None:
        """Delete it; say what became of its workspace and of a worktree's changes."""
        args = self.args(1, 1)
        client = self.client()
        session = client.session(args[0])
        rescue_ref = client.delete(session, purge=self.purge, force=self.force)
        print(f"deleted {args[0]}" + deleted_text(session, self.purge, rescue_ref))


class MASApp(JupyterApp):
    """jupyter mas: multi-agent sessions from the command line."""

    name = "jupyter-mas"
    version = __version__
    description = "Run and watch coding agents in mas_jupyter sessions from a terminal."
    subcommands = {
        cls.name: (cls, cls.description)
        for cls in (
            ListCommand,
            NewCommand,
            SendCommand,
            AttachCommand,
            PauseCommand,
            ResumeCommand,
            RestartCommand,
            StopCommand,
            DeleteCommand,
        )
    }

    def start(self) -> None:
        """Run the subcommand; without one (or with an unknown one), the usage and status 2."""
        if self.subapp is None:
            _usage_error(self.extra_args[0] if self.extra_args else None)
        self.subapp.start()


def _usage_error(word: str | None) -> NoReturn:
    """The usage, after what was wrong (an unknown command, with the nearest one), status 2."""
    names = list(MASApp.subcommands)
    if word is not None:
        near = difflib.get_close_matches(word, names, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        print(f"jupyter mas: unknown command {word!r}{hint}", file=sys.stderr)
    print(f"usage: jupyter mas {{{','.join(names)}}} [options]", file=sys.stderr)
    print("       jupyter mas SUBCOMMAND --help", file=sys.stderr)
    sys.exit(2)


def _command_first(argv: list[str]) -> list[str]:
    """The arguments with the command first, where traitlets looks for it: options before it
    (`jupyter mas --url=URL list`) were taken as the app's, unknown to it, and the command
    then read as unknown; an unknown command was not named as one (`jupyter mas lst --json`
    gave traitlets' own parser's error)."""
    if not argv or argv[0] in MASApp.subcommands:
        return argv
    if not argv[0].startswith("-"):
        _usage_error(argv[0])
    for i, arg in enumerate(argv):
        if arg in MASApp.subcommands:
            return [arg, *argv[:i], *argv[i + 1 :]]
    return argv  # --help, --version: the app's own


@contextlib.contextmanager
def _next_step(client: Any, session: str, worker: str | None) -> Any:
    """A refusal because the worker is not running names the command that runs it again,
    as docs/cli.md says the CLI's hints do (the server's `resume it first` names none):
    `jupyter mas resume SESSION` for a paused or stopped session, else `jupyter mas restart
    SESSION WORKER` for a worker that exited."""
    try:
        yield
    except Conflict as e:
        with contextlib.suppress(MASClientError):
            record = client.worker(worker, session=session)
            if client.session(record.session_key).status != "active":
                e.message += f" (jupyter mas resume {shlex.quote(session)})"
            elif record.status == "exited":
                e.message += f" (jupyter mas restart {shlex.join([session, record.name])})"
        raise


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("s" if n != 1 else "")


def main(argv: list[str] | None = None) -> None:
    """`jupyter mas`. A closed stdout (`jupyter mas list | head -1`) ends it quietly with
    status 141, as SIGPIPE ends other commands (Python ignores SIGPIPE, and restoring it
    would let a dropped socket kill the command): stdout goes to /dev/null, as Python's docs
    advise, so that the flush at exit does not fail again. Ctrl-C (while a send waits, say)
    ends it with one line and status 130, as a shell reports SIGINT, not a traceback."""
    try:
        try:
            MASApp.launch_instance(_command_first(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except KeyboardInterrupt:
        print("\njupyter mas: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
