"""The reply of an agent to a message: its output since the message, as plain text.

Works on the raw output (not the screen), so a reply longer than the screen is whole. Line-based
agents (aider, the demo agent, shells) give clean replies; full-screen TUIs (Claude Code, Codex,
Gemini CLI) repaint with cursor movements, so their reply is approximate: the text they drew,
with the echo, working indicators and the trailing prompt removed.
"""

from __future__ import annotations

import re

from .screen import strip_ansi

# A line drawn only with box-drawing characters: the frame of a TUI's input box, not text.
_RULE_RE = re.compile(r"^[\s\u2500-\u257f]+$")


def extract_reply(
    raw: bytes,
    sent: str,
    prompt_patterns: list[str],
    busy_patterns: list[str],
) -> str:
    """The text an agent produced after `sent` was typed, from the raw output since then."""
    text = strip_ansi(raw.decode("utf-8", errors="replace"))
    lines = [line.rstrip() for line in text.split("\n")]
    lines = _drop_echo(lines, sent)
    busy = _compile(busy_patterns)
    prompts = _compile(prompt_patterns)
    lines = [line for line in lines if not any(p.search(line) for p in busy)]
    lines = _drop_trailing_prompt(lines, prompts)
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).strip("\n")


def _compile(patterns: list[str]) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.MULTILINE))
        except re.error:
            continue  # backends validate their patterns; never fail a reply over one
    return compiled


def _drop_echo(lines: list[str], sent: str) -> list[str]:
    """Remove the terminal's echo of the sent lines at the start of the output.

    An echo line may carry the prompt or a paste marker before the text ("demo> hi", "> hi"),
    so a line that ends with the sent line counts; blank lines between echoed lines too.
    """
    wanted = [s.rstrip() for s in sent.replace("\r\n", "\n").strip("\n").split("\n")]
    i = 0
    for want in wanted:
        while i < len(lines) and not lines[i].strip() and want.strip():
            i += 1
        if i < len(lines) and (
            lines[i] == want or (want.strip() and lines[i].endswith(want.strip()))
        ):
            i += 1
        else:
            break
    return lines[i:] if i else lines


def _drop_trailing_prompt(lines: list[str], prompts: list[re.Pattern]) -> list[str]:
    """Remove trailing blank lines, frame rules and the prompt the agent drew when it was done
    (its lines: each idle pattern matches one of them at most). A line above it that ends as a
    prompt does (`</html>`, `50%`, `$`) is the reply's."""
    lines, left = list(lines), list(prompts)
    while lines:
        if not lines[-1].strip() or _RULE_RE.match(lines[-1]):
            lines.pop()
            continue
        found = next((p for p in left if p.search(lines[-1])), None)
        if found is not None:
            lines.pop()
        else:
            found = next(
                (p for p in left if len(lines) >= 2 and _spans(p, lines[-2], lines[-1])), None
            )
            if found is None:
                break
            del lines[-2:]  # a prompt drawn over two lines (a rule, then the input line)
        left.remove(found)
    return lines


def _spans(prompt: re.Pattern, first: str, last: str) -> bool:
    """Whether the prompt pattern matches across the line break between two lines."""
    tail = first + "\n" + last
    return any(m.start() <= len(first) < m.end() for m in prompt.finditer(tail))
