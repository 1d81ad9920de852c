"""Tests of the demo agent through a real PTY, the way a worker runs it."""

from __future__ import annotations

import json
import os
import sys
import time

import pexpect
import pytest

from mas_jupyter.core.backends import load_backends
from mas_jupyter.core.reply import extract_reply
from mas_jupyter.core.screen import Screen

PROMPT = "demo> "


class Agent:
    """A demo agent in a PTY whose output also feeds a VT screen, like a worker's."""

    def __init__(self, cwd, *args: str, delay: float = 0.05, env: dict | None = None) -> None:
        self.screen = Screen(120, 40)
        self.raw = bytearray()
        full_env = dict(os.environ, TERM="xterm-256color", **(env or {}))
        argv = ["-m", "mas_jupyter.demo_agent", *args]
        if delay is not None:
            argv += ["--delay", str(delay)]
        self.child = pexpect.spawn(
            sys.executable, argv, cwd=str(cwd), env=full_env, timeout=15, dimensions=(40, 120)
        )

    def expect(self, pattern, timeout: float = 15):
        """Wait for a pattern (bytes regex or list), keeping everything read."""
        index = self.child.expect(pattern, timeout=timeout)
        chunk = self.child.before + (
            self.child.after if isinstance(self.child.after, bytes) else b""
        )
        self.raw += chunk
        self.screen.feed(chunk)
        return index

    def expect_exact(self, text: str, timeout: float = 15):
        """Wait for literal text."""
        self.child.expect_exact(text.encode(), timeout=timeout)
        chunk = self.child.before + self.child.after
        self.raw += chunk
        self.screen.feed(chunk)

    def send(self, text: str) -> None:
        """Type text and Enter."""
        self.child.send(text.encode() + b"\r")

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def agent(tmp_path):
    started = []

    def start(*args: str, **kwargs) -> Agent:
        a = Agent(tmp_path, *args, **kwargs)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def rules():
    return load_backends({}, entry_points=False)["demo"].rules()


def test_banner_prompt_and_bracketed_paste_mode(agent):
    a = agent()
    a.expect_exact("mas demo agent — no model, deterministic replies")
    a.expect_exact(PROMPT)
    assert b"\x1b[?2004h" in a.raw
    assert a.screen.lines()[-1] == "" and "demo>" in a.screen.text().splitlines()[-1]
    assert rules().classify(a.screen.lines(), stable_for=1.0) == "idle"


def test_message_gets_working_indicator_then_deterministic_reply(agent):
    a = agent(delay=0.3)
    a.expect_exact(PROMPT)
    start = len(a.raw)
    a.send("hello there world")
    a.expect_exact("working... (")
    assert rules().classify(a.screen.lines(), stable_for=0.0) == "busy"
    a.expect_exact("reply: hello there world (3 words, 1 lines)")
    a.expect_exact(PROMPT)
    assert rules().classify(a.screen.lines(), stable_for=1.0) == "idle"
    # The indicator was erased: it is not on the final screen.
    assert "working" not in a.screen.text()
    demo = load_backends({}, entry_points=False)["demo"]
    reply = extract_reply(
        bytes(a.raw[start:]), "hello there world", demo.patterns["idle"], demo.patterns["busy"]
    )
    assert reply == "reply: hello there world (3 words, 1 lines)"


def test_bracketed_paste_is_one_multi_line_message(agent):
    a = agent()
    a.expect_exact(PROMPT)
    start = len(a.raw)
    a.child.send(b"\x1b[200~first line\rsecond line\rthird\x1b[201~\r")
    a.expect_exact("reply: first line second line third (5 words, 3 lines)")
    a.expect_exact(PROMPT)
    demo = load_backends({}, entry_points=False)["demo"]
    reply = extract_reply(
        bytes(a.raw[start:]),
        "first line\nsecond line\nthird",
        demo.patterns["idle"],
        demo.patterns["busy"],
    )
    assert reply == "reply: first line second line third (5 words, 3 lines)"
    # Only one reply: the paste was not taken as three messages.
    assert a.raw.count(b"reply:") == 1
    # Paste markers are echoed raw (not as ^[[200~), so nothing of them shows on screen.
    assert "200~" not in a.screen.text()


def test_ask_waits_for_yes_or_no(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/ask")
    a.expect_exact("Proceed with the change? (yes/no) ")
    assert rules().classify(a.screen.lines(), stable_for=1.0) == "waiting"
    a.send("maybe")
    a.expect_exact("please answer yes or no")
    a.expect_exact("(yes/no) ")
    a.send("yes")
    a.expect_exact("ok: change applied")
    a.expect_exact(PROMPT)
    assert rules().classify(a.screen.lines(), stable_for=1.0) == "idle"
    a.send("/ask")
    a.expect_exact("(yes/no) ")
    a.send("no")
    a.expect_exact("ok: change cancelled")


def test_bell_rings_and_waits(agent):
    a = agent()
    a.expect_exact(PROMPT)
    bells = a.screen.bell_count
    a.send("/bell")
    a.expect_exact("(yes/no) ")
    assert a.screen.bell_count == bells + 1
    assert rules().classify(a.screen.lines(), stable_for=1.0, bell=True) == "waiting"
    a.send("yes")
    a.expect_exact("ok: you said yes")


def test_write_creates_a_file_and_refuses_paths(agent, tmp_path):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/write notes.txt some notes here")
    a.expect_exact("wrote notes.txt (16 bytes)")
    assert (tmp_path / "notes.txt").read_text() == "some notes here\n"
    a.expect_exact(PROMPT)
    a.send("/write ../escape.txt nope")
    a.expect_exact("refused:")
    a.send("/write sub/x.txt nope")
    a.expect_exact("refused:")
    a.expect_exact(PROMPT)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_write_does_not_follow_a_planted_symlink(agent, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("keep")
    (tmp_path / "link.txt").symlink_to(target)
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/write link.txt overwrite")
    a.expect_exact("could not write link.txt")
    assert target.read_text() == "keep"


def test_flood_prints_exactly_the_requested_bytes(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/flood 200000")
    a.expect_exact("flood done: 200000 bytes", timeout=30)
    flood = bytes(a.raw).split(b"/flood 200000\r\n", 1)[1].split(b"\r\nflood done", 1)[0]
    # The terminal turns each \n into \r\n; count the program's bytes.
    assert len(flood.replace(b"\r\n", b"\n")) == 200000
    a.expect_exact(PROMPT)


def test_crash_exits_with_status_3(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/crash")
    a.expect_exact("RuntimeError: demo crash requested with /crash")
    a.expect(pexpect.EOF)
    a.child.close()
    assert a.child.exitstatus == 3


def test_exit_and_end_of_input_exit_0(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/exit")
    a.expect_exact("bye")
    a.expect(pexpect.EOF)
    a.child.close()
    assert a.child.exitstatus == 0
    b = agent()
    b.expect_exact(PROMPT)
    b.child.sendeof()
    b.expect(pexpect.EOF)
    b.child.close()
    assert b.child.exitstatus == 0


def test_sleep_is_busy_then_idle(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/sleep 0.5")
    a.expect_exact("working... (")
    assert rules().classify(a.screen.lines(), stable_for=0.0) == "busy"
    a.expect_exact("slept 0.5 s")
    a.expect_exact(PROMPT)


def test_ctrl_c_interrupts_work(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/sleep 30")
    a.expect_exact("working... (")
    started = time.monotonic()
    a.child.sendintr()
    a.expect_exact("interrupted")
    a.expect_exact(PROMPT)
    assert time.monotonic() - started < 10


def test_continue_reloads_the_conversation(agent, tmp_path):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("first question")
    a.expect_exact("reply: first question")
    a.expect_exact(PROMPT)
    a.send("second question")
    a.expect_exact("reply: second question")
    a.expect_exact(PROMPT)
    a.send("/exit")
    a.expect(pexpect.EOF)
    history = (tmp_path / ".mas" / "demo-history.jsonl").read_text().splitlines()
    assert [json.loads(line)["role"] for line in history] == ["user", "agent"] * 2
    b = agent("--continue")
    b.expect_exact("continuing conversation (2 earlier messages)")
    b.expect_exact(PROMPT)


def test_delay_from_environment(agent):
    a = agent(delay=None, env={"MAS_DEMO_DELAY": "0.6"})
    a.expect_exact(PROMPT)
    started = time.monotonic()
    a.send("hi")
    a.expect_exact("reply: hi")
    assert time.monotonic() - started >= 0.55


def test_unknown_command_and_help(agent):
    a = agent()
    a.expect_exact(PROMPT)
    a.send("/nope")
    a.expect_exact("unknown command: /nope (try /help)")
    a.send("/help")
    a.expect_exact("/flood BYTES")
