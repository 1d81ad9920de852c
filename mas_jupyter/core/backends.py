"""The registry of what can run in a worker: backends (agent CLIs, shells), and templates.

A backend says how to start one agent CLI (argv, the argv that continues its last
conversation, environment), which file in the workspace it reads instructions from, how to type
a message into it, and the regexes over its rendered screen that tell its activity (see
activity.py). Built-ins cover claude, codex, aider, gemini, a shell and the project's own demo
agent; configuration (`c.MASManager.backends`) and the `mas_jupyter.backends` entry-point group
add or change them. Their patterns were written from the screens the real CLIs show; the
fixtures under tests/core/fixtures/screens/ are those screens, and SOURCE.md there says how
each was obtained.

A template is a directory copied into a new quick workspace. Personas (the roles an agent
plays) are in personas.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from importlib import metadata

from . import validate
from .activity import ActivityRules, compile_patterns
from .errors import InvalidError
from .screen import strip_ansi

ENTRY_POINT_GROUP = "mas_jupyter.backends"
BUILTIN_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
# A conversation id goes into argv: it must never read as an option or carry odd characters.
_CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$")


@dataclass
class Backend:
    """How to run one agent CLI or shell in a worker, and how to read its screen."""

    name: str
    argv: list[str]
    description: str = ""
    resume_argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    instructions_file: str | None = None
    patterns: dict[str, list[str]] = field(default_factory=dict)
    submit: str = "\r"
    paste: str = "bracketed"
    idle_stable_seconds: float = 0.4
    kind: str = "agent"
    persona_delivery: str = "file"
    # How to get the program, shown when it is missing.
    install_hint: str | None = None
    # Added to argv (and resume argv) when an instructions file was written, for CLIs that do
    # not read it by themselves (aider reads conventions only when given --read).
    instructions_args: list[str] = field(default_factory=list)
    # A regex whose group 1 is the conversation id the CLI prints (e.g. on exit), and the argv
    # that resumes exactly that conversation ("{conversation_id}" is replaced).
    conversation_id_pattern: str | None = None
    resume_id_argv: list[str] | None = None
    # Set (not configurable) on an entry whose configuration or entry point is invalid: why.
    # It stands in for that name so the name is listed unavailable with this reason; it has
    # no argv and is never started, and nothing of a built-in of that name is used instead.
    invalid: str | None = None

    def availability(self, path: str | None = None) -> tuple[bool, str | None]:
        """Whether the program can be started here, and if not, why and what to do."""
        if self.invalid:
            return False, self.invalid
        program = self.argv[0]
        if shutil.which(program, path=path):
            return True, None
        if os.sep in program:
            reason = f"program {program!r} does not exist or is not executable"
        else:
            reason = f"program {program!r} not found on PATH"
        if self.install_hint:
            return False, f"{reason}; install it with: {self.install_hint}"
        return False, (
            f"{reason}; install it, or set its argv in c.MASManager.backends[{self.name!r}]"
        )

    def command(
        self,
        resume: bool = False,
        instructions: bool = False,
        conversation_id: str | None = None,
    ) -> list[str]:
        """The argv to start it: fresh, or continuing (a known conversation, else the last)."""
        if conversation_id is not None and not _CONVERSATION_ID_RE.match(conversation_id):
            conversation_id = None
        if resume and conversation_id and self.resume_id_argv:
            argv = [a.replace("{conversation_id}", conversation_id) for a in self.resume_id_argv]
        elif resume and self.resume_argv:
            argv = list(self.resume_argv)
        else:
            argv = list(self.argv)
        if instructions and self.instructions_args:
            argv += self.instructions_args
        return argv

    def conversation_id(self, text: str) -> str | None:
        """The conversation id the CLI printed in `text` (its last one), if it prints one."""
        if not self.conversation_id_pattern:
            return None
        found = re.findall(self.conversation_id_pattern, strip_ansi(text))
        found = [f for f in found if isinstance(f, str) and _CONVERSATION_ID_RE.match(f)]
        return found[-1] if found else None

    def rules(self) -> ActivityRules:
        """The compiled activity rules of this backend."""
        return ActivityRules(self.patterns, self.idle_stable_seconds, self.name)

    def to_dict(self, path: str | None = None) -> dict:
        """The backend as the API lists it; environment values are not shown (they may hold
        keys), only their names."""
        available, reason = self.availability(path)
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "argv": list(self.argv),
            "resume_argv": list(self.resume_argv) if self.resume_argv else None,
            "env_keys": sorted(self.env),
            "instructions_file": self.instructions_file,
            "persona_delivery": self.persona_delivery,
            "patterns": {k: list(v) for k, v in self.patterns.items()},
            "submit": self.submit,
            "paste": self.paste,
            "idle_stable_seconds": self.idle_stable_seconds,
            "install_hint": self.install_hint,
            "available": available,
            "reason": reason,
        }


# Activity patterns of the built-ins. Each was checked against the live screens in
# tests/core/fixtures/screens/<backend>/ (see SOURCE.md there for versions and how).
CLAUDE_PATTERNS = {
    # Every dialog (permission, trust, API key, pickers) ends with an "Esc to cancel" footer
    # and shows a selected "❯ 1. Yes"-style option; neither stays on screen once answered.
    "waiting": [r"Esc to cancel", r"^ *❯[ \u00a0]\d+\. (?:Yes|No)\b"],
    # The footer says "esc to interrupt" (older versions put it after the spinner).
    "busy": [r"(?i)esc to interrupt"],
    # The prompt box: a rule line, then "❯" and a no-break space (possibly with typed text);
    # or the footer under it.
    "idle": [r"^─{20,}\n❯(?:[ \u00a0]|$)", r"\? for shortcuts"],
}
CODEX_PATTERNS = {
    "waiting": [
        r"Press enter to confirm or esc to cancel",
        r"Would you like to (?:run|make|grant|send)\b",
        r"^ *› \d+\. (?:Yes|Trust)\b",
        r"Press enter to (?:continue|save)",
        r"enter continue · esc back",
    ],
    # "• Working (3s • esc to interrupt)", "Reconnecting... 3/5 (0s • esc to interrupt)".
    "busy": [r"esc to interrupt"],
    "idle": [r"^› Ask Codex to do anything", r"\? for shortcuts"],
}
GEMINI_PATTERNS = {
    "waiting": [
        r"Allow execution of\b",
        r"Apply this change\?",
        r"Do you want to proceed\?",
        r"Do you trust the files in this folder\?",
        r"How would you like to authenticate",
        r"Press Enter to submit, Esc to cancel",
        r"^[│ ]*● \d+\. ",
    ],
    # "⠧ Thinking... (esc to cancel, 3s)".
    "busy": [r"\(esc to cancel, \d+[smh]"],
    "idle": [r"Type your message or @path/to/file", r"\? for shortcuts"],
}
AIDER_PATTERNS = {
    # confirm_ask() ends its question with "(Y)es/(N)o[...] [Yes]: " and waits on that line;
    # anchored at the end because answered questions stay in the scrollback.
    "waiting": [r"\(Y\)es/\(N\)o[^\n]*\[[^\]\n]*\]: *\Z"],
    # The spinner line "█░  Waiting for gpt-4o" is the last line while it waits for the model.
    "busy": [r"Waiting for \S+\Z", r"Retrying in [\d.]+ seconds\.*\Z"],
    # The prompt ("> ", "ask> ", "architect> ", "multi> ") on the last line.
    "idle": [r"^(?:[\w-]+ )*[\w-]*>(?: [^\n]*)?\Z"],
}
SHELL_PATTERNS = {
    "waiting": [
        r"\[sudo\] password for [^\n]*: *\Z",
        r"(?i)^[^\n]*password[^\n]*: *\Z",
        r"(?i)[(\[](?:y/n|yes/no)[)\]]\?? *:? *\Z",
    ],
    "busy": [],
    "idle": [r"[$#%>] *\Z"],
}
DEMO_PATTERNS = {
    "waiting": [r"\(yes/no\) *\Z"],
    "busy": [r"^working\.\.\.[^\n]*\Z"],
    "idle": [r"^demo> *\Z"],
}


def _default_shell() -> str:
    """The user's login shell if it is an absolute path to a program, else /bin/bash."""
    shell = os.environ.get("SHELL", "")
    if os.path.isabs(shell) and os.access(shell, os.X_OK):
        return shell
    return "/bin/bash"


def builtin_backends() -> dict[str, Backend]:
    """The backends that ship with mas_jupyter."""
    demo = [sys.executable, "-m", "mas_jupyter.demo_agent"]
    return {
        "claude": Backend(
            name="claude",
            description="Claude Code, Anthropic's coding agent",
            argv=["claude"],
            resume_argv=["claude", "--continue"],
            instructions_file="CLAUDE.md",
            patterns=CLAUDE_PATTERNS,
            install_hint="npm install -g @anthropic-ai/claude-code",
            conversation_id_pattern=r"claude --resume ([0-9a-f]{8}-[0-9a-f-]{27})",
            resume_id_argv=["claude", "--resume", "{conversation_id}"],
        ),
        "codex": Backend(
            name="codex",
            description="Codex CLI, OpenAI's coding agent",
            argv=["codex"],
            resume_argv=["codex", "resume", "--last"],
            instructions_file="AGENTS.md",
            patterns=CODEX_PATTERNS,
            install_hint="npm install -g @openai/codex",
            conversation_id_pattern=r"codex resume ([0-9a-f]{8}-[0-9a-f-]{27})",
            resume_id_argv=["codex", "resume", "{conversation_id}"],
        ),
        "aider": Backend(
            name="aider",
            description="Aider, AI pair programming in the terminal",
            argv=["aider"],
            resume_argv=["aider", "--restore-chat-history"],
            instructions_file="CONVENTIONS.md",
            instructions_args=["--read", "CONVENTIONS.md"],
            patterns=AIDER_PATTERNS,
            idle_stable_seconds=0.5,
            install_hint="python -m pip install aider-chat",
        ),
        "gemini": Backend(
            name="gemini",
            description="Gemini CLI, Google's coding agent",
            argv=["gemini"],
            resume_argv=["gemini", "--resume"],
            instructions_file="GEMINI.md",
            patterns=GEMINI_PATTERNS,
            install_hint="npm install -g @google/gemini-cli",
        ),
        "shell": Backend(
            name="shell",
            description="An interactive shell (your $SHELL, with your usual startup files)",
            argv=[_default_shell(), "-i"],
            kind="terminal",
            patterns=SHELL_PATTERNS,
            paste="plain",
            persona_delivery="message",
        ),
        "demo": Backend(
            name="demo",
            description="mas demo agent: no model, deterministic replies (for demos and tests)",
            argv=demo,
            resume_argv=[*demo, "--continue"],
            patterns=DEMO_PATTERNS,
            persona_delivery="message",
        ),
    }


_FIELDS = {f.name for f in dataclasses.fields(Backend)} - {"invalid"}


def _argv(value: object, name: str, what: str) -> list[str]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(a, str) and a and "\x00" not in a for a in value)
    ):
        raise InvalidError(f"backend {name!r}: {what} must be a non-empty list of strings")
    return list(value)


def validate_backend(data: dict, name: str) -> Backend:
    """A Backend from a dict of fields, every field checked; errors name backend and field."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidError(
            f"backend {name!r}: unknown field(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(_FIELDS))}"
        )
    validate.name(name, "backend name")
    if data.get("name", name) != name:
        raise InvalidError(f"backend {name!r}: name {data['name']!r} differs from its key")
    if "argv" not in data:
        raise InvalidError(f"backend {name!r}: argv is required for a new backend")
    d = dict(data, name=name)
    d["argv"] = _argv(d["argv"], name, "argv")
    for key in ("resume_argv", "resume_id_argv"):
        if d.get(key) is not None:
            d[key] = _argv(d[key], name, key)
    try:
        d["env"] = validate.env(d.get("env"))
    except InvalidError as exc:
        raise InvalidError(f"backend {name!r}: env: {exc.message}") from exc
    if d.get("instructions_file") is not None:
        try:
            validate.name(d["instructions_file"], "instructions_file")
        except InvalidError as exc:
            raise InvalidError(f"backend {name!r}: {exc.message}") from exc
    args = d.get("instructions_args")
    d["instructions_args"] = _argv(args, name, "instructions_args") if args else []
    patterns = d.get("patterns") or {}
    compile_patterns(patterns, name)
    d["patterns"] = {k: list(v) for k, v in patterns.items()}
    for key in ("description", "install_hint", "conversation_id_pattern"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise InvalidError(f"backend {name!r}: {key} must be a string")
    if d.get("conversation_id_pattern"):
        try:
            if re.compile(d["conversation_id_pattern"]).groups != 1:
                raise InvalidError(
                    f"backend {name!r}: conversation_id_pattern must have exactly one group"
                )
        except re.error as exc:
            raise InvalidError(
                f"backend {name!r}: conversation_id_pattern is not a valid regex: {exc}"
            ) from exc
    submit = d.get("submit", "\r")
    if not isinstance(submit, str) or not 0 < len(submit) <= 16:
        raise InvalidError(f"backend {name!r}: submit must be a string of 1 to 16 characters")
    for key, allowed in (
        ("paste", ("bracketed", "plain")),
        ("kind", ("agent", "terminal")),
        ("persona_delivery", ("file", "message")),
    ):
        if key in d and d[key] not in allowed:
            raise InvalidError(
                f"backend {name!r}: {key} must be one of {', '.join(allowed)} (got {d[key]!r})"
            )
    stable = d.get("idle_stable_seconds", 0.4)
    if isinstance(stable, bool) or not isinstance(stable, (int, float)) or not 0 <= stable <= 60:
        raise InvalidError(f"backend {name!r}: idle_stable_seconds must be between 0 and 60")
    d["idle_stable_seconds"] = float(stable)
    return Backend(**d)


def load_backends(configured: dict | None = None, entry_points: bool = True) -> dict[str, Backend]:
    """The built-in backends, then entry-point backends, then configured ones over them.

    A configured dict for an existing name changes only the fields it gives; its `patterns`
    replace the built-in list of each kind it names ("idle", "busy", "waiting") and keep the
    others. A new name needs at least `argv`.

    An entry that is invalid (or an entry point that fails) never stops the others: its name
    gets an `invalid` stand-in (see `Backend.invalid`), also over a built-in of that name.
    """
    backends = builtin_backends()
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            name, backend = _entry_point_backend(ep)
            backends[name] = backend
    for key, data in (configured or {}).items():
        name = key if isinstance(key, str) else repr(key)
        base = backends.get(name)
        if base is not None and base.invalid:
            continue  # nothing valid to change: a broken entry point stays unavailable
        try:
            if not isinstance(key, str):
                raise InvalidError(f"backend name {key!r} must be a string")
            backends[name] = _configured_backend(name, data, base)
        except InvalidError as exc:
            problem = exc.message.removeprefix(f"backend {name!r}: ")
            reason = f"invalid configuration (c.MASManager.backends[{key!r}]): {problem}"
            backends[name] = _stand_in(name, reason, data, base)
    return backends


def _configured_backend(name: str, data: object, base: Backend | None) -> Backend:
    if not isinstance(data, dict):
        raise InvalidError(f"backend {name!r}: configuration must be a dict of fields")
    if base is not None:
        merged = _fields(base)
        patterns = dict(merged["patterns"])
        given = data.get("patterns")
        if isinstance(given, dict):
            patterns.update(given)
        merged.update(data)
        if isinstance(given, dict):
            merged["patterns"] = patterns
        data = merged
    return validate_backend(data, name)


def _entry_point_backend(ep: metadata.EntryPoint) -> tuple[str, Backend]:
    """The backend an entry point gives, or a stand-in saying why it cannot be used."""
    name = ep.name
    try:
        loaded = ep.load()
        if callable(loaded) and not isinstance(loaded, Backend):
            loaded = loaded()
    except Exception as exc:
        return name, _stand_in(
            name, f"backend entry point {ep.name!r} ({ep.value}) failed to load: {exc}"
        )
    if isinstance(loaded, Backend):
        loaded = _fields(loaded)
    if not isinstance(loaded, dict):
        return name, _stand_in(
            name,
            f"backend entry point {ep.name!r} ({ep.value}) must give a Backend or a dict, "
            f"not {type(loaded).__name__}",
        )
    given = loaded.get("name", ep.name)
    name = given if isinstance(given, str) else ep.name
    try:
        return name, validate_backend(loaded, name)
    except InvalidError as exc:
        problem = exc.message.removeprefix(f"backend {name!r}: ")
        return name, _stand_in(
            name, f"invalid backend entry point {ep.name!r} ({ep.value}): {problem}", loaded
        )


def _fields(backend: Backend) -> dict:
    """A backend's configurable fields, as a dict to change and validate again."""
    fields = dataclasses.asdict(backend)
    del fields["invalid"]
    return fields


def _stand_in(name: str, reason: str, data: object = None, base: Backend | None = None) -> Backend:
    """What is listed for an invalid entry: unavailable with `reason`, with the description
    and kind it was meant to have when those are readable, and nothing to run."""
    data = data if isinstance(data, dict) else {}
    description = data.get("description", base.description if base else "")
    kind = data.get("kind", base.kind if base else "agent")
    return Backend(
        name=name,
        argv=[],
        description=description if isinstance(description, str) else "",
        kind=kind if kind in ("agent", "terminal") else "agent",
        invalid=reason,
    )


def list_templates(extra_dir: str | None = None) -> dict[str, str]:
    """Template name -> directory: the built-ins, then subdirectories of `extra_dir`.

    An extra template with a built-in's name replaces it. Symlinked directories and names that
    are not valid names are ignored, so a template can never point outside its directory.
    """
    found: dict[str, str] = {}
    for base in (BUILTIN_TEMPLATES, extra_dir):
        if base and os.path.isdir(base):
            for entry in sorted(os.listdir(base)):
                path = _template_path(base, entry)
                if path:
                    found[entry] = path
    return found


def find_template(name: str, extra_dir: str | None = None) -> str | None:
    """The directory of one template (a valid name), by the same rules as list_templates."""
    for base in (extra_dir, BUILTIN_TEMPLATES):
        path = _template_path(base, name) if base else None
        if path:
            return path
    return None


def _template_path(base: str, name: str) -> str | None:
    path = os.path.join(base, name)
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    if base != BUILTIN_TEMPLATES:
        try:
            validate.name(name, "template name")
        except InvalidError:
            return None
    return path
