"""`jupyter mas`: sessions from a plain terminal (list, new, send, attach, stop, delete).

It talks to a running Jupyter server, found like the Python client finds it (--url/--token,
MAS_SERVER_URL/MAS_TOKEN, else the running server whose root contains the working
directory). Errors print one line and exit with status 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, Enum, Float, Unicode

from .._version import __version__
from .errors import MASClientError

_COMMON_ALIASES = {
    **base_aliases,
    "url": "MASCommand.url",
    "token": "MASCommand.token",
}
_COMMON_FLAGS = {**base_flags}


class MASCommand(JupyterApp):
    """What every `jupyter mas` subcommand shares: finding the server, printing errors."""

    version = __version__
    url = Unicode("", help="The Jupyter server's URL (default: discovered).").tag(config=True)
    token = Unicode("", help="The server's token (default: discovered).").tag(config=True)
    aliases = _COMMON_ALIASES
    flags = _COMMON_FLAGS

    def client(self) -> Any:
        """A client of the server (never an in-process engine: it would end with the CLI)."""
        from . import MASClient
        from .discovery import discover
        from .loop import LoopThread
        from .transport import HTTPTransport

        found = discover(self.url or None, self.token or None)
        if found is None:
            self.fail(
                "no running Jupyter server found for this directory; start one (jupyter lab) "
                "or pass --url=URL --token=TOKEN (or set MAS_SERVER_URL and MAS_TOKEN)"
            )
        return MASClient(HTTPTransport(found.url, found.token), LoopThread(), found.how)

    def fail(self, message: str) -> None:
        """Print one line to stderr and exit 1."""
        print(f"jupyter mas {self.name}: {message}", file=sys.stderr)
        self.exit(1)

    def args(self, least: int, most: int, usage: str) -> list[str]:
        """The positional arguments, checked against their count."""
        args = list(self.extra_args)
        if not least <= len(args) <= most:
            self.fail(f"usage: jupyter mas {self.name} {usage}")
        return args

    def start(self) -> None:
        """Run the command; client errors become one line and status 1."""
        try:
            self.run()
        except MASClientError as e:
            lines = [e.message] + [f"  error: {x}" for x in e.errors if x not in e.message]
            lines += [f"  warning: {w}" for w in e.warnings]
            self.fail("\n".join(lines))

    def run(self) -> None:
        """The command's work."""
        raise NotImplementedError


class ListCommand(MASCommand):
    """List sessions and their workers."""

    name = "list"
    description = "List sessions and their workers (--json for machine-readable output)."
    status = Enum(["active", "paused", "stopped"], None, allow_none=True).tag(config=True)
    kind = Enum(["quick", "worktree", "dir"], None, allow_none=True).tag(config=True)
    task = Unicode(None, allow_none=True).tag(config=True)
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
        self.args(0, 0, "[--status=S] [--kind=K] [--task=T] [--json]")
        table = self.client().sessions(status=self.status, kind=self.kind, task=self.task)
        print(json.dumps([s.data for s in table], indent=2) if self.as_json else repr(table))


class NewCommand(MASCommand):
    """Create a session."""

    name = "new"
    description = "Create a session: jupyter mas new [NAME] [--agent=BACKEND] [--kind=...]"
    kind = Enum(["quick", "worktree", "dir"], "quick").tag(config=True)
    template = Unicode(None, allow_none=True).tag(config=True)
    repo = Unicode(None, allow_none=True).tag(config=True)
    branch = Unicode(None, allow_none=True).tag(config=True)
    base = Unicode(None, allow_none=True).tag(config=True)
    path = Unicode(None, allow_none=True).tag(config=True)
    task = Unicode(None, allow_none=True).tag(config=True)
    agent = Unicode(None, allow_none=True).tag(config=True)
    persona = Unicode(None, allow_none=True).tag(config=True)
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
        args = self.args(0, 1, "[NAME] [--agent=BACKEND] [--kind=quick|worktree|dir] ...")
        if self.persona and not self.agent:
            self.fail("--persona needs --agent=BACKEND")
        client = self.client()
        session = client.create_session(
            args[0] if args else None,
            self.kind,
            template=self.template,
            repo=self.repo,
            branch=self.branch,
            base=self.base,
            path=self.path,
            task=self.task,
            agent=self.agent,
            persona=self.persona,
            terminal=self.terminal,
        )
        if self.agent and not self.no_wait:
            agent = next(w for w in session.workers if w.kind == "agent")
            client.wait_ready(agent.id, session=session.id)
            session = client.session(session.id)
        print(repr(session))


class SendCommand(MASCommand):
    """Send a message to an agent and print its reply."""

    name = "send"
    description = (
        "Send a message and print the reply: jupyter mas send SESSION [TEXT...] "
        "(the text from stdin when not given)"
    )
    worker = Unicode(None, allow_none=True, help="The worker (default: the agent).").tag(
        config=True
    )
    no_wait = Bool(False).tag(config=True)
    timeout = Float(None, allow_none=True).tag(config=True)
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
        """Send and print the reply (the text is read from stdin when not given)."""
        args = self.args(1, 10_000, "SESSION [TEXT...] [--worker=W] [--no-wait] [--timeout=S]")
        text = " ".join(args[1:]) if len(args) > 1 else sys.stdin.read()
        if not text.strip():
            self.fail("nothing to send")
        reply = self.client().send(
            text, worker=self.worker, session=args[0], wait=not self.no_wait, timeout=self.timeout
        )
        print(repr(reply))


class AttachCommand(MASCommand):
    """Take over a worker's console from this terminal."""

    name = "attach"
    description = "Connect this terminal to a worker's console; detach with Ctrl-]."

    def run(self) -> None:
        """Attach until detached or the worker exits."""
        from .attach import attach

        args = self.args(1, 2, "SESSION [WORKER]")
        client = self.client()
        how = attach(client, args[0], args[1] if len(args) > 1 else None)
        print(f"\r\n[{how}]")


class StopCommand(MASCommand):
    """Stop a session."""

    name = "stop"
    description = "Stop a session; refused (with the reasons) on busy agents unless --force."
    force = Bool(False).tag(config=True)
    flags = {**_COMMON_FLAGS, "force": ({"StopCommand": {"force": True}}, "Stop anyway.")}

    def run(self) -> None:
        """Stop it and print the warnings."""
        args = self.args(1, 1, "SESSION [--force]")
        session = self.client().stop(args[0], force=self.force)
        print(f"stopped {session.name}")
        for warning in session.data.get("warnings") or []:
            print(f"warning: {warning}")


class _SessionCommand(MASCommand):
    """A command on one session that prints the session after: the client method `name`."""

    def run(self) -> None:
        """Call the client method named like the command and print the session."""
        args = self.args(1, 1, "SESSION")
        print(repr(getattr(self.client(), self.name)(args[0])))


class PauseCommand(_SessionCommand):
    """Pause a session."""

    name = "pause"
    description = "Pause a session: its processes stop, its workspace and conversations stay."


class ResumeCommand(_SessionCommand):
    """Resume a session."""

    name = "resume"
    description = "Resume a paused or stopped session; agents continue their conversation."


class RestartCommand(MASCommand):
    """Restart a worker."""

    name = "restart"
    description = (
        "Restart a worker (default: the session's agent); an agent continues its conversation."
    )

    def run(self) -> None:
        """Restart it."""
        args = self.args(1, 2, "SESSION [WORKER]")
        worker = args[1] if len(args) > 1 else None
        print(repr(self.client().restart(worker, session=args[0])))


class DeleteCommand(MASCommand):
    """Delete a session."""

    name = "delete"
    description = "Delete a session; --purge also removes its workspace."
    purge = Bool(False).tag(config=True)
    force = Bool(False).tag(config=True)
    flags = {
        **_COMMON_FLAGS,
        "purge": ({"DeleteCommand": {"purge": True}}, "Also remove the workspace."),
        "force": ({"DeleteCommand": {"force": True}}, "Purge a worktree with changes."),
    }

    def run(self) -> None:
        """Delete it."""
        args = self.args(1, 1, "SESSION [--purge] [--force]")
        self.client().delete(args[0], purge=self.purge, force=self.force)
        print(f"deleted {args[0]}" + (" and its workspace" if self.purge else ""))


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
        """Run the subcommand, or print the list of them."""
        if self.subapp is None:
            print(f"usage: jupyter mas {{{','.join(self.subcommands)}}} [options]")
            print("       jupyter mas SUBCOMMAND --help")
            self.exit(2)
        self.subapp.start()


main = MASApp.launch_instance

if __name__ == "__main__":
    main()
