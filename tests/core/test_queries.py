"""A program's terminal queries: left out of replays, answered by one console."""

from __future__ import annotations

import pytest

from mas_jupyter.core import queries
from mas_jupyter.core.queries import Answerer, without_queries


@pytest.mark.parametrize(
    "query",
    ["\x1b[c", "\x1b[0c", "\x1b[>c", "\x1b[>0c", "\x1b[=c", "\x1b[6n", "\x1b[?6n", "\x1b[5n",
     "\x1b[>q", "\x1b[>0q", "\x1b[?2004$p", "\x1b[12$p", "\x1b[14t", "\x1b[18t", "\x1b[?u",
     "\x1b]11;?\x07", "\x1b]10;?\x1b\\", "\x1b]4;1;?\x07", "\x1bP$qm\x1b\\", "\x1bP+q544e\x1b\\"],
)  # fmt: skip
def test_a_replay_holds_no_query_a_terminal_would_answer(query):
    assert without_queries(f"a{query}b") == "ab"


@pytest.mark.parametrize(
    "kept",
    ["\x1b[31m", "\x1b[2J", "\x1b[8;40;120t", "\x1b[22;0t", "\x1b]0;title\x07", "\x1b[?1049h",
     "\x1b[1;1H", "\x1b[K", "\x1b[?25l", "\x1b]11;rgb:0000/0000/0000\x07"],
)  # fmt: skip
def test_a_replay_keeps_what_only_draws(kept):
    assert without_queries(f"a{kept}b") == f"a{kept}b"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(queries, "monotonic", clock)
    return clock


# What xterm.js answers to the queries above (DA1, DA2, DSR, CPR, DECRPM, XTVERSION, OSC 11,
# DECRQSS, XTGETTCAP, XTWINOPS, the keyboard flags), and several at once.
ANSWERS = [
    "\x1b[?1;2c", "\x1b[>0;276;0c", "\x1b[0n", "\x1b[12;40R", "\x1b[?12;40;1R", "\x1b[?2004;2$y",
    "\x1bP>|xterm.js(5.5.0)\x1b\\", "\x1b]11;rgb:0000/0000/0000\x1b\\", "\x1bP1$r0m\x1b\\",
    "\x1bP0+r\x1b\\", "\x1b[4;480;640t", "\x1b[?0u", "\x1b[?1;2c\x1b[>0;276;0c\x1b[12;40R",
]  # fmt: skip


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_first_console_to_answer_answers_alone(clock, answer):
    answerer = Answerer()
    answerer.saw("$ vim\r\n\x1b[c\x1b[>c\x1b[6n")
    assert answerer.admits(answer, "tab-1")
    assert not answerer.admits(answer, "tab-2")  # the program would read it as typed
    clock.now += 1
    assert answerer.admits(answer, "tab-1")  # a late answer of the same console
    assert not answerer.admits(answer, "tab-2")


def test_only_answers_from_consoles_in_the_window_are_dropped(clock):
    answerer = Answerer()
    assert answerer.admits("\x1b[?1;2c", "tab-2")  # no query seen: a paste, say
    answerer.saw("\x1b[c")
    assert answerer.admits("\x1b[?1;2c", "tab-1")
    for typed in ("ls\r", "\x1b[A", "\x1b[?1;2cx", "x\x1b[?1;2c", "\x1b[200~a\x1b[201~"):
        assert answerer.admits(typed, "tab-2"), typed  # keystrokes and pastes go through
    assert answerer.admits("\x1b[?1;2c", None)  # not a console (REST input)
    clock.now += queries.ANSWER_SECONDS + 0.1
    assert answerer.admits("\x1b[?1;2c", "tab-2")  # the window is over
    answerer.saw("\x1b]11;?\x07")  # a new query: whoever answers first, answers
    assert answerer.admits("\x1b]11;rgb:ffff/ffff/ffff\x07", "tab-2")
    assert not answerer.admits("\x1b]11;rgb:0000/0000/0000\x07", "tab-1")


def test_each_new_query_keeps_the_window_open(clock):
    answerer = Answerer()
    for _ in range(5):
        answerer.saw("\x1b[6n")
        assert answerer.admits("\x1b[3;1R", "tab-1")
        assert not answerer.admits("\x1b[3;1R", "tab-2")
        clock.now += queries.ANSWER_SECONDS * 0.9


def test_output_without_a_query_opens_no_window(clock):
    answerer = Answerer()
    answerer.saw("\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[8;40;120t plain")
    assert answerer.admits("\x1b[?1;2c", "tab-1") and answerer.admits("\x1b[?1;2c", "tab-2")
