"""Activity of a worker: busy, idle, waiting or unknown, told from its rendered screen.

Agents: ordered rules over the screen a person would see (the VT emulator's lines), using the
backend's regexes, which are data so configuration can change them:

1. waiting — any "waiting" pattern matches the whole screen. Permission menus and yes/no
   questions can be tall (Claude Code's permission dialog takes ~25 rows) and their question
   sits above the options, so the whole screen is searched; the patterns are written to match
   only while the dialog is open (its footer, its selected option, or a question anchored at
   the very end).
2. busy — any "busy" pattern matches the bottom of the screen (the last 15 non-empty lines),
   where agents draw their working indicator; old output higher up must not count.
3. idle — any "idle" pattern matches the bottom of the screen, and the screen has not changed
   for `idle_stable_seconds` (a prompt is drawn before the program is done drawing, and a
   reply can pause); if it has changed more recently the state is busy.
4. a BEL with no match above — waiting (the program wants attention).
5. nothing matches — busy if the screen changed within the stability window, else unknown.

Patterns are compiled with re.MULTILINE. Both texts are the lines joined with "\\n" with trailing
blank lines dropped, so `\\Z` means "at the end of the last non-empty line" and `$` the end of
any line (lines are already right-stripped).

Terminals: a shell is busy while another process group holds the terminal's foreground, which
/proc tells without any pattern.
"""

from __future__ import annotations

import re

from .errors import InvalidError

STATES = ("busy", "idle", "waiting", "unknown")
PATTERN_KINDS = ("waiting", "busy", "idle")
BOTTOM_LINES = 15


class ActivityRules:
    """A backend's compiled activity patterns and the rules that apply them."""

    def __init__(
        self,
        patterns: dict[str, list[str]] | None,
        idle_stable_seconds: float = 0.4,
        name: str = "backend",
    ) -> None:
        self.name = name
        self.idle_stable_seconds = float(idle_stable_seconds)
        self.patterns = compile_patterns(patterns, name)

    def classify(self, lines: list[str], stable_for: float, bell: bool = False) -> str:
        """The activity shown by a screen unchanged for `stable_for` seconds."""
        whole = _joined(lines)
        if any(p.search(whole) for p in self.patterns["waiting"]):
            return "waiting"
        bottom = _joined([line for line in lines if line.strip()][-BOTTOM_LINES:])
        if any(p.search(bottom) for p in self.patterns["busy"]):
            return "busy"
        stable = stable_for >= self.idle_stable_seconds
        if any(p.search(bottom) for p in self.patterns["idle"]):
            return "idle" if stable else "busy"
        if bell:
            return "waiting"
        return "unknown" if stable else "busy"


def compile_patterns(patterns: object, name: str = "backend") -> dict[str, list[re.Pattern]]:
    """Compile a backend's {"waiting"|"busy"|"idle": [regex, ...]}; bad input is InvalidError."""
    if patterns is None:
        patterns = {}
    if not isinstance(patterns, dict):
        raise InvalidError(
            f"backend {name!r}: patterns must be an object with keys {', '.join(PATTERN_KINDS)}"
        )
    unknown = sorted(set(patterns) - set(PATTERN_KINDS))
    if unknown:
        raise InvalidError(
            f"backend {name!r}: unknown pattern kind(s) {', '.join(map(str, unknown))}; "
            f"use {', '.join(PATTERN_KINDS)}"
        )
    compiled: dict[str, list[re.Pattern]] = {}
    for kind in PATTERN_KINDS:
        values = patterns.get(kind) or []
        if isinstance(values, str) or not isinstance(values, (list, tuple)):
            raise InvalidError(f"backend {name!r}: patterns.{kind} must be a list of regexes")
        compiled[kind] = []
        for value in values:
            if not isinstance(value, str):
                raise InvalidError(f"backend {name!r}: patterns.{kind} must contain strings")
            try:
                compiled[kind].append(re.compile(value, re.MULTILINE))
            except re.error as exc:
                raise InvalidError(
                    f"backend {name!r}: patterns.{kind} has an invalid regex {value!r}: {exc}"
                ) from exc
    return compiled


def _joined(lines: list[str]) -> str:
    """Lines as one text, without trailing blank lines, so \\Z is the last non-empty line."""
    return "\n".join(lines).rstrip()


def terminal_activity(shell_pid: int) -> str:
    """Whether a shell's terminal is busy (a job in the foreground) or idle, from /proc."""
    try:
        with open(f"/proc/{int(shell_pid)}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return "unknown"
    return activity_from_stat(stat)


def activity_from_stat(stat: str) -> str:
    """busy/idle/unknown from the text of /proc/<pid>/stat of a shell."""
    # The command name (field 2) is in parentheses and may itself contain spaces and ')',
    # so the fixed fields start after the last ')'.
    end = stat.rfind(")")
    if end < 0:
        return "unknown"
    fields = stat[end + 1 :].split()
    # fields: state ppid pgrp session tty_nr tpgid ...
    if len(fields) < 6 or fields[0] in ("Z", "X", "x"):
        return "unknown"
    try:
        pgrp, tpgid = int(fields[2]), int(fields[5])
    except ValueError:
        return "unknown"
    if tpgid <= 0:
        return "unknown"  # no controlling terminal
    return "idle" if tpgid == pgrp else "busy"
