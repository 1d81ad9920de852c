"""Tests of the JSONL transcript: records, output coalescing, the byte limit, reading back."""

from __future__ import annotations

import json

from mas_jupyter.core.transcript import Transcript, last_output, read_transcript


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(path) -> list[dict]:
    return read_transcript(str(path), limit=5000)["records"]


def test_records_in_order_with_parent_dirs_created(tmp_path):
    path = tmp_path / ".mas" / "transcripts" / "w1.jsonl"
    t = Transcript(str(path))
    t.start(["demo", "--x"], "demo", pid=42)
    t.input("hello")
    t.output(b"hi there\r\n")
    t.activity("idle")
    t.exit(0, None)
    t.close()
    recs = records(path)
    assert [r["type"] for r in recs] == ["start", "input", "output", "activity", "exit"]
    assert recs[0]["argv"] == ["demo", "--x"] and recs[0]["backend"] == "demo"
    assert recs[0]["pid"] == 42
    assert recs[1]["text"] == "hello"
    assert recs[2]["data"] == "hi there\r\n"
    assert recs[3]["state"] == "idle"
    assert recs[4] == {**recs[4], "code": 0, "signal": None, "output_dropped": 0}
    assert all(isinstance(r["t"], float) for r in recs)
    assert all(line.startswith('{"t":') for line in path.read_text().splitlines())


def test_output_is_coalesced_by_time(tmp_path):
    clock = FakeClock()
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), clock=clock)
    for i in range(50):
        t.output(f"line {i}\n".encode())
    assert records(path) == []  # nothing written within the interval
    clock.now += 0.2
    t.output(b"last\n")
    t.close()
    recs = records(path)
    assert len(recs) == 1
    assert recs[0]["data"].startswith("line 0\n") and recs[0]["data"].endswith("last\n")


def test_output_is_coalesced_by_size(tmp_path):
    clock = FakeClock()
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), chunk_bytes=1000, clock=clock)
    for _ in range(25):
        t.output(b"x" * 100)
    assert len(records(path)) == 2  # one record per 1000 bytes, none for the rest yet
    t.flush()
    assert "".join(r["data"] for r in records(path)) == "x" * 2500
    t.close()


def test_other_records_flush_pending_output_first(tmp_path):
    clock = FakeClock()
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), clock=clock)
    t.output(b"before")
    t.activity("busy")
    assert [r["type"] for r in records(path)] == ["output", "activity"]
    t.close()


def test_utf8_split_across_chunks_and_invalid_bytes(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), interval=0)
    data = "héllo ❯".encode()
    t.output(data[:2])
    t.output(data[2:])
    t.output(b"\xff!")
    t.close()
    assert "".join(r["data"] for r in records(path)) == "héllo ❯\ufffd!"


def test_limit_writes_one_cut_marker_and_keeps_small_records(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), max_bytes=2000, interval=0)
    t.start(["x"], "demo")
    for _ in range(100):
        t.output(b"y" * 100)
    t.input("after the cut")
    t.activity("idle")
    t.exit(1, None)
    t.close()
    recs = records(path)
    types = [r["type"] for r in recs]
    assert types.count("cut") == 1
    cut_at = types.index("cut")
    assert "output" not in types[cut_at:]
    assert recs[cut_at]["reason"] == "transcript limit reached"
    assert types[-3:] == ["input", "activity", "exit"]
    written = sum(len(r["data"]) for r in recs if r["type"] == "output")
    assert recs[-1]["output_dropped"] == 100 * 100 - written
    assert path.stat().st_size < 2000 + 1000


def test_reopening_a_full_transcript_stays_cut(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), max_bytes=5000, interval=0)
    t.output(b"z" * 1000)
    t.close()
    again = Transcript(str(path), max_bytes=500, interval=0)
    again.output(b"more")
    again.exit(0)
    again.close()
    recs = records(path)
    assert [r["type"] for r in recs] == ["output", "exit"]
    assert recs[-1]["output_dropped"] == 4


def test_read_transcript_pages(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path))
    for i in range(7):
        t.note(f"n{i}")
    t.close()
    page = read_transcript(str(path), offset=0, limit=3)
    assert [r["text"] for r in page["records"]] == ["n0", "n1", "n2"]
    assert page["next_offset"] == 3 and page["total"] == 7
    page = read_transcript(str(path), offset=6, limit=3)
    assert [r["text"] for r in page["records"]] == ["n6"]
    assert page["next_offset"] is None
    assert read_transcript(str(path), offset=50)["records"] == []


def test_missing_file_reads_empty(tmp_path):
    assert read_transcript(str(tmp_path / "nope.jsonl")) == {
        "records": [],
        "next_offset": None,
        "total": 0,
    }


def test_truncated_last_line_is_skipped_and_later_appends_are_read(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path))
    t.note("complete")
    t.close()
    with open(path, "ab") as f:
        f.write(b'{"t":1.0,"type":"output","data":"cut in the mid')  # crash mid-write
    assert [r["text"] for r in records(path)] == ["complete"]
    again = Transcript(str(path))
    again.note("after restart")
    again.close()
    assert [r["text"] for r in records(path)] == ["complete", "after restart"]
    for line in path.read_text().splitlines()[-1:]:
        assert json.loads(line)["text"] == "after restart"


def test_unwritable_path_never_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    t = Transcript(str(blocker / "sub" / "t.jsonl"))
    t.start(["x"], None)
    t.output(b"data")
    t.exit(0)
    t.close()
    assert t.error and "stopped" in t.error
    assert t.closed


def test_long_input_is_truncated_in_the_record(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path))
    t.input("a" * 100_000)
    t.close()
    rec = records(path)[0]
    assert len(rec["text"]) == 64 * 1024 and rec["truncated"] == 100_000


def test_last_output_is_the_newest_output_of_the_last_run(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), chunk_bytes=1)  # one output record per call
    t.start(["sh"], "shell")
    t.output(b"first run\r\n")
    t.exit(0)
    t.start(["sh"], "shell")
    t.output(b"one\r\n")
    t.activity("busy")
    t.output("two \u00e9\r\n".encode())
    t.exit(0)
    t.close()
    # Only the last run, in order, with offsets as the ring counted them.
    assert last_output(str(path), 1024) == ("one\r\ntwo \u00e9\r\n", 0, 13)
    # A limit keeps the newest bytes and never starts inside a character.
    assert last_output(str(path), 4) == ("\u00e9\r\n", 9, 13)
    assert last_output(str(path), 3) == ("\r\n", 11, 13)
    assert last_output(str(path), 0) == ("", 13, 13)


def test_last_output_reads_back_across_blocks_and_skips_a_broken_line(tmp_path, monkeypatch):
    monkeypatch.setattr("mas_jupyter.core.transcript.TAIL_BLOCK", 100)
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), chunk_bytes=1)
    t.start(["sh"], "shell")
    for i in range(50):
        t.output(f"line {i:02d}\r\n".encode())
    t.close()
    with open(path, "ab") as f:
        f.write(b'{"t":1.0,"type":"output","data":"cut in the mid')  # a crash mid-write
    text, start, end = last_output(str(path), 10**6)
    assert text == "".join(f"line {i:02d}\r\n" for i in range(50))
    assert (start, end) == (0, 450)
    text, start, end = last_output(str(path), 27)
    assert text == "line 47\r\nline 48\r\nline 49\r\n" and (start, end) == (423, 450)


def test_last_output_of_a_cut_run_or_a_missing_file_is_empty(tmp_path):
    path = tmp_path / "t.jsonl"
    t = Transcript(str(path), max_bytes=400, chunk_bytes=1)
    t.start(["sh"], "shell")
    for _ in range(20):
        t.output(b"x" * 50)
    t.exit(0)
    t.close()
    assert records(path)[-2]["type"] == "cut"
    assert last_output(str(path), 1024)[0] == ""  # what it kept is not what it showed last
    assert last_output(str(tmp_path / "nope.jsonl"), 1024) == ("", 0, 0)
