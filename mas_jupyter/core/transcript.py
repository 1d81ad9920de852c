"""A worker's transcript: a JSONL log of what was sent to it and what it printed.

One record per line, `{"t": <epoch seconds>, "type": ..., ...}` with types:

- start: `argv`, `backend` (and any extra fields given)
- input: `text` (a message or keystrokes sent)
- output: `data`, the output decoded as UTF-8 (incremental, invalid bytes replaced), and
  `end`, the bytes the process had printed by the end of this record (as the ring counts them)
- activity: `state`
- exit: `code`, `signal`, `reason` (the worker's `exit_reason`: `exited`, `crashed`,
  `paused`, `interrupted` for one that died with the server that ran it, ...) and
  `output_dropped` (output bytes not written because of the limit)
- cut: written once when the file reaches its limit; output stops there
- note: `text` (e.g. re-attached after a server restart)

Output is coalesced: bytes are buffered and written as one record at most every
`interval` seconds (0.1) or when `chunk_bytes` (64 KiB) are pending, so a flood costs a few
records per second, not one per read. There are no threads or timers here: writes happen in
`output()` and `flush()`, and the worker calls `flush()` periodically and on exit. Other records
flush pending output first, so the order in the file is the order of events.

The file is bounded: once a record would take it past `max_bytes`, output records stop and a
`cut` marker is written; small records (input, activity, exit, note) are still written, up to a
hard ceiling of `max_bytes` plus 1 MiB, so the end of a conversation is still known. A write
error (disk full, workspace removed) stops the transcript, never the worker.

`last_output()` reads a run's newest output back from the end of the file: after a server
restart it stands in for the ring of a worker that is not running any more.
"""

from __future__ import annotations

import codecs
import json
import os
import time
from collections.abc import Callable

import orjson

from .ring import first_character

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
SMALL_RECORDS_ALLOWANCE = 1024 * 1024
INPUT_TEXT_MAX = 64 * 1024
READ_LIMIT_MAX = 5000
TAIL_BLOCK = 256 * 1024  # last_output reads the file backwards in blocks of this size


class Transcript:
    """Appends a worker's records to a JSONL file, bounded in bytes."""

    def __init__(
        self,
        path: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        interval: float = 0.1,
        chunk_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.interval = interval
        self.chunk_bytes = chunk_bytes
        self._clock = clock
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._last_output = clock()
        self.cut = False
        self.output_dropped = 0
        self.printed = 0  # bytes of output since this object or the last start record
        self.error: str | None = None
        self._file = None
        parent = os.path.dirname(path)
        try:
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._file = open(path, "ab")
            self.size = self._file.tell()
            if self.size and not _ends_with_newline(path):
                # The last run died mid-line: end that line so the next record stands alone
                # (readers skip the broken one).
                self._file.write(b"\n")
                self.size += 1
            self.cut = self.size >= max_bytes
        except OSError as exc:
            self.size = 0
            self._fail(exc)

    @property
    def closed(self) -> bool:
        """Whether nothing more will be written."""
        return self._file is None

    def start(self, argv: list[str], backend: str | None, **extra: object) -> None:
        """Record that a process started."""
        self._decoder.reset()
        self.printed = 0
        self._record({"type": "start", "argv": list(argv), "backend": backend, **extra})

    def input(self, text: str) -> None:
        """Record a message or keystrokes sent to the worker."""
        record: dict = {"type": "input", "text": text[:INPUT_TEXT_MAX]}
        if len(text) > INPUT_TEXT_MAX:
            record["truncated"] = len(text)
        self._record(record)

    def output(self, data: bytes) -> None:
        """Buffer output; write it as one record when enough is pending or time has passed."""
        if not data or self._file is None:
            return
        self._pending.append(bytes(data))
        self._pending_bytes += len(data)
        if (
            self._pending_bytes >= self.chunk_bytes
            or self._clock() - self._last_output >= self.interval
        ):
            self._write_output()

    def flush(self) -> None:
        """Write any buffered output now."""
        if self._pending:
            self._write_output()

    def activity(self, state: str) -> None:
        """Record an activity change."""
        self._record({"type": "activity", "state": state})

    def note(self, text: str) -> None:
        """Record something that happened to the worker, in words."""
        self._record({"type": "note", "text": text})

    def exit(self, code: int | None, signal: int | None = None, reason: str | None = None) -> None:
        """Record the end of the process, why (the worker's exit_reason), and how much output
        the limit dropped."""
        self._write_output(final=True)
        record = {"type": "exit", "code": code, "signal": signal, "reason": reason}
        self._record({**record, "output_dropped": self.output_dropped})

    def close(self) -> None:
        """Write what is buffered and close the file; later calls do nothing."""
        if self._file is None:
            return
        self._write_output(final=True)
        try:
            self._file.close()
        except OSError:
            pass
        self._file = None

    # internals

    def _write_output(self, final: bool = False) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._last_output = self._clock()
        self.printed += len(data)
        text = self._decoder.decode(data, final=final)
        if not text:
            return
        if self.cut:
            self.output_dropped += len(data)
            return
        line = _line({"t": time.time(), "type": "output", "data": text, "end": self.printed})
        if self.size + len(line) > self.max_bytes:
            self.cut = True
            self.output_dropped += len(data)
            self._write_line(
                _line(
                    {
                        "t": time.time(),
                        "type": "cut",
                        "reason": "transcript limit reached",
                        "max_bytes": self.max_bytes,
                    }
                )
            )
            return
        self._write_line(line)

    def _record(self, record: dict) -> None:
        if self._file is None:
            return
        self.flush()
        line = _line({"t": time.time(), **record})
        if self.size + len(line) > self.max_bytes + SMALL_RECORDS_ALLOWANCE:
            return  # past even the allowance for small records: keep the bound
        self._write_line(line)

    def _write_line(self, line: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line)
            self._file.flush()
            self.size += len(line)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = f"transcript {self.path} stopped: {exc.strerror or exc}"
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None


def _line(record: dict) -> bytes:
    # orjson adds the newline itself: `+ b"\n"` copied every output record (up to 256 KiB).
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def append_exit(path: str, reason: str) -> None:
    """Record the end of a process no server saw end (it died with the server that ran it),
    after its last complete record: the transcript does not read as a run that never ended."""
    if not os.path.exists(path):
        return  # it never printed: nothing to complete
    try:
        with open(path, "ab") as f:
            if f.tell() and not _ends_with_newline(path):
                f.write(b"\n")  # a record cut by the crash: it is skipped when read
            record = {"t": time.time(), "type": "exit", "code": None, "signal": None}
            f.write(_line({**record, "reason": reason}))
    except OSError:
        pass  # the folder is gone or read-only: nothing to complete


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_transcript(path: str, offset: int = 0, limit: int = 500) -> dict:
    """A page of a transcript's records: `records` from index `offset`, `next_offset`
    (None at the end) and `total`.

    A missing file is empty; broken lines (a crash mid-write) are skipped and not counted.
    """
    offset = max(0, int(offset))
    limit = max(1, min(int(limit), READ_LIMIT_MAX))
    records: list[dict] = []
    total = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return {"records": [], "next_offset": None, "total": 0}
    with f:
        for raw in f:
            # A complete record is one line {"t":...} ending in "}\n"; a line cut by a crash is
            # not, and is skipped without being counted. Only the page is parsed.
            if not (raw.startswith(b'{"t":') and raw.endswith(b"}\n")):
                continue
            index = total
            total += 1
            if offset <= index < offset + limit:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    next_offset = offset + limit if offset + limit < total else None
    return {"records": records, "next_offset": next_offset, "total": total}


def last_output(path: str, limit: int) -> tuple[str, int, int]:
    """The newest output of the last run in a transcript, at most `limit` bytes of UTF-8:
    `(text, start, end)`, offsets counted as the ring counts them (`end` from the newest output
    record, `start` that minus the text's length).

    The file is read backwards from its end, a block at a time, and only its output records
    since the last `start` record are parsed; at most `8 * limit` plus 1 MiB of the file is
    read (an output record escapes control characters, so it is larger than what it holds).
    A run whose output was cut at the limit gives nothing: what it kept is from before the
    cut, not what the worker showed last. A missing or unreadable file gives nothing.
    """
    texts: list[str] = []
    got = 0
    end: int | None = None
    try:
        f = open(path, "rb")
    except OSError:
        return "", 0, 0
    with f:
        pos = f.seek(0, os.SEEK_END)
        budget = 8 * limit + 1024 * 1024
        partial = b""  # the end of a line that begins in the block before
        done = False
        while pos > 0 and budget > 0 and not done:
            step = min(pos, TAIL_BLOCK, budget)
            pos -= step
            budget -= step
            f.seek(pos)
            lines = (f.read(step) + partial).split(b"\n")
            partial = lines.pop(0) if pos > 0 else b""
            for raw in reversed(lines):
                record = _complete_record(raw) or {}
                kind, text = record.get("type"), record.get("data")
                if kind == "start" or (kind == "cut" and end is None):
                    done = True
                    break
                if kind == "output" and isinstance(text, str):
                    if end is None:
                        end = record.get("end")
                    texts.append(text)
                    got += len(text.encode("utf-8", "replace"))
                    if got >= limit:
                        done = True
                        break
    data = "".join(reversed(texts)).encode("utf-8", "replace")[-limit:] if limit else b""
    data = data[first_character(data) :]
    if not isinstance(end, int) or end < len(data):
        end = len(data)  # a record without `end` (an older transcript)
    return data.decode("utf-8", "replace"), end - len(data), end


def _complete_record(raw: bytes) -> dict | None:
    # As in read_transcript: a record cut by a crash mid-write is skipped.
    if not (raw.startswith(b'{"t":') and raw.endswith(b"}")):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
