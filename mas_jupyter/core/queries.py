"""A program's queries to its terminal, and which console answers them.

A program asks its terminal things on its output (its device attributes, the cursor's
position, a colour) and reads the answer on its input. A worker's terminal is every console
open on it (side panel tabs, notebook consoles, `jupyter mas attach`), and each of them
answers what it shows. Two rules keep the program from reading answers it did not ask for:

- a replay (what a console shows when it connects) leaves the queries out: they were asked
  long ago, and the answers would reach the program as typed text;
- of the live answers, the first console to answer after a query answers for all of them
  until `ANSWER_SECONDS` pass without a new query; the others' answers are dropped. With two
  tabs open, a program that asks once would otherwise read two answers, the second one as
  input (`1;2c` typed at a shell's prompt, an agent's next message starting with it).

Only input that consists of nothing but answers, sent by a console in that window, is ever
dropped; keystrokes, pastes and REST input are never touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from time import monotonic

# How long after a query the first console to answer it keeps answering alone: a console
# answers within milliseconds of showing the query, a slow notebook view within a second.
ANSWER_SECONDS = 2.0

# Queries a terminal answers on its input: device attributes (DA1-3), status and cursor
# reports (DSR), its name (XTVERSION), mode reports (DECRQM), window reports (XTWINOPS 11,
# 13-21), the keyboard protocol, colors (OSC 4 and 10-19 with `?`), settings and terminfo
# (DECRQSS, XTGETTCAP).
_QUERY_RE = re.compile(
    r"\x1b\[(?:[>=]?0?c|\??[0-9;]*n|>0?q|\??[0-9;]+\$p|(?:1[13-9]|2[01])(?:;[0-9]*)*t|\?u)"
    r"|\x1b\](?:4;[0-9]+|1[0-9]);\?(?:\x07|\x1b\\)"
    r"|\x1bP[$+]q[^\x07\x1b]*(?:\x07|\x1b\\)"
)
# Input made of the answers to those queries and nothing else, as xterm.js and xterm send
# them: DA1 `CSI ? ... c`, DA2 `CSI > ... c`, DSR and cursor reports `CSI ... n|R`, DECRPM
# `CSI ? ... $ y`, window reports `CSI ... t`, keyboard flags `CSI ? ... u`, colours
# `OSC 4|10-19 ; ... ST`, and DCS strings (XTVERSION, DECRQSS, XTGETTCAP, DA3).
_ANSWERS_RE = re.compile(
    r"(?:\x1b\[[?>]?[0-9;]*[cnR]"
    r"|\x1b\[\??[0-9;]+\$y"
    r"|\x1b\[[0-9;]+t"
    r"|\x1b\[\?[0-9]*u"
    r"|\x1b\](?:4;[0-9]+|1[0-9]);[^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1bP[^\x07\x1b]*(?:\x07|\x1b\\))+"
)


def without_queries(text: str) -> str:
    """Output to replay on a terminal, without the queries the program made in it.

    A terminal answers a query on its input: a console that replays the recent output
    would answer queries made long ago (a `tmux attach` client's at its start, say), and its
    answers would be typed into the worker (`1;2c` after a shell's prompt, a message to an
    agent starting with `\\x1b[>0;276;0c`). Live output is left alone: the program waits
    for the answer to a query it makes now.
    """
    return _QUERY_RE.sub("", text) if "\x1b" in text else text


class Answerer:
    """Which of a worker's consoles answers the queries in its live output (see above)."""

    def __init__(self) -> None:
        self._asked = -math.inf  # when the output last held a query (monotonic)
        self._by: Hashable | None = None  # the console answering since then

    def saw(self, text: str) -> None:
        """Look at live output for queries (cheap when it holds no escape)."""
        if "\x1b" in text and _QUERY_RE.search(text):
            now = monotonic()
            if now - self._asked > ANSWER_SECONDS:
                self._by = None  # a new round: whoever answers first
            self._asked = now

    def admits(self, data: str, console: Hashable | None) -> bool:
        """Whether input from `console` (None: not a console, e.g. REST) reaches the program."""
        if console is None or monotonic() - self._asked > ANSWER_SECONDS:
            return True
        if not _ANSWERS_RE.fullmatch(data):
            return True  # typed, not answered
        if self._by is None:
            self._by = console
        return self._by == console
