"""The rendered terminal screen of a worker: a VT emulator (pyte) fed lazily.

Activity detection and the `/screen` endpoint read what a person would see in a terminal, not
raw bytes, so every worker's output goes through a real emulator. pyte is pure Python and
renders a few MB/s, while a worker can print 100 MB, so `feed()` only queues bytes (and counts
bells); the emulator catches up when someone reads the screen (`lines()`, `cursor()`, `text()`)
or calls `sync()`.

Trade-off: when the queued backlog is larger than `backlog_limit` (256 KiB), the emulator is
reset and only the last `replay_bytes` (64 KiB, more than enough to repaint any screen) are
fed; when that tail only scrolls (no cursor addressing, the usual flood of log lines), only its
last `rows` lines are fed, which makes a flood cost almost nothing. Scrolled-off text in between
is skipped, which a screen cannot show anyway, but a program that paints once and then updates
little (a full-screen app printing a flood into one corner) may show a partly blank screen until
it repaints. To keep the modes that change what is shown,
the skipped bytes are scanned with a regex and the last alternate-screen switch
(`ESC[?1049h/l`, `ESC[?1047h/l`, `ESC[?47h/l`) and cursor visibility (`ESC[?25h/l`) are
replayed before the kept tail.

pyte has no alternate screen, so this module adds one (switching buffers on those modes, as
xterm does), ignores DECCOLM (xterm ignores it by default too, and pyte would resize the
screen to 132 columns), and never lets a malformed sequence raise out of `feed()`: pyte's
handlers have a few crashes on hostile input, and worker output is untrusted.
"""

from __future__ import annotations

import codecs
import re
import time
from collections import defaultdict
from collections.abc import Callable

import pyte

BACKLOG_LIMIT = 256 * 1024
REPLAY_BYTES = 64 * 1024

_ALT_MODES = {1049, 1047, 47}
# Private mode sets/resets that matter after a skip: alternate screen and cursor visibility.
_MODE_RE = re.compile(rb"\x1b\[\?(1049|1047|47|25)([hl])")
_MODE_MAX = len(b"\x1b[?1049h") - 1  # a sequence split between chunks has this many on a side
# An OSC sequence: ESC ] payload, ended by BEL or ST (ESC \), or unterminated at the end.
_OSC_RE = re.compile(rb"\x1b\][^\x07\x1b]*(\x07|\x1b\\)?")
_OSC_END_RE = re.compile(rb"\x07|\x1b\\|\x1b")
_OSC_START_RE = re.compile(rb"\x1b\]")
# Sequences that move the cursor up or to a given place, or set a scroll region: output
# without them only ever scrolls, so its last `rows` lines are enough to paint the screen.
_ADDRESSING_RE = re.compile(rb"\x1b\[[0-9;?]*[HfAFdrJSTLM]|\x1b[M78]")
_BOUNDARY_RE = re.compile(rb"[\n\x1b]")
# Output made only of private mode sets/resets (cursor shown or hidden, cursor blink, keypad,
# mouse, focus and paste modes, ...), none of them a switch of screen.
_MODES_ONLY_RE = re.compile(rb"(?:\x1b\[\?[0-9;]*[hl])+")
_SCREEN_SWITCH_RE = re.compile(rb"\x1b\[\?(?:[0-9;]*;)?(?:1049|1047|47)(?:;[0-9;]*)?[hl]")

# Escape sequences for strip_ansi: CSI, OSC, DCS/SOS/PM/APC strings, then two-byte escapes.
_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b"
)
# Cursor forward (CUF): the spaces it stands for, in plain text.
_FORWARD_RE = re.compile(r"\x1b\[([0-9]*)C")
# Control characters other than \t, \n, \r and \b, which strip_ansi interprets.
_CONTROL_RE = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1f\x7f]")


class _SafeStream(pyte.Stream):
    """A pyte stream that survives handler crashes on malformed input, and knows scroll up
    and down (SU, SD: `CSI n S`, `CSI n T`), which pyte ignores and tmux sends."""

    faults = 0
    csi = {**pyte.Stream.csi, "S": "scroll_up", "T": "scroll_down"}

    def _send_to_parser(self, data: str) -> bool | None:
        try:
            return super()._send_to_parser(data)
        except Exception:
            # pyte has already re-initialised its parser, which starts in plain-text state;
            # dropping one bad sequence beats losing the rest of the chunk.
            self.faults += 1
            return True


class _Emulator(pyte.Screen):
    """pyte's screen plus an alternate screen buffer, without DECCOLM resizes."""

    def __init__(self, columns: int, lines: int) -> None:
        self.alternate = False
        self._main: tuple | None = None
        super().__init__(columns, lines)

    def _new_buffer(self) -> defaultdict:
        return defaultdict(lambda: pyte.screens.StaticDefaultDict(self.default_char))

    def reset(self) -> None:
        super().reset()
        self.alternate = False
        self._main = None

    def set_mode(self, *modes: int, **kwargs: object) -> None:
        if kwargs.get("private"):
            if _ALT_MODES.intersection(modes) and not self.alternate:
                # Keep the main screen and cursor, show an empty alternate screen.
                self._main = (self.buffer, self.cursor)
                self.buffer = self._new_buffer()
                self.cursor = pyte.screens.Cursor(self.cursor.x, self.cursor.y, self.cursor.attrs)
                self.cursor.hidden = self._main[1].hidden
                self.alternate = True
                self.dirty.update(range(self.lines))
            modes = tuple(m for m in modes if m not in _ALT_MODES and m != 3)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: object) -> None:
        if kwargs.get("private"):
            if _ALT_MODES.intersection(modes) and self.alternate:
                hidden = self.cursor.hidden
                self.buffer, self.cursor = self._main or (self._new_buffer(), self.cursor)
                self.cursor.hidden = hidden
                self._main = None
                self.alternate = False
                self.ensure_hbounds()
                self.ensure_vbounds()
                self.dirty.update(range(self.lines))
            modes = tuple(m for m in modes if m not in _ALT_MODES and m != 3)
        super().reset_mode(*modes, **kwargs)

    def scroll_up(self, count: int | None = None, **kwargs: object) -> None:
        """SU: the lines between the margins move up `count`, blank ones come in at the
        bottom; the cursor stays (`CSI ? ... S` is another sequence: ignored)."""
        if not kwargs.get("private"):
            self._scroll(count or 1, self.delete_lines)

    def scroll_down(self, count: int | None = None, **kwargs: object) -> None:
        """SD: the lines between the margins move down, blank ones come in at the top."""
        if not kwargs.get("private"):
            self._scroll(count or 1, self.insert_lines)

    def _scroll(self, count: int, move: Callable[[int], None]) -> None:
        x, y = self.cursor.x, self.cursor.y
        top = self.margins.top if self.margins else 0
        self.cursor.y = top
        move(min(count, self.lines))  # from the cursor's line to the bottom margin
        self.cursor.x, self.cursor.y = x, y

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Fewer lines drop the ones under the cursor first, then the top ones, the cursor's
        line moving up with the rest, as xterm (and so a console) does. pyte drops the top
        ones alone and leaves the cursor where it was: a shell's banner and prompt at the top
        went, and the cursor pointed at another line, or below the screen."""
        lines = lines or self.lines
        if lines < self.lines:
            self.buffer = _shrunk(self.buffer, self.cursor, self.lines, lines)
            if self._main is not None:  # the main screen, kept while the alternate shows
                self._main = (_shrunk(*self._main, self.lines, lines), self._main[1])
            self.lines = lines
            self.set_margins()  # none: the program sets its own again as it repaints
            self.dirty.update(range(lines))
        super().resize(lines, columns)


def _shrunk(buffer: defaultdict, cursor: pyte.screens.Cursor, old: int, new: int) -> defaultdict:
    """A screen buffer of `old` lines cut to `new` as xterm cuts it; moves the cursor."""
    under = max(0, old - 1 - cursor.y)
    top = max(0, old - new - under)
    kept = {y - top: line for y, line in buffer.items() if top <= y < top + new}
    buffer.clear()
    buffer.update(kept)
    cursor.y = max(0, cursor.y - top)
    return buffer


class Screen:
    """What a terminal of `cols` x `rows` shows for a worker's output, updated lazily."""

    def __init__(
        self,
        cols: int = 120,
        rows: int = 40,
        backlog_limit: int = BACKLOG_LIMIT,
        replay_bytes: int = REPLAY_BYTES,
    ) -> None:
        self.backlog_limit = backlog_limit
        self.replay_bytes = replay_bytes
        self._emulator = _Emulator(cols, rows)
        self._stream = _SafeStream(self._emulator)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Modes (alternate screen, hidden cursor) of output already dropped from the queue by
        # _trim(), to apply when the emulator is next reset.
        self._carry: tuple[bool, bool] | None = None
        self._mode_tail = b""  # the last bytes _trim() dropped: a mode sequence may start there
        self._in_osc = False
        self._lines_cache: list[str] | None = None
        self.bell_count = 0
        self.version = 0
        self.changed_at = time.monotonic()
        self.skipped_bytes = 0

    @property
    def cols(self) -> int:
        """Width in columns."""
        return self._emulator.columns

    @property
    def rows(self) -> int:
        """Height in rows."""
        return self._emulator.lines

    @property
    def alternate(self) -> bool:
        """Whether the program shows its alternate (full-screen) buffer."""
        self.sync()
        return self._emulator.alternate

    def feed(self, data: bytes) -> None:
        """Queue output for the emulator; cheap, so it can run on every read from the PTY."""
        if not data:
            return
        self._pending.append(bytes(data))
        self._pending_bytes += len(data)
        self._count_bells(data)
        self.version += 1
        self.changed_at = time.monotonic()
        if self._pending_bytes > 4 * self.backlog_limit:
            self._trim()

    def _trim(self) -> None:
        """Bound the queue when nobody reads the screen: keep its last `backlog_limit` bytes
        and the modes set before them.

        Whole chunks are dropped from the front and only the one cut in two is copied: a
        flood nobody watches passes here every 3 x `backlog_limit` bytes, and joining the
        queue cost a copy of every byte and fresh pages for it.
        """
        pending, excess, k = self._pending, self._pending_bytes - self.backlog_limit, 0
        dropped = []
        while excess > 0:
            chunk = pending[k]
            if len(chunk) > excess:
                dropped.append(chunk[:excess])
                pending[k] = chunk[excess:]
                break
            dropped.append(chunk)
            excess -= len(chunk)
            k += 1
        del pending[:k]
        self._carry = self._modes(dropped)
        self.skipped_bytes += self._pending_bytes - self.backlog_limit
        self._pending_bytes = self.backlog_limit

    def _count_bells(self, data: bytes) -> None:
        """Count BEL bytes that ring, not those ending an OSC sequence (e.g. a window title).

        Approximate by design: an OSC split across reads is tracked, but C1 (0x9d) OSCs and
        BELs inside DCS strings are counted as bells.
        """
        if self._in_osc:
            end = _OSC_END_RE.search(data)
            if end is None:
                return
            self._in_osc = False
            data = data[end.end() :] if end.group() != b"\x1b" else data[end.start() :]
        # Every chunk of output passes here: single-byte `in` (memchr) first, the slower scans
        # only when there is something to find. `_OSC_START_RE.search` rather than
        # `b"\x1b]" in data`: with ESC in every line (colours), the regex is ~3x faster.
        bells = data.count(b"\x07") if b"\x07" in data else 0
        if b"\x1b" in data and _OSC_START_RE.search(data):
            for m in _OSC_RE.finditer(data):
                if m.group(1) == b"\x07":
                    bells -= 1
                elif m.group(1) is None and m.end() == len(data):
                    self._in_osc = True
        self.bell_count += bells

    def sync(self) -> None:
        """Bring the emulator up to date with all queued output."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._lines_cache = None
        if len(data) > self.backlog_limit or self._carry is not None:
            data = self._skip(data)
        text = self._decoder.decode(data)
        try:
            self._stream.feed(text)
        except Exception:
            # A last resort: _SafeStream already absorbs handler errors; never let output
            # break the worker.
            self._stream.faults += 1

    def _skip(self, data: bytes) -> bytes:
        """Reset the emulator and return the tail to feed, with the modes it must keep."""
        cut = len(data) - self.replay_bytes
        # Start the tail at a line or escape boundary when one is near, so it does not begin
        # in the middle of an escape sequence.
        boundary = _BOUNDARY_RE.search(data, cut, cut + 4096)
        if boundary is not None:
            cut = boundary.start() + (1 if data[boundary.start()] == 0x0A else 0)
        if not _ADDRESSING_RE.search(data, cut):
            # Plain scrolling output (logs, a flood): its last lines paint the whole screen,
            # and pyte is slow, so feed only those.
            line_start = len(data)
            for _ in range(self._emulator.lines + 1):
                found = data.rfind(b"\n", cut, line_start)
                if found < 0:
                    break
                line_start = found
            else:
                cut = line_start + 1
        alternate, hidden = self._modes([data[:cut]])
        self._carry = None
        self._mode_tail = b""
        self.skipped_bytes += cut
        self._emulator.reset()
        self._stream._initialize_parser()
        self._decoder.reset()
        prefix = (b"\x1b[?1049h" if alternate else b"") + (b"\x1b[?25l" if hidden else b"")
        return prefix + data[cut:]

    def _modes(self, chunks: list[bytes]) -> tuple[bool, bool]:
        """(alternate screen, hidden cursor) after the emulator's state and the chunks, read
        as one stream that goes on from what `_trim` dropped before: a sequence split
        between chunks counts, each sequence once."""
        if self._carry is not None:
            alternate, hidden = self._carry
        else:
            alternate, hidden = self._emulator.alternate, self._emulator.cursor.hidden
        for chunk in chunks:
            # Those that begin in the stream's last bytes before the chunk and end in it,
            # then those inside it; memchr first: much output has no escape at all.
            tail = self._mode_tail
            window = tail + chunk[:_MODE_MAX]
            found = [m for m in _MODE_RE.finditer(window) if m.start() < len(tail) < m.end()]
            at = chunk.find(b"\x1b")
            if at >= 0:
                found += _MODE_RE.finditer(chunk, at)
            for m in found:
                on = m.group(2) == b"h"
                if m.group(1) == b"25":
                    hidden = not on
                else:
                    alternate = on
            self._mode_tail = (tail + chunk[-_MODE_MAX:])[-_MODE_MAX:]
        return alternate, hidden

    def lines(self) -> list[str]:
        """The rendered rows, right-stripped."""
        self.sync()
        if self._lines_cache is None:
            emu = self._emulator
            cols = emu.columns
            rows = []
            for y in range(emu.lines):
                line = emu.buffer[y]
                cells = []
                for x in range(cols):
                    char = line[x].data
                    # A wide character's second cell holds "" (pyte's stub): skip it.
                    if char:
                        cells.append(char)
                rows.append("".join(cells).rstrip())
            self._lines_cache = rows
        return list(self._lines_cache)

    def text(self) -> str:
        """The rendered screen as one string, without trailing blank rows."""
        return "\n".join(self.lines()).rstrip("\n")

    def cursor(self) -> dict:
        """Where the cursor is (0-based column x, row y) and whether it is shown."""
        self.sync()
        cur = self._emulator.cursor
        return {"x": min(cur.x, self.cols - 1), "y": cur.y, "visible": not cur.hidden}

    def resize(self, cols: int, rows: int) -> None:
        """Change the size, as the PTY's size changes; the program repaints after SIGWINCH."""
        self.sync()
        if (cols, rows) != (self.cols, self.rows):
            self._emulator.resize(lines=rows, columns=cols)
            self._lines_cache = None
            self.version += 1

    @property
    def title(self) -> str:
        """The window title the program set (OSC 0/2), if any."""
        self.sync()
        return self._emulator.title


def shows_nothing_new(data: bytes) -> bool:
    """Whether output only sets terminal modes and changes nothing a person sees: no text, no
    switch of screen. A `tmux attach` client sends such output after attaching (cursor
    visibility, its own modes); it is no sign that the program is at work."""
    return bool(_MODES_ONLY_RE.fullmatch(data)) and not _SCREEN_SWITCH_RE.search(data)


def strip_ansi(text: str) -> str:
    """Plain text from terminal output: escapes removed, \\r and backspace applied per line.

    A lone carriage return means the program rewrites its line (a spinner, a progress bar,
    usually followed by an erase that this function does not emulate), so a line keeps the
    text after its last carriage return; an empty last segment (text ending in \\r) keeps the
    segment before it.
    """
    if "\x1b[" in text:  # tmux draws a tab, or a run of spaces, as a move to the right
        text = _FORWARD_RE.sub(lambda m: " " * min(int(m[1] or 1), 1000), text)
    text = _ANSI_RE.sub("", text)
    text = _CONTROL_RE.sub("", text)
    text = text.replace("\r\n", "\n")
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p]
            line = parts[-1] if parts else ""
        if "\x08" in line:
            kept: list[str] = []
            for char in line:
                if char != "\x08":
                    kept.append(char)
                elif kept:
                    kept.pop()
            line = "".join(kept)
        out.append(line)
    return "\n".join(out)
