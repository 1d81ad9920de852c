"""Tests of reply extraction from raw agent output."""

from __future__ import annotations

from mas_jupyter.core.backends import AIDER_PATTERNS, CLAUDE_PATTERNS, DEMO_PATTERNS
from mas_jupyter.core.reply import extract_reply

DEMO_PROMPT = DEMO_PATTERNS["idle"]
DEMO_BUSY = DEMO_PATTERNS["busy"]


def test_demo_style_reply():
    raw = (
        b"hello there\r\n"
        b"working... (1)\r\x1b[Kworking... (2)\r\x1b[K"
        b"\x1b[32mreply: hello there (2 words, 1 lines)\x1b[0m\r\n"
        b"demo> "
    )
    assert extract_reply(raw, "hello there", DEMO_PROMPT, DEMO_BUSY) == (
        "reply: hello there (2 words, 1 lines)"
    )


def test_multi_line_reply_and_multi_line_echo():
    raw = b"first line\r\nsecond line\r\n\r\nanswer one\r\nanswer two\r\n\r\ndemo> "
    reply = extract_reply(raw, "first line\nsecond line", DEMO_PROMPT, DEMO_BUSY)
    assert reply == "answer one\nanswer two"


def test_echo_with_prompt_prefix_is_removed():
    raw = b"> add tests\r\nI added the tests.\r\n> "
    assert extract_reply(raw, "add tests", AIDER_PATTERNS["idle"], []) == "I added the tests."


def test_reply_that_repeats_the_message_later_keeps_it():
    raw = b"ping\r\npong\r\nping\r\ndemo> "
    assert extract_reply(raw, "ping", DEMO_PROMPT, DEMO_BUSY) == "pong\nping"


def test_no_echo_at_all():
    raw = b"the answer\r\ndemo> "
    assert extract_reply(raw, "question", DEMO_PROMPT, DEMO_BUSY) == "the answer"


def test_busy_lines_are_removed_everywhere():
    raw = b"q\r\nworking... (1)\r\npart one\r\nworking... (2)\r\npart two\r\ndemo> "
    assert extract_reply(raw, "q", DEMO_PROMPT, DEMO_BUSY) == "part one\npart two"


def test_two_line_prompt_box_is_removed():
    rule = "─" * 40
    raw = f"● Done: 3 files changed.\r\n{rule}\r\n❯\u00a0\r\n{rule}\r\n".encode()
    reply = extract_reply(raw, "fix it", CLAUDE_PATTERNS["idle"], CLAUDE_PATTERNS["busy"])
    assert reply.splitlines()[0] == "● Done: 3 files changed."
    assert "❯" not in reply


def test_prompt_pattern_on_an_earlier_line_does_not_eat_the_reply():
    raw = b"q\r\n? for shortcuts is a tip\r\nreal answer\r\n"
    assert extract_reply(raw, "q", [r"\? for shortcuts"], []) == (
        "? for shortcuts is a tip\nreal answer"
    )


def test_invalid_utf8_and_bad_patterns_never_raise():
    raw = b"q\r\n\xff\xfeodd bytes\r\ndemo> "
    reply = extract_reply(raw, "q", ["(", *DEMO_PROMPT], ["["])
    assert reply == "\ufffd\ufffdodd bytes"


def test_empty_output():
    assert extract_reply(b"", "hello", DEMO_PROMPT, DEMO_BUSY) == ""
    assert extract_reply(b"hello\r\ndemo> ", "hello", DEMO_PROMPT, DEMO_BUSY) == ""


def test_reply_lines_that_end_as_a_prompt_does_are_kept():
    """Every trailing line matching the shell's idle pattern was taken for a prompt: a reply
    of HTML lost its last lines, `echo "x%"` replied nothing."""
    from mas_jupyter.core.backends import SHELL_PATTERNS

    raw = b"printf ...\r\n<html>\r\n<body>\r\nhello\r\n</body>\r\n</html>\r\n$ "
    reply = extract_reply(raw, "printf ...", SHELL_PATTERNS["idle"], [])
    assert reply == "<html>\n<body>\nhello\n</body>\n</html>"
    assert extract_reply(b'echo "x%"\r\nx%\r\n$ ', 'echo "x%"', SHELL_PATTERNS["idle"], []) == "x%"


def test_a_prompt_of_several_lines_goes_whole():
    rule = "─" * 40
    raw = f"● Done.\r\n{rule}\r\n❯\u00a0\r\n{rule}\r\n  ? for shortcuts\r\n".encode()
    reply = extract_reply(raw, "fix it", CLAUDE_PATTERNS["idle"], CLAUDE_PATTERNS["busy"])
    assert reply == "● Done."
