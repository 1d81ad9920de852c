"""What workers and sessions give back: replies, screens, raw output, transcripts and
activity logs, printable as text and rendered (escaped) in a notebook."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..core.models import ENDED_FOR_IT
from ..core.screen import strip_ansi
from .records import Record
from .render import activity_html, esc, markdown_html, pre_html, table_html, table_text

if TYPE_CHECKING:
    from .client import MASClient


class Reply(Record):
    """What an agent answered: `text` (ANSI removed), its `activity` after, `timed_out`; when
    the agent ended before it replied, `exit_code` and `exit_reason` (why: `paused`, ...)."""

    def __init__(self, client: MASClient | None, data: dict, worker: str = "") -> None:
        super().__init__(client, data)
        self.worker = worker

    @property
    def text(self) -> str | None:
        """The reply (None when the message was sent without waiting)."""
        return self.data.get("reply")

    @property
    def ended(self) -> bool:
        """Whether the agent ended (by itself or for it) before it replied: no reply came."""
        return self.data.get("activity") == "exited"

    def __str__(self) -> str:
        return self.text or ""

    def _ended(self) -> str:
        reason, code = self.data.get("exit_reason"), self.data.get("exit_code")
        if reason in ENDED_FOR_IT:  # a pause, a restart, a delete, ...: no crash
            return f"the agent was stopped: {ENDED_FOR_IT[reason]}"
        if code is not None:
            return f"the agent exited with code {code}"
        if reason == "crashed":  # without a code: a signal ended it
            return "the agent was killed by a signal"
        return "the agent exited"

    def _status(self) -> str:
        # Ended first: a waited message cut off before its turn has no text either, and was
        # never typed ("sent; not waiting" said it went through).
        if self.ended:
            return self._ended()
        if self.text is None and not self.data.get("timed_out"):
            return "sent; not waiting for the reply"
        if self.data.get("timed_out"):
            return "timed out waiting; the agent is still working"
        if self.data.get("activity") == "waiting":
            return "the agent is waiting for an answer"
        return ""

    def __repr__(self) -> str:
        status = self._status()
        text = self.text if self.text is not None else ""
        return (f"[{status}]\n" if status else "") + text

    def _repr_html_(self) -> str:
        status = self._status()
        who = f"<b>{esc(self.worker)}</b>" if self.worker else ""
        note = f"<i>{esc(status)}</i>" if status else ""
        head = " — ".join(p for p in (who, note) if p)
        body = markdown_html(self.text or "")
        return f"<div>{head}</div>\n{body}" if head else body


class Screen(Record):
    """A worker's rendered terminal screen: `lines`, `cursor`, `activity`."""

    def __str__(self) -> str:
        lines = [line.rstrip() for line in self.data.get("lines") or []]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"[{self.data.get('activity')}]\n{self}"

    def _repr_html_(self) -> str:
        return activity_html(self.data.get("activity")) + pre_html(str(self))


class Output(Record):
    """Recent raw output of a worker (`data`, with ANSI sequences; `start`/`end` offsets)."""

    @property
    def text(self) -> str:
        """The output without ANSI sequences."""
        return strip_ansi(self.data.get("data") or "")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return pre_html(self.text)


class Transcript(Record):
    """A page of a worker's transcript: `records`, `next_offset`, `total`."""

    def __len__(self) -> int:
        return len(self.data.get("records") or [])

    def __iter__(self):
        return iter(self.data.get("records") or [])

    @staticmethod
    def _line(record: dict) -> tuple[str, str]:
        kind = record.get("type", "")
        if kind == "input":
            return "you", record.get("text", "")
        if kind == "activity":
            return "activity", record.get("state", "")
        if kind == "exit":
            reason, code, sig = record.get("reason"), record.get("code"), record.get("signal")
            if reason in ENDED_FOR_IT:  # a pause, a restart, the server's end: no crash
                return "exit", f"stopped: {ENDED_FOR_IT[reason]}"
            if sig is not None:
                return "exit", f"killed by signal {sig}"
            return "exit", "exited" if code is None else f"exited with code {code}"
        if kind == "start":
            return "start", " ".join(record.get("argv") or [])
        return kind, str(record.get("text", ""))

    def _blocks(self):
        """(kind, text) per record, a run of output records as one block: the engine records
        output as it reads it, a few KiB at a time, so one command's output spans many."""
        run: list[str] = []
        for record in self:
            if record.get("type") == "output":
                run.append(record.get("data", ""))
                continue
            if run:
                yield "output", strip_ansi("".join(run))
                run = []
            yield self._line(record)
        if run:
            yield "output", strip_ansi("".join(run))

    def __repr__(self) -> str:
        out = []
        for kind, text in self._blocks():
            out.append(
                f"--- {kind}\n{text.rstrip()}"
                if kind in ("you", "output")
                else f"--- {kind}: {text}"
            )
        more = (
            f"\n(more from offset {self.data['next_offset']})"
            if self.data.get("next_offset")
            else ""
        )
        return ("\n".join(out) or "(empty transcript)") + more

    def _repr_html_(self) -> str:
        parts = []
        for kind, text in self._blocks():
            if kind in ("you", "output"):
                parts.append(pre_html(text.rstrip(), title=kind))
            else:
                parts.append(f"<div><i>{esc(kind)}</i>: {esc(text)}</div>")
        return "".join(parts) or "<i>empty transcript</i>"


class ActivityLog(list):
    """A session's activity log entries (dicts with seq, type, time, worker_id, detail). Each
    row names its worker: `workers` maps worker ids to names, from the entries that carry
    the name (worker-created, message-sent, ...) and, as the client fills it in, from the
    session's workers (an activity-changed entry has only the id); a worker known by
    neither (deleted, its entries out of the page) shows as the start of its id."""

    HEADERS = ("seq", "time", "what", "worker", "detail")

    def __init__(self, entries: Iterable[dict] = ()):
        super().__init__(entries)
        self.workers: dict[str, str] = {}
        for entry in self:
            detail = entry.get("detail") or {}
            name = detail.get("worker") or (
                detail.get("name") if str(entry.get("type", "")).startswith("worker-") else None
            )
            if entry.get("worker_id") and name:
                self.workers[entry["worker_id"]] = name

    def unnamed(self) -> set[str]:
        """The ids of workers whose entries carry no name."""
        return {e["worker_id"] for e in self if e.get("worker_id")} - set(self.workers)

    def worker_name(self, entry: dict) -> str:
        """The name of the worker an entry is about ("" for the session's own entries)."""
        wid = entry.get("worker_id")
        return (self.workers.get(wid) or wid[:8]) if wid else ""

    def _detail(self, entry: dict) -> str:
        detail = dict(entry.get("detail") or {})
        name = self.worker_name(entry)
        for key in ("worker", "name"):  # in the worker column already
            if name and detail.get(key) == name:
                del detail[key]
        return ", ".join(f"{k}={v}" for k, v in detail.items())

    def _rows(self) -> list[list]:
        return [
            [e["seq"], e["time"], e["type"], self.worker_name(e), self._detail(e)] for e in self
        ]

    def __repr__(self) -> str:
        if not self:
            return "no activity"
        return table_text(self.HEADERS, self._rows())

    def _repr_html_(self) -> str:
        return table_html(self.HEADERS, self._rows())
