"""mas demo agent: a small line-based stand-in for an agent CLI, with no model.

For demos and tests on machines without an agent CLI. It behaves like one where mas_jupyter
looks: a prompt at the start of a line ("demo> "), a working indicator while it "thinks", a
deterministic reply, a yes/no question that waits for the user, bracketed paste for multi-line
messages, and a conversation it can continue after a restart (`--continue`).

    python -m mas_jupyter.demo_agent [--continue] [--delay SECONDS]

Commands: /help, /ask, /write NAME TEXT, /flood BYTES, /sleep SECONDS, /bell, /crash, /exit.
The delay (default 0.3 s, or $MAS_DEMO_DELAY) is how long the working indicator shows.

It reads its terminal in canonical (line) mode, so the kernel's line discipline echoes and edits
input, and one line is at most 4095 bytes; a longer pasted line is cut by the terminal driver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time

BANNER = "mas demo agent — no model, deterministic replies"
PROMPT = "demo> "
HISTORY = os.path.join(".mas", "demo-history.jsonl")
PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
FLOOD_MAX = 1024**3
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
HELP = """commands:
  /ask              ask a yes/no question and wait for the answer
  /write NAME TEXT  write TEXT to the file NAME in the current directory
  /flood BYTES      print BYTES bytes of text as fast as possible
  /sleep SECONDS    stay busy for SECONDS
  /bell             ring the terminal bell and ask for attention
  /crash            print a traceback and exit with status 3
  /exit             quit
anything else is a message, answered without a model."""


class DemoAgent:
    """The demo agent's conversation loop over a terminal (or any text streams)."""

    def __init__(self, delay: float, stdin=None, stdout=None) -> None:
        self.delay = delay
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.history = 0

    def write(self, text: str) -> None:
        """Print without a newline and flush, as a terminal program does."""
        self.out.write(text)
        self.out.flush()

    def say(self, text: str = "") -> None:
        """Print a line."""
        self.write(text + "\n")

    def read_line(self) -> str | None:
        """One line of input without its newline, or None at end of input."""
        line = self.stdin.readline()
        if not line:
            return None
        return line.rstrip("\r\n")

    def read_message(self) -> str | None:
        """The next message: one line, or a bracketed paste spread over several lines."""
        line = self.read_line()
        if line is None or PASTE_START not in line:
            return line
        # The terminal wraps pasted text in ESC[200~ ... ESC[201~; everything between is one
        # message, whatever newlines it holds.
        parts = [line.split(PASTE_START, 1)[1]]
        while PASTE_END not in parts[-1]:
            more = self.read_line()
            if more is None:
                break
            parts.append(more)
        parts[-1] = parts[-1].split(PASTE_END, 1)[0]
        return "\n".join(parts)

    def working(self, seconds: float) -> None:
        """Show the working indicator on one line, rewritten in place, for `seconds`."""
        if seconds <= 0:
            return
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            self.write(f"\rworking... ({tick})")
            left = seconds - (time.monotonic() - start)
            if left <= 0:
                break
            time.sleep(min(0.1, left))
        # Erase the indicator so that it does not stay on screen after the reply.
        self.write("\r\x1b[K")

    def ask(self, question: str) -> str | None:
        """Ask a yes/no question until answered; 'yes', 'no', or None at end of input."""
        while True:
            self.write(f"{question} (yes/no) ")
            answer = self.read_line()
            if answer is None:
                return None
            answer = answer.strip().lower()
            if answer in ("y", "yes"):
                return "yes"
            if answer in ("n", "no"):
                return "no"
            self.say("please answer yes or no")

    def reply_to(self, message: str) -> str:
        """The deterministic reply to a message."""
        flat = " ".join(message.split())
        words = len(message.split())
        lines = len(message.split("\n"))
        return f"reply: {flat[:60]} ({words} words, {lines} lines)"

    def handle(self, message: str) -> int | None:
        """Act on one message; an exit status when the agent should stop."""
        command, _, rest = message.strip().partition(" ")
        if command == "/help":
            self.say(HELP)
        elif command == "/exit":
            self.say("bye")
            return 0
        elif command == "/crash":
            self.crash()
        elif command == "/ask":
            self.working(self.delay)
            answer = self.ask("Proceed with the change?")
            if answer is None:
                return 0
            self.say("ok: change applied" if answer == "yes" else "ok: change cancelled")
            remember("agent", f"/ask answered {answer}")
        elif command == "/bell":
            self.write("\a")
            answer = self.ask("Attention needed: are you still there?")
            if answer is None:
                return 0
            self.say(f"ok: you said {answer}")
        elif command == "/sleep":
            seconds = _number(rest, 0, 3600)
            if seconds is None:
                self.say("usage: /sleep SECONDS (0 to 3600)")
            else:
                self.working(seconds)
                self.say(f"slept {seconds:g} s")
        elif command == "/flood":
            count = _number(rest, 0, FLOOD_MAX)
            if count is None:
                self.say(f"usage: /flood BYTES (0 to {FLOOD_MAX})")
            else:
                self.flood(int(count))
        elif command == "/write":
            self.write_file(rest)
        elif command.startswith("/"):
            self.say(f"unknown command: {command} (try /help)")
        else:
            self.working(self.delay)
            reply = self.reply_to(message)
            self.say(reply)
            remember("user", message)
            remember("agent", reply)
            self.history += 1
        return None

    def write_file(self, rest: str) -> None:
        """Write a file in the current directory: a plain name, never a path or a link."""
        name, _, text = rest.strip().partition(" ")
        if not _FILE_NAME_RE.match(name) or name.endswith("."):
            self.say(
                f"refused: {name!r} is not a plain file name (letters, digits, '.', '_', '-'; "
                "no slashes)"
            )
            return
        self.working(self.delay)
        data = (text + "\n").encode()
        try:
            # O_NOFOLLOW: a symlink planted under that name must not redirect the write.
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            self.say(f"could not write {name}: {exc.strerror}")
            return
        self.say(f"wrote {name} ({len(data)} bytes)")
        remember("agent", f"wrote {name}")

    def flood(self, count: int) -> None:
        """Print `count` bytes of numbered text lines as fast as the terminal takes them."""
        out = self.out.buffer if hasattr(self.out, "buffer") else None
        self.out.flush()
        sent = 0
        number = 0
        block = []
        size = 0
        while sent + size < count:
            number += 1
            line = f"flood {number:08d} the quick brown fox jumps over the lazy dog\n".encode()
            line = line[: count - sent - size]
            block.append(line)
            size += len(line)
            if size >= 65536 or sent + size >= count:
                chunk = b"".join(block)
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    self.write(chunk.decode())
                sent += len(chunk)
                block, size = [], 0
        self.say(f"\nflood done: {count} bytes")

    def crash(self) -> None:
        """Print a made-up traceback and exit with status 3, like an agent that crashed."""
        self.out.flush()
        sys.stderr.write(
            "Traceback (most recent call last):\n"
            '  File "demo_agent.py", line 1, in <module>\n'
            "RuntimeError: demo crash requested with /crash\n"
        )
        sys.stderr.flush()
        sys.exit(3)

    def run(self, resume: bool) -> int:
        """Talk until /exit or end of input; the exit status."""
        self.say(BANNER)
        if resume:
            earlier = count_history()
            self.history = earlier
            self.say(f"continuing conversation ({earlier} earlier messages)")
        self.say("type a message, or /help")
        # Ask the terminal to mark pasted text, so a multi-line paste is one message.
        self.write("\x1b[?2004h")
        try:
            while True:
                self.write(PROMPT)
                try:
                    message = self.read_message()
                    if message is None:
                        self.say()
                        return 0
                    if not message.strip():
                        continue
                    status = self.handle(message)
                except KeyboardInterrupt:
                    self.write("\r\x1b[K")
                    self.say("interrupted")
                    continue
                if status is not None:
                    return status
        finally:
            self.write("\x1b[?2004l")


def _number(text: str, low: float, high: float) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if low <= value <= high else None


def remember(role: str, text: str) -> None:
    """Append a turn to the conversation history in the current directory."""
    try:
        os.makedirs(os.path.dirname(HISTORY), exist_ok=True)
        with open(HISTORY, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": time.time(), "role": role, "text": text}) + "\n")
    except OSError:
        pass  # a read-only workspace only costs the memory of the conversation


def count_history() -> int:
    """How many user messages the saved conversation holds."""
    try:
        with open(HISTORY, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if '"role": "user"' in line)
    except OSError:
        return 0


def _quiet_control_echo() -> None:
    """Echo control characters raw, not as ^[ : the paste markers then stay invisible."""
    try:
        import termios

        fd = sys.stdin.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHOCTL
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (ImportError, OSError, ValueError, AttributeError):
        pass  # not a terminal: nothing is echoed anyway


def main(argv: list[str] | None = None) -> int:
    """Run the demo agent; its exit status."""
    parser = argparse.ArgumentParser(prog="mas_jupyter.demo_agent", description=BANNER)
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="reload the conversation kept in .mas/demo-history.jsonl",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=None,
        help="seconds the working indicator shows (default $MAS_DEMO_DELAY or 0.3)",
    )
    args = parser.parse_args(argv)
    delay = args.delay
    if delay is None:
        try:
            delay = float(os.environ.get("MAS_DEMO_DELAY", "0.3"))
        except ValueError:
            delay = 0.3
    delay = max(0.0, min(delay, 60.0))
    # A program started from a background job inherits an ignored SIGINT, and Python then
    # installs no KeyboardInterrupt handler; an agent must stop its work on Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    if sys.stdin.isatty():
        _quiet_control_echo()
    return DemoAgent(delay).run(args.resume)


if __name__ == "__main__":
    sys.exit(main())
