"""Tests of activity rules, of the built-in patterns on real CLI screens, and of terminals."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest

from mas_jupyter.core.activity import ActivityRules, activity_from_stat, terminal_activity
from mas_jupyter.core.backends import load_backends
from mas_jupyter.core.errors import InvalidError
from mas_jupyter.core.screen import Screen

FIXTURES = Path(__file__).parent / "fixtures" / "screens"
SCREENS = sorted(FIXTURES.glob("*/*.txt"))

RULES = ActivityRules(
    {
        "waiting": [r"\(yes/no\) *\Z", r"Do you want to proceed\?"],
        "busy": [r"working\.\.\."],
        "idle": [r"^> *\Z"],
    },
    idle_stable_seconds=0.5,
)


def render(text: str, cols: int = 120, rows: int = 40) -> list[str]:
    """The lines a terminal of cols x rows shows for a captured screen."""
    screen = Screen(cols, rows)
    screen.feed("\r\n".join(text.split("\n")[:rows]).encode())
    return screen.lines()


@pytest.mark.parametrize("path", SCREENS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_builtin_patterns_on_recorded_screens(path):
    backend = load_backends({}, entry_points=False)[path.parent.name]
    expected = path.name.split("-")[0]
    lines = render(path.read_text(encoding="utf-8"))
    assert backend.rules().classify(lines, stable_for=5.0) == expected


def test_every_agent_backend_has_fixtures_of_each_state():
    for backend in ("claude", "codex", "gemini", "aider", "demo"):
        states = {p.name.split("-")[0] for p in (FIXTURES / backend).glob("*.txt")}
        assert states >= {"busy", "idle", "waiting"}, backend
        assert (FIXTURES / backend / "SOURCE.md").exists()


def test_idle_screen_that_just_changed_is_still_busy():
    lines = ["some reply", ">"]
    assert RULES.classify(lines, stable_for=0.1) == "busy"
    assert RULES.classify(lines, stable_for=0.5) == "idle"


def test_waiting_wins_over_busy_and_idle():
    lines = ["working... (3)", "Do you want to proceed?", ">"]
    assert RULES.classify(lines, stable_for=0.0) == "waiting"


def test_waiting_is_searched_on_the_whole_screen():
    lines = ["Do you want to proceed?"] + [f"option {i}" for i in range(30)]
    assert RULES.classify(lines, stable_for=1.0) == "waiting"


def test_busy_only_counts_near_the_bottom():
    old = ["working... (1)"] + [f"output {i}" for i in range(20)] + [">"]
    assert RULES.classify(old, stable_for=1.0) == "idle"
    recent = ["output", "working... (2)"]
    assert RULES.classify(recent, stable_for=1.0) == "busy"


def test_end_anchor_means_last_non_empty_line():
    lines = ["Proceed? (yes/no)", "", "", ""]
    assert RULES.classify(lines, stable_for=1.0) == "waiting"
    answered = ["Proceed? (yes/no) yes", "done", ">"]
    assert RULES.classify(answered, stable_for=1.0) == "idle"


def test_bell_without_match_means_waiting():
    lines = ["something unusual"]
    assert RULES.classify(lines, stable_for=1.0, bell=True) == "waiting"
    assert RULES.classify(lines, stable_for=1.0) == "unknown"
    assert RULES.classify(lines, stable_for=0.1) == "busy"
    # A bell does not override a recognised prompt.
    assert RULES.classify(["done", ">"], stable_for=1.0, bell=True) == "idle"


def test_empty_screen():
    assert RULES.classify([""] * 40, stable_for=10) == "unknown"
    assert RULES.classify([], stable_for=0) == "busy"


def test_invalid_regex_names_the_backend_and_pattern():
    with pytest.raises(InvalidError) as err:
        ActivityRules({"idle": ["("]}, name="mybot")
    assert "mybot" in err.value.message and "idle" in err.value.message
    with pytest.raises(InvalidError, match="unknown pattern kind"):
        ActivityRules({"idel": []}, name="mybot")
    with pytest.raises(InvalidError, match="list of regexes"):
        ActivityRules({"busy": "working"}, name="mybot")


def test_stat_parsing_with_hostile_command_names():
    # comm may contain spaces and ")": fields start after the last ")".
    stat = "1234 (we ird) (1) 2) S 1 1234 1234 34816 1234 4194304 0 0"
    assert activity_from_stat(stat) == "idle"
    stat = "1234 (we ird) (1) 2) S 1 1234 1234 34816 5678 4194304 0 0"
    assert activity_from_stat(stat) == "busy"
    assert activity_from_stat("1234 (bash) S 1 1234 1234 0 -1 0") == "unknown"
    assert activity_from_stat("1234 (bash) Z 1 1234 1234 0 1234 0") == "unknown"
    assert activity_from_stat("garbage") == "unknown"


def test_terminal_activity_of_missing_process():
    assert terminal_activity(2**22 + 12345) == "unknown"


def _await(predicate, timeout: float = 10.0) -> bool:
    """Poll a cheap condition until it holds or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_terminal_activity_follows_the_foreground_job():
    env = dict(os.environ, PS1="prompt$ ", TERM="dumb")
    shell = pexpect.spawn(
        "/bin/bash",
        ["--noprofile", "--norc", "-i"],
        env=env,
        encoding="utf-8",
        timeout=10,
        # A test run from a background job inherits an ignored SIGINT; give the shell (and so
        # its jobs) the default, as the worker runtimes do.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        shell.expect_exact("prompt$ ")
        assert terminal_activity(shell.pid) == "idle"
        shell.sendline(f'{sys.executable} -c \'import time; print("sle" "eping"); time.sleep(30)\'')
        # Wait for the job to run: a ^C between bash's fork and exec would be lost.
        shell.expect_exact("sleeping")
        assert _await(lambda: terminal_activity(shell.pid) == "busy")
        shell.sendintr()
        shell.expect_exact("prompt$ ")
        assert _await(lambda: terminal_activity(shell.pid) == "idle")
    finally:
        shell.close(force=True)
