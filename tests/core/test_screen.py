"""Tests of the lazily fed VT screen and of strip_ansi."""

from __future__ import annotations

import random
import time

import pytest

from mas_jupyter.core.screen import Screen, shows_nothing_new, strip_ansi


def test_renders_text_and_cursor():
    screen = Screen(cols=20, rows=5)
    screen.feed(b"hello\r\nworld")
    assert screen.lines()[:2] == ["hello", "world"]
    assert screen.cursor() == {"x": 5, "y": 1, "visible": True}
    assert screen.text() == "hello\nworld"
    assert len(screen.lines()) == 5


def test_escape_sequences_are_interpreted_not_shown():
    screen = Screen(cols=20, rows=3)
    screen.feed(b"\x1b[31mred\x1b[0m\r\n\x1b[2;5Hxy\x1b[1;1Hab")
    assert screen.lines() == ["abd", "    xy", ""]


def test_carriage_return_overwrites_like_a_terminal():
    screen = Screen(cols=20, rows=2)
    screen.feed(b"working 1\rworking 2\r\x1b[Kdone")
    assert screen.lines()[0] == "done"


def test_utf8_split_across_reads_is_decoded():
    screen = Screen(cols=20, rows=2)
    data = "héllo ❯ 漢".encode()
    for i in range(len(data)):
        screen.feed(data[i : i + 1])
    assert screen.lines()[0] == "héllo ❯ 漢"


def test_invalid_utf8_and_binary_never_raise():
    screen = Screen(cols=20, rows=3)
    screen.feed(b"ok \xff\xfe\x00\x80 end")
    assert screen.lines()[0].startswith("ok ")
    assert "\ufffd" in screen.lines()[0]
    assert screen.lines()[0].endswith(" end")


def test_malformed_sequences_that_crash_pyte_are_absorbed():
    screen = Screen(cols=20, rows=3)
    # Each of these raises inside pyte 0.8 handlers (private flag on a handler that does not
    # take it, DECSCNM reset without margins); the text after them must still appear.
    screen.feed(b"\x1b[?5lA\x1b[?1eB\x1b[?3hC")
    screen.feed(b"\r\nafter")
    lines = screen.lines()
    assert lines[0] == "ABC"
    assert lines[1] == "after"
    assert screen._stream.faults >= 1
    assert screen.cols == 20  # DECCOLM (?3h) must not resize the screen to 132 columns


def test_wide_character_overwritten_by_narrow_one_renders():
    screen = Screen(cols=10, rows=2)
    screen.feed("漢字".encode() + b"\x1b[1;1Hx")
    # pyte's own display() raises IndexError on the orphaned stub cell; ours renders.
    assert screen.lines()[0] == "x字"


def test_feed_is_lazy_and_sync_catches_up():
    screen = Screen(cols=20, rows=2)
    screen.feed(b"abc")
    assert screen._pending  # nothing rendered yet
    assert screen._emulator.display[0].strip() == ""
    screen.sync()
    assert not screen._pending
    assert screen.lines()[0] == "abc"


def test_version_and_changed_at_move_on_feed():
    screen = Screen()
    v0, t0 = screen.version, screen.changed_at
    screen.feed(b"x")
    assert screen.version == v0 + 1
    assert screen.changed_at >= t0
    screen.feed(b"")
    assert screen.version == v0 + 1


def test_cursor_visibility():
    screen = Screen(cols=10, rows=2)
    screen.feed(b"\x1b[?25l")
    assert screen.cursor()["visible"] is False
    screen.feed(b"\x1b[?25h")
    assert screen.cursor()["visible"] is True


def test_alternate_screen_switches_and_restores_main():
    screen = Screen(cols=20, rows=3)
    screen.feed(b"$ less file\r\n")
    screen.feed(b"\x1b[?1049h\x1b[H\x1b[2Jpage one")
    assert screen.alternate
    assert screen.lines()[0] == "page one"
    assert "$ less file" not in screen.text()
    screen.feed(b"\x1b[?1049l")
    assert not screen.alternate
    assert screen.lines()[0] == "$ less file"
    assert screen.cursor()["y"] == 1


def test_large_backlog_is_skipped_to_the_tail():
    screen = Screen(cols=40, rows=5, backlog_limit=10_000, replay_bytes=2_000)
    for i in range(5000):
        screen.feed(f"line {i}\r\n".encode())
    screen.feed(b"the end")
    start = time.monotonic()
    lines = screen.lines()
    assert time.monotonic() - start < 5
    assert lines[-1] == "the end"
    assert lines[-2] == "line 4999"
    assert screen.skipped_bytes > 0


def test_skip_keeps_alternate_screen_and_hidden_cursor():
    screen = Screen(cols=40, rows=5, backlog_limit=10_000, replay_bytes=2_000)
    screen.feed(b"\x1b[?1049h\x1b[?25l")
    screen.feed(b"x" * 50_000)
    screen.feed(b"\x1b[Hdrawn")
    assert screen.alternate
    assert screen.cursor()["visible"] is False
    assert screen.lines()[0].startswith("drawn")


def test_skip_keeps_last_mode_from_dropped_part_over_earlier_ones():
    screen = Screen(cols=40, rows=5, backlog_limit=10_000, replay_bytes=2_000)
    screen.feed(b"\x1b[?1049h" + b"y" * 20_000 + b"\x1b[?1049l\x1b[?25l" + b"z" * 20_000)
    assert not screen.alternate
    assert screen.cursor()["visible"] is False


def test_skip_when_emulator_already_in_alternate_and_dropped_part_leaves_it():
    screen = Screen(cols=40, rows=5, backlog_limit=10_000, replay_bytes=2_000)
    screen.feed(b"\x1b[?1049h")
    assert screen.alternate
    screen.feed(b"\x1b[?1049l" + b"w" * 30_000)
    assert not screen.alternate


def test_bells_are_counted_but_not_osc_terminators():
    screen = Screen()
    screen.feed(b"\x07ding")
    assert screen.bell_count == 1
    screen.feed(b"\x1b]0;my title\x07text\x07")
    assert screen.bell_count == 2
    assert screen.title == "my title"


def test_osc_split_across_reads_does_not_count_its_bel():
    screen = Screen()
    screen.feed(b"\x1b]2;long ti")
    screen.feed(b"tle\x07 and a real bell \x07")
    assert screen.bell_count == 1
    screen.feed(b"\x1b]0;st terminated\x1b\\\x07")
    assert screen.bell_count == 2


def test_resize():
    screen = Screen(cols=10, rows=2)
    screen.feed(b"0123456789")
    screen.resize(5, 3)
    assert screen.cols == 5 and screen.rows == 3
    assert screen.lines() == ["01234", "", ""]


def test_strip_ansi_removes_sequences():
    raw = "\x1b[1;32mgreen\x1b[0m \x1b]0;title\x07plain \x1b(B\x1b[?2004hend\x1bP1;2q\x1b\\"
    assert strip_ansi(raw) == "green plain end"


def test_strip_ansi_keeps_the_room_a_cursor_move_to_the_right_makes():
    """tmux sends a tab as a move to the right: a tmux worker's reply lost its tabs, a table
    read `col1col2c3` (QA)."""
    assert strip_ansi("col1\x1b[4Ccol2\x1b[Cc3\r\n1\x1b[7C22") == "col1    col2 c3\n1       22"


def test_strip_ansi_carriage_returns_and_newlines():
    assert strip_ansi("a\r\nb\r\n") == "a\nb\n"
    assert strip_ansi("⠋ working\r⠙ working\r\x1b[Kdone\r\nnext") == "done\nnext"
    assert strip_ansi("progress 100%\r\n") == "progress 100%\n"
    assert strip_ansi("kept\r") == "kept"


def test_strip_ansi_backspaces():
    assert strip_ansi("abc\x08\x08xy") == "axy"
    assert strip_ansi("\x08\x08x") == "x"


def test_strip_ansi_drops_other_control_characters():
    assert strip_ansi("a\x00b\x07c\td") == "abc\td"


def test_skip_of_plain_scrolling_output_still_fills_the_screen():
    screen = Screen(cols=10, rows=4, backlog_limit=10_000, replay_bytes=5_000)
    for i in range(3000):
        # Lines longer than the screen is wide wrap onto two rows.
        screen.feed(f"{i:05d}-abcdefgh\r\n".encode())
    screen.feed(b"tail")
    assert screen.lines() == ["02998-abcd", "efgh", "02999-abcd", "efgh", "tail"][-4:]
    # Only the last lines were emulated, not the whole replay window.
    assert screen.skipped_bytes > 3000 * 16 - 200


def test_skip_with_cursor_addressing_replays_the_whole_tail():
    screen = Screen(cols=20, rows=4, backlog_limit=10_000, replay_bytes=3_000)
    screen.feed(b"x" * 20_000)
    # A status line held at the top by a scroll region; the last few lines alone would not
    # repaint it.
    screen.feed(b"\x1b[1;1Hstatus\x1b[2;4r\x1b[4;1H" + b"line\r\n" * 50 + b"end")
    assert screen.lines()[0] == "status"
    assert screen.lines()[-1] == "end"


def test_queue_stays_bounded_when_nobody_reads_and_modes_survive():
    screen = Screen(cols=40, rows=5, backlog_limit=10_000, replay_bytes=2_000)
    screen.feed(b"\x1b[?1049h\x1b[?25l")
    for _ in range(2000):
        screen.feed(b"z" * 1000)
        assert screen._pending_bytes <= 4 * 10_000 + 1000
    screen.feed(b"\x1b[Hlast")
    assert screen.alternate
    assert screen.cursor()["visible"] is False
    assert screen.lines()[0].startswith("last")
    assert screen.skipped_bytes > 1_900_000


def test_skip_does_not_disturb_bell_counting_of_a_split_osc():
    screen = Screen(cols=40, rows=5, backlog_limit=1_000, replay_bytes=200)
    screen.feed(b"x" * 5_000 + b"\x1b]0;a title that is")
    screen.lines()  # a sync with a skip happens between the two halves of the OSC
    screen.feed(b" split\x07")
    assert screen.bell_count == 0


def test_trimming_keeps_the_exact_tail_and_modes_split_between_chunks():
    # The queue is trimmed chunk by chunk: what is kept must still be the stream's last
    # `backlog_limit` bytes, and a mode sequence cut between chunks (even between three)
    # must count as it does in the joined stream.
    rng = random.Random(7)
    pieces = [b"\x1b[?1049h", b"\x1b[?1049l", b"\x1b[?25l", b"\x1b[?25h", b"\x1b[?47h"]
    screen = Screen(cols=40, rows=5, backlog_limit=1_000, replay_bytes=200)
    for chunk in [b"y" * 50, b"\x1b[?10", b"49", b"h", b"\x1b", b"[?25l", *[b"z" * 700] * 10]:
        screen.feed(chunk)
    assert screen._carry == (True, True)  # alternate screen, hidden cursor
    for _ in range(200):
        screen = Screen(cols=40, rows=5, backlog_limit=1_000, replay_bytes=200)
        stream = b"".join(
            rng.choice(pieces) if rng.random() < 0.03 else b"y" * rng.randrange(1, 40)
            for _ in range(400)
        )
        at, fed = 0, []
        while at < len(stream):
            size = rng.choice([1, 2, 3, 5, 50, 700])
            fed.append(stream[at : at + size])
            screen.feed(stream[at : at + size])
            at += size
        kept = b"".join(screen._pending)
        assert kept == stream[-len(kept) :] and len(kept) <= 4_000
        assert screen.skipped_bytes == len(stream) - len(kept)
        expected = Screen(cols=40, rows=5)._modes([stream[: len(stream) - len(kept)]])
        assert screen._carry == expected, fed


@pytest.mark.parametrize(
    ("data", "nothing_new"),
    [
        (b"\x1b[?25l\x1b[?12l\x1b[?25h", True),  # a tmux client after attaching
        (b"\x1b[?7727h", True),
        (b"\x1b[?1;2004h", True),
        (b"\x1b[?1049h", False),  # the alternate screen: another screen is shown
        (b"\x1b[?1;47h", False),
        (b"\x1b[?25lx", False),  # text
        (b"\x1b[2J", False),  # an erase
        (b"", False),
    ],
)
def test_what_shows_nothing_new(data, nothing_new):
    assert shows_nothing_new(data) is nothing_new


def test_fewer_rows_drop_the_empty_ones_under_the_cursor_first():
    """pyte dropped the top rows: a shell's banner and prompt went from the screen (and the
    activity read from it), and the cursor stayed on its row number, now another line."""
    screen = Screen(80, 44)
    screen.feed(b"\x1b[H\x1b[2Jbanner\r\n$ ls\r\n$ ")  # cleared first, as programs do
    screen.resize(80, 41)
    assert screen.lines()[:3] == ["banner", "$ ls", "$"]
    assert screen.cursor()["y"] == 2 and len(screen.lines()) == 41
    screen.resize(80, 44)  # and back: nothing dropped comes back
    assert screen.lines()[:3] == ["banner", "$ ls", "$"] and screen.lines()[3:] == [""] * 41


def test_fewer_rows_with_the_cursor_at_the_bottom_drop_the_top_ones():
    screen = Screen(80, 10)
    screen.feed(b"\r\n".join(b"line %d" % n for n in range(10)))
    screen.resize(80, 7)
    assert screen.lines() == [f"line {n}" for n in range(3, 10)]
    assert screen.cursor()["y"] == 6  # on "line 9" still
    screen.feed(b"!")
    assert screen.lines()[-1] == "line 9!"


def test_fewer_rows_in_the_alternate_screen_cut_the_main_one_the_same_way():
    screen = Screen(80, 10)
    screen.feed(b"\r\n".join(b"line %d" % n for n in range(10)))
    screen.feed(b"\x1b[?1049h\x1b[Hfull screen")
    screen.resize(80, 6)
    screen.feed(b"\x1b[?1049l")
    assert screen.lines() == [f"line {n}" for n in range(4, 10)]
    assert screen.cursor()["y"] == 5


def test_scroll_up_and_down_move_the_lines_and_leave_the_cursor():
    """pyte ignores SU and SD (`CSI n S`, `CSI n T`), which tmux sends: a tmux worker's
    screen showed old lines twice and missed the new ones (QA)."""
    screen = Screen(20, 5)
    screen.feed(b"l1\r\nl2\r\nl3\r\nl4\r\nl5")
    screen.feed(b"\r\x1b[2S\x1b[Aone\r\ntwo")
    assert screen.lines() == ["l3", "l4", "l5", "one", "two"]  # as xterm shows it
    screen.feed(b"\x1b[T")
    assert screen.lines() == ["", "l3", "l4", "l5", "one"]
    assert screen.cursor()["y"] == 4
    screen.feed(b"\x1b[2;4r\x1b[9S")  # within the margins only, and no more than they hold
    assert screen.lines() == ["", "", "", "", "one"]
    screen.feed(b"\x1b[?1;2S")  # XTSMGRAPHICS, not a scroll
    assert screen.lines() == ["", "", "", "", "one"]
