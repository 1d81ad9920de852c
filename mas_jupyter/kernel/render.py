"""Text, HTML and Markdown views of the client's records: names and output always escaped;
tables aligned by display width; the progress words while an agent works.

Agent output never becomes markup: in HTML it is escaped text inside <pre>; a reply's
Markdown is rendered to HTML by markdown-it (CommonMark) with HTML turned off, so markup an
agent prints shows as text, and links to `javascript:` and the like are not made, while its
Markdown formatting (headings, lists, code blocks) still renders.
"""

from __future__ import annotations

import functools
import html
import shlex
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from typing import IO

# Colors of the activity states; "waiting" stands out: it needs the user.
ACTIVITY_COLORS = {
    "busy": "#1565c0",
    "idle": "#2e7d32",
    "waiting": "#e65100",
    "unknown": "#757575",
    "exited": "#757575",
}
ACTIVITY_SYMBOLS = {"busy": "●", "idle": "○", "waiting": "▲", "unknown": "?", "exited": "■"}
STATUS_COLORS = {"active": "#2e7d32", "paused": "#f9a825", "stopped": "#757575"}


def esc(value: object) -> str:
    """Any value as escaped HTML text (None as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def activity_html(state: str | None) -> str:
    """An activity state as a colored label."""
    state = state or "unknown"
    color = ACTIVITY_COLORS.get(state, "#757575")
    weight = "bold" if state == "waiting" else "normal"
    symbol = ACTIVITY_SYMBOLS.get(state, "?")
    return (
        f'<span class="mas-activity mas-activity-{esc(state)}" '
        f'style="color:{color};font-weight:{weight}">{symbol} {esc(state)}</span>'
    )


def status_html(status: str | None) -> str:
    """A session status as a colored label."""
    color = STATUS_COLORS.get(status or "", "#757575")
    return f'<span style="color:{color}">{esc(status)}</span>'


def table_html(headers: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw` (cells already made by these helpers)."""
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = row if raw else [esc(c) for c in row]
        body.append(
            "<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in cells) + "</tr>"
        )
    return (
        f"<table class='mas-table'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def pre_html(text: str, title: str | None = None) -> str:
    """Terminal text as an escaped <pre> block."""
    caption = f"<div><b>{esc(title)}</b></div>" if title else ""
    return f"{caption}<pre class='mas-pre'>{esc(text)}</pre>"


def display_width(text: str) -> int:
    """How many columns a terminal gives `text`: 2 for a wide or fullwidth character (CJK,
    most emoji), 0 for a combining mark or an invisible format character (a zero-width
    joiner), 1 for the others. (An emoji sequence joined by zero-width joiners counts each
    of its emoji; terminals differ there anyway.)"""
    width = 0
    for char in text:
        if unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def table_text(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with its columns aligned on a terminal (by display width: a CJK
    character or an emoji takes two columns)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c + " " * (w - display_width(c)) for c, w in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# `send --no-wait --timeout S` (CLI and magic): refused before anything is sent.
NO_WAIT_TIMEOUT = "--timeout is how long to wait for the reply: it cannot go with --no-wait"

# How the server's messages name a request field (the error's `field`), and how the CLI and
# %mas, which spell their options alike, name it instead.
_OPTIONS = {
    "repo": ("'repo'", "--repo"),
    "path": ("'path'", "--path"),
    "template": ("'template'", "--template"),
    "branch": ("'branch'", "--branch"),
    "base": ("'base'", "--base"),
    "wait": ("'wait': false", "--no-wait"),
    "force": ("with force", "with --force"),
}


def in_option_words(message: str, details: dict, add_worker: str) -> str:
    """An error's message in the words of the CLI and %mas: a request field named as their
    option (`a worktree session needs --repo, ...`, `send it with --no-wait ...`), and for a
    session without workers their way to add one (`add_worker`, `{session}` in it quoted)."""
    if details.get("missing") == "worker":  # the client's own words name Python's way
        session = details["session"]
        return no_workers_text(session, add_worker.format(session=shlex.quote(session)))
    spelled = _OPTIONS.get(details.get("field"))  # type: ignore[arg-type]
    return message.replace(*spelled) if spelled else message


def no_workers_text(session: str, how: str) -> str:
    """Why a send or lookup without a worker named found none, and `how` to add one."""
    return f"session {session!r} has no workers: add one with {how}"


def working_text(who: str, seconds: float) -> str:
    """The progress words while an agent works on a message (`%mas send`, `jupyter mas
    send`): `⏳ demo is working… 12 s`."""
    return f"⏳ {who} is working… {seconds:.0f} s"


class TerminalProgress:
    """`⏳ WHO is working… N s` on a terminal, from the first `interval` on, redrawn in place
    every `interval` seconds, and erased when the `with` block ends (however it ends), so
    what is printed next starts on a clean line. A wait shorter than `interval` shows
    nothing. Only for a stream that is a terminal: in a pipe or a file the redraws would be
    clutter."""

    def __init__(self, who: str, stream: IO[str], interval: float = 1.0) -> None:
        self.who = who
        self.stream = stream
        self.interval = interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._shown = False
        self._thread = threading.Thread(target=self._run, name="mas-progress", daemon=True)

    def __enter__(self) -> TerminalProgress:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        ticks = 1
        while not self._stopped.wait(self._started + ticks * self.interval - time.monotonic()):
            with self._lock:
                if self._stopped.is_set():
                    return
                elapsed = time.monotonic() - self._started
                self.stream.write("\r" + working_text(self.who, elapsed) + "\x1b[K")
                self.stream.flush()
                self._shown = True
            ticks = max(ticks + 1, int((time.monotonic() - self._started) / self.interval) + 1)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stopped.set()
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
        self._thread.join(5)


def markdown_html(text: str) -> str:
    """Agent text, as Markdown, rendered to HTML that carries no markup of the agent's: raw
    HTML in it is shown as text (and as <pre> text when markdown-it is not installed)."""
    parser = _markdown()
    return pre_html(text) if parser is None else parser.render(text)


@functools.cache
def _markdown():  # a MarkdownIt, or None: markdown-it is optional
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return None
    return MarkdownIt("commonmark", {"html": False})
