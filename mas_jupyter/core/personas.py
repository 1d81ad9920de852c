"""Personas: the role an agent plays (pm, qa, specialist, or a <name>.md file of the personas
directory). Its instructions are written into the backend's instructions file in the workspace,
in a section of their own that names its worker and goes when that worker does, or sent as the
first message when the backend reads no file (or the file holds another worker's section).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import validate
from .errors import ConflictError, ForbiddenError, InvalidError

if TYPE_CHECKING:
    from .backends import Backend

PERSONA_FILE_MAX = 64 * 1024
# A section's first line names the worker whose persona it holds (sections an earlier
# version wrote name none: their owner reads as "").
_START = "<!-- mas_jupyter persona{of}: start (managed by mas_jupyter; edits are replaced) -->"
PERSONA_END = "<!-- mas_jupyter persona: end -->"
_SECTION_RE = re.compile(
    re.escape(_START).replace(re.escape("{of}"), r'(?: of worker "(?P<owner>[^"\r\n]*)")?')
    + r".*?"
    + re.escape(PERSONA_END),
    re.DOTALL,
)
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FRONT_MATTER_RE = re.compile(r"^(icon|title)\s*:\s*(.*?)\s*$", re.IGNORECASE)


@dataclass
class Persona:
    """A role an agent plays: a name, an icon, a title and an instructions template."""

    name: str
    icon: str
    title: str
    instructions: str

    def render(self, context: dict) -> str:
        """The instructions with {session}, {task}, {workspace}, {worker}... filled in.

        Placeholders not in `context` stay as written, and other braces (code samples in a
        user's persona file) are left alone, which str.format would choke on.
        """
        values = {k: str(v) for k, v in context.items() if v is not None}
        return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), self.instructions)

    def to_dict(self) -> dict:
        """The persona as the API lists it."""
        return dataclasses.asdict(self)


_COMMON = """
You work in the mas_jupyter session "{session}" as the worker "{worker}", in the workspace
{workspace}. Other agents may work in the same session; the person who started you watches the
session from Jupyter. Current task: {task}.

Keep your work inside this workspace. When you need a decision from the person, ask one clear
question and wait. When you finish a step, say in two or three sentences what you did, what you
checked, and what is left.
"""

BUILTIN_PERSONAS = {
    "pm": Persona(
        name="pm",
        icon="🧭",
        title="Product manager",
        instructions="""# Your role: product manager
"""
        + _COMMON
        + """
You own the what and the why, not the code. For the task:

1. Restate the goal in one paragraph, in the user's words: who needs it and what changes for
   them when it is done.
2. Write the acceptance criteria as a short checklist that someone else could verify without
   asking you (inputs, expected results, edge cases, what must not break).
3. Split the work into small steps, each one deliverable and testable on its own, and order
   them so that the riskiest unknown is settled first.
4. List open questions and assumptions explicitly; ask the person about the ones that change
   the plan instead of guessing.

Keep the plan in PLAN.md in the workspace and update it as things are decided. Prefer cutting
scope to missing quality; say what you cut and why.
""",
    ),
    "qa": Persona(
        name="qa",
        icon="🔍",
        title="Quality assurance",
        instructions="""# Your role: quality assurance
"""
        + _COMMON
        + """
You find out whether the work really does what it claims. For the task:

1. Read the goal and acceptance criteria (PLAN.md if there is one) and derive test cases from
   them: the normal path, boundaries, bad input, failure of dependencies, and what happens on
   a second run.
2. Run the existing tests first and report their result exactly. Then add tests for what is
   not covered; a test must fail when the feature is broken (check that it does).
3. Reproduce every bug before reporting it. Report it with the smallest steps to reproduce,
   what you expected, what happened, and the evidence (command, output, file and line).
4. Do not fix product code yourself unless asked; propose the fix instead.

End with a verdict: ready, ready with known issues (list them), or not ready (why).
""",
    ),
    "specialist": Persona(
        name="specialist",
        icon="🛠️",
        title="Specialist engineer",
        instructions="""# Your role: specialist engineer
"""
        + _COMMON
        + """
You implement. For the task:

1. Read the relevant code and data before changing anything, and follow the conventions you
   find there (layout, naming, style, test framework).
2. Make the smallest change that fully solves the task; no drive-by rewrites. Explain the
   approach in a few sentences before a large change.
3. Add or update tests with the change and run them; run the linters the project uses. Never
   claim something works without having run it.
4. For data work, state the data's shape and any cleaning you did, keep notebooks runnable
   top to bottom, and put reusable code in modules rather than cells.
5. Commit in small, well-described steps if the workspace is a git repository.

When something is ambiguous, make a reasonable choice, write it down, and say so.
""",
    ),
}


def _parse_persona(name: str, text: str) -> Persona:
    """A persona from a <name>.md file: optional icon:/title: lines (or --- front matter)."""
    lines = text.splitlines()
    meta: dict[str, str] = {}
    body_start = 0
    if lines and lines[0].strip() == "---":
        for i, line in enumerate(lines[1:], start=1):
            if line.strip() == "---":
                body_start = i + 1
                break
            m = _FRONT_MATTER_RE.match(line)
            if m:
                meta[m.group(1).lower()] = m.group(2)
        else:
            body_start = 0  # no closing ---: it was not front matter
            meta = {}
    else:
        for i, line in enumerate(lines):
            m = _FRONT_MATTER_RE.match(line)
            if not m:
                break
            meta[m.group(1).lower()] = m.group(2)
            body_start = i + 1
    body = "\n".join(lines[body_start:]).strip("\n") + "\n"
    return Persona(
        name=name,
        icon=meta.get("icon") or "🤖",
        title=meta.get("title") or name,
        instructions=body,
    )


def load_personas(directory: str | None = None) -> dict[str, Persona]:
    """The built-in personas plus each <directory>/<name>.md (which override built-ins).

    Files whose name is not a valid persona name, symlinks, and files over 64 KiB are skipped
    so that one stray file does not hide every persona.
    """
    personas = dict(BUILTIN_PERSONAS)
    if not directory or not os.path.isdir(directory):
        return personas
    for entry in sorted(os.listdir(directory)):
        stem, ext = os.path.splitext(entry)
        path = os.path.join(directory, entry)
        if ext != ".md" or os.path.islink(path) or not os.path.isfile(path):
            continue
        try:
            validate.name(stem, "persona name")
        except InvalidError:
            continue
        if os.path.getsize(path) > PERSONA_FILE_MAX:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            personas[stem] = _parse_persona(stem, f.read())
    return personas


def write_instructions(
    workspace: str, backend: Backend, persona: Persona, context: dict
) -> str | None:
    """Write a persona's instructions into the backend's instructions file, as the section of
    the worker `context["worker"]`; its path, or None when the backend takes them as the first
    message instead.

    The section is appended to a file the user already has, replaced in place on a second
    call (idempotent), never touching the user's own text. The write is atomic, so a crash
    leaves the old file or the new one.
    """
    if not backend.instructions_file or backend.persona_delivery != "file":
        return None
    root = os.path.realpath(workspace)
    path = os.path.join(root, backend.instructions_file)
    real = os.path.realpath(path)
    if not validate.inside(real, root):
        raise ForbiddenError(
            f"{backend.instructions_file} in the workspace links outside it ({real}); "
            "remove the link to let a persona be written there"
        )
    try:
        _write_section(real, context["worker"], persona.render(context).strip())
    except OSError as exc:  # a folder of that name, no permission, a full disk
        raise ConflictError(
            f"cannot write the persona's instructions to {backend.instructions_file} in the "
            f"workspace: {exc.strerror or exc}"
        ) from None
    return real


def start_marker(owner: str) -> str:
    """The first line of the section holding the persona of the worker `owner`."""
    return _START.format(of=f' of worker "{owner}"')


def section_owner(workspace: str, filename: str) -> str | None:
    """The worker whose persona section the workspace's `filename` holds ("" for a section an
    earlier version wrote), or None when it holds none or cannot be read."""
    real = _instructions_path(workspace, filename)
    if real is None:
        return None
    try:
        found = _SECTION_RE.search(read_text(real))
    except (OSError, ValueError):
        return None
    return (found["owner"] or "") if found else None


def without_section(text: str) -> str | None:
    """The text as it was before a persona section was written into it, byte for byte, or
    None when it holds no section."""
    found = _SECTION_RE.search(text)
    if not found:
        return None
    before, after = text[: found.start()], text[found.end() :]
    nl = "\r\n" if after.startswith("\r\n") or before.endswith("\r\n") else "\n"
    if after.startswith(nl):  # the section's own line end
        after = after[len(nl) :]
    if before.endswith(nl):  # the one the write put between the user's text and the section
        trimmed = before[: -len(nl)]
        # Kept when text was added after the section and the user's last line has no line
        # end of its own: the two lines would become one.
        if not after or not trimmed or trimmed.endswith("\n"):
            before = trimmed
    return before + after


def remove_instructions(workspace: str, filename: str, owner: str | None = None) -> None:
    """Take a persona's section out of an instructions file in the workspace (the user's own
    text stays as it was): any section, or only the worker `owner`'s. A file that held only
    the section, one the write made, is removed. Missing files, links out of the workspace
    and files it cannot read or write are left as they are."""
    real = _instructions_path(workspace, filename)
    if real is None:
        return
    with contextlib.suppress(OSError):
        text = read_text(real)
        found = _SECTION_RE.search(text)
        if found is None or (owner is not None and found["owner"] != owner):
            return
        rest = without_section(text)
        if rest or found.start() > 0:
            _replace(real, rest)
        else:  # the section was all of it: the file was made for it
            os.unlink(real)


def _instructions_path(workspace: str, filename: str) -> str | None:
    """The real path of an instructions file in the workspace, or None when there is no such
    file there (a link out of the workspace counts as none)."""
    root = os.path.realpath(workspace)
    real = os.path.realpath(os.path.join(root, filename))
    return real if validate.inside(real, root) and os.path.isfile(real) else None


def read_text(path: str, errors: str = "surrogateescape") -> str:
    """A text file as it is: its bytes that are not UTF-8 kept (surrogateescape) and its line
    ends untouched (CRLF stays CRLF)."""
    with open(path, encoding="utf-8", errors=errors, newline="") as f:
        return f.read()


def _write_section(real: str, owner: str, body: str) -> None:
    """Put the worker `owner`'s section holding `body` into the file: in place of the one
    there, else after the user's text, in the file's own line ends.

    One line end goes between the user's text and the section (a blank line when their last
    line has its own), so taking the section out again gives their bytes back exactly."""
    exists = os.path.exists(real)
    old = read_text(real) if exists else ""
    nl = "\r\n" if "\r\n" in old else "\n"
    section = nl.join([start_marker(owner), *body.split("\n"), PERSONA_END])
    if _SECTION_RE.search(old):
        new = _SECTION_RE.sub(lambda _: section, old, count=1)
    elif exists:  # an empty file of the user's too: the line end tells it from a new one
        new = old + nl + section + nl
    else:
        new = section + nl
    if new != old:
        _replace(real, new)


def _replace(real: str, new: str) -> None:
    """Write a file atomically, keeping its permission bits (0o644 for a new one)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real), prefix=".mas-instructions-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            f.write(new)
        if os.path.exists(real):
            os.chmod(tmp, os.stat(real).st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def first_message(persona: Persona, context: dict) -> str:
    """The persona's instructions as a first message, for backends without a file."""
    return persona.render(context).strip()


# Templates
