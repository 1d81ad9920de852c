"""The PTY runtime and process-tree ending, with real pseudo-terminals and real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mas_jupyter.core import processes
from mas_jupyter.core.errors import TooLargeError, UnavailableError
from mas_jupyter.core.runtimes import pty, pump
from mas_jupyter.core.runtimes.pty import PtyProcess
from tests.conftest import PLAIN_BASH, until


class Collector:
    """Collects a PTY process's output and exit, with awaitable conditions."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.chunks: list[bytes] = []  # each piece of output as it was passed on
        self.exit: tuple[int | None, int | None] | None = None
        self.eof = False
        self.changed = asyncio.Event()

    def output(self, data: bytes) -> None:
        self.data += data
        self.chunks.append(data)
        self.changed.set()

    def ended(self) -> None:
        self.eof = True
        self.changed.set()

    def exited(self, code, sig) -> None:
        self.exit = (code, sig)
        self.changed.set()

    async def until(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; output so far: {bytes(self.data)[-500:]!r}"
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def spawn(self, argv, cwd=None, env=None, **kw) -> PtyProcess:
        proc = PtyProcess(
            argv,
            cwd or os.getcwd(),
            env or {**os.environ, "TERM": "xterm-256color"},
            80,
            24,
            self.output,
            self.ended,
            self.exited,
            **kw,
        )
        proc.spawn()
        return proc


async def test_output_exit_code_and_end_of_output():
    c = Collector()
    proc = c.spawn([sys.executable, "-c", "print('hello from pty'); raise SystemExit(7)"])
    await c.until(lambda: c.exit is not None and c.eof)
    assert b"hello from pty" in c.data
    assert c.exit == (7, None)
    proc.close()


async def test_echo_round_trip_through_a_real_shell(tmp_path):
    c = Collector()
    proc = c.spawn(PLAIN_BASH, cwd=str(tmp_path))
    proc.write(b"echo hi-$((6*7)); pwd\r")
    await c.until(lambda: b"hi-42" in c.data and str(tmp_path).encode() in c.data)
    proc.write(b"exit 3\r")
    await c.until(lambda: c.exit is not None)
    assert c.exit == (3, None)
    proc.close()


async def test_a_stream_is_passed_on_in_large_chunks_and_an_answer_to_input_at_once(monkeypatch):
    # Held output waits for HOLD_BYTES or the end (never for the timer, in this test).
    monkeypatch.setattr(pump, "HOLD_SECONDS", 3600)
    monkeypatch.setattr(pump, "HOLD_MAX_SECONDS", 3600)
    c = Collector()
    c.spawn(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; sleep 0.2; printf tail"])
    await c.until(lambda: c.eof)
    assert bytes(c.data) == b"x" * 300000 + b"tail"
    assert len(c.chunks) >= 2
    assert all(len(chunk) >= pty.HOLD_BYTES for chunk in c.chunks[:-1]), [
        len(chunk) for chunk in c.chunks
    ]
    assert c.chunks[-1].endswith(b"tail")  # the small rest at the end of output
    assert pump.pump().holding == 0

    # Closing the terminal (a worker deleted, or detached at shutdown) passes on what it held.
    held = Collector()
    proc = held.spawn(["sh", "-c", "printf held-output; exec sleep 30"])
    await until(lambda: proc._held_bytes == len(b"held-output"), 10, "the output read", 0.005)
    assert held.data == b""
    proc.close()
    assert held.data == b"held-output" and pump.pump().holding == 0
    await processes.end_tree(proc.pid, 2.0, proc.watcher.done)

    typed = Collector()
    proc = typed.spawn(["cat"])
    proc.write(b"hello-cat\r")
    await typed.until(lambda: typed.data.count(b"hello-cat") == 2)  # the echo, then cat's
    proc.close()


async def test_held_output_goes_on_once_the_stream_is_quiet_or_held_long_enough(monkeypatch):
    # Quiet: a piece followed by silence goes on after HOLD_SECONDS, not at the longest hold.
    monkeypatch.setattr(pump, "HOLD_MAX_SECONDS", 3600)
    monkeypatch.setattr(pump, "RELEASES_PER_SECOND", 1e-6)  # as if very many PTYs held output
    quiet = Collector()
    proc = quiet.spawn(["sh", "-c", "printf piece; exec sleep 30"])
    await quiet.until(lambda: quiet.data == b"piece")
    proc.close()
    await processes.end_tree(proc.pid, 2.0, proc.watcher.done)

    # Held long enough: a stream never quiet for HOLD_SECONDS still goes on, in chunks.
    monkeypatch.setattr(pump, "HOLD_SECONDS", 3600)
    monkeypatch.setattr(pump, "HOLD_MAX_SECONDS", 0.05)
    steady = Collector()
    proc = steady.spawn(["sh", "-c", "while :; do printf x; sleep 0.005; done"])
    await steady.until(lambda: len(steady.chunks) >= 3)
    assert len(steady.chunks) < len(steady.data)  # held, not passed on piece by piece
    proc.close()
    await processes.end_tree(proc.pid, 2.0, proc.watcher.done)
    assert pump.pump().holding == 0


async def test_the_end_of_a_commands_output_is_not_held(monkeypatch, tmp_path):
    # A stream's output is held for an hour here: only the end of its command releases it.
    monkeypatch.setattr(pump, "HOLD_SECONDS", 3600)
    monkeypatch.setattr(pump, "HOLD_MAX_SECONDS", 3600)
    c = Collector()
    proc = c.spawn(PLAIN_BASH, cwd=str(tmp_path))
    # A stream, held; larger than the terminal holds, so it is read while `tr` runs. The last
    # of it may be read after `tr` ended (up to what the terminal held), and goes on with the
    # sentinel.
    size = 16 * pty.TERMINAL_BUFFER
    proc.write(f"head -c {size} /dev/zero | tr '\\0' x; echo __END$((6*7))__\r".encode())
    # (1 MiB through a terminal, 4 KiB a read: with both cores busy, 1 run in ~80 took 5 s)
    await c.until(lambda: b"__END42__" in c.data, timeout=30)
    assert c.data.count(b"x") >= size
    assert any(len(chunk) > pump.ECHO_BYTES for chunk in c.chunks)  # it was held
    # A program that runs no command keeps its terminal: its output is held as before.
    quiet = Collector()
    held = quiet.spawn(["sh", "-c", "printf piece; exec sleep 30"])
    await until(lambda: held._held_bytes == len(b"piece"), 10, "the output read", 0.005)
    assert quiet.data == b""
    for p in (proc, held):
        p.close()
        await processes.end_tree(p.pid, 2.0, p.watcher.done)
    assert pump.pump().holding == 0


async def test_missing_program_is_a_clear_error():
    with pytest.raises(UnavailableError, match="cannot start 'no-such-program-xyz'"):
        Collector().spawn(["no-such-program-xyz"])


@pytest.mark.parametrize(
    "argv, env",
    [
        (["sh", "-c", "exit 0"], {"A": "\ud800"}),
        (["sh", "-c", "exit 0"], {"A\ud800": "x"}),
        (["sh", "-c", "echo \ud800"], {}),
        (["sh", "-c", "echo a\0b"], {}),
    ],
)
async def test_text_exec_cannot_take_is_refused_before_the_fork(argv, env):
    # Before, the forked child raised UnicodeEncodeError (not an OSError) in exec and ran on
    # with a copy of the parent: here, pytest's own run; in a server, its event loop.
    parent = os.getpid()
    with pytest.raises(UnavailableError, match="cannot start 'sh'"):
        Collector().spawn(argv, env={**os.environ, **env})
    assert os.getpid() == parent


async def test_input_queue_is_bounded_when_the_program_does_not_read():
    c = Collector()
    proc = c.spawn(["sleep", "30"], max_input_queue=64 * 1024)
    with pytest.raises(TooLargeError, match="not reading its input"):
        for _ in range(100):
            proc.write(b"x" * 4096)
    assert proc.queued_input <= 64 * 1024
    await processes.end_tree(proc.pid, 2.0, proc.watcher.done)
    await c.until(lambda: c.exit is not None)
    proc.close()


async def test_ctrl_c_interrupts_sleep_even_when_the_server_ignores_sigint(tmp_path):
    # A server started in the background inherits SIGINT ignored. Run the PTY from such a
    # process and check that Ctrl-C still reaches `sleep` in the worker.
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from mas_jupyter.core.runtimes.pty import PtyProcess

        async def main():
            out = bytearray(); done = asyncio.Event(); result = {}
            def exited(code, sig):
                result["exit"] = (code, sig); done.set()
            proc = PtyProcess(["bash", "--norc", "--noprofile", "-c", "sleep 30; echo slept"],
                              os.getcwd(), dict(os.environ), 80, 24, out.extend, lambda: None,
                              exited)
            proc.spawn()
            await asyncio.sleep(0.3)  # let bash start sleep (no event exists for that)
            t0 = time.monotonic()
            proc.write(b"\\x03")
            await asyncio.wait_for(done.wait(), 10)
            print("EXIT", result["exit"], round(time.monotonic() - t0, 2), bytes(out))
        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert "EXIT" in result.stdout, result.stderr
    assert "slept" not in result.stdout
    assert f"(None, {int(signal.SIGINT)})" in result.stdout or "(130, None)" in result.stdout


async def test_stop_escalates_and_ends_background_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    # The worker ignores SIGHUP and SIGTERM and leaves a background child that does too.
    code = textwrap.dedent(
        f"""
        import os, signal, subprocess, sys, time
        for s in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal,time\\nfor s in (signal.SIGHUP, signal.SIGTERM): "
            "signal.signal(s, signal.SIG_IGN)\\ntime.sleep(300)"], start_new_session=False)
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print("ready", flush=True)
        time.sleep(300)
        """
    )
    c = Collector()
    proc = c.spawn([sys.executable, "-c", code])
    await c.until(lambda: b"ready" in c.data)
    child = int(pidfile.read_text())
    assert processes.is_alive(child)
    assert set(processes.session_members(proc.pid)) >= {proc.pid, child}
    sig = await processes.end_tree(proc.pid, 0.3, proc.watcher.done)
    assert sig == signal.SIGKILL
    await c.until(lambda: c.exit is not None)
    assert c.exit == (None, signal.SIGKILL)
    assert processes.session_members(proc.pid) == []
    assert not processes.is_alive(child)
    proc.close()


async def test_a_process_that_exits_on_sighup_is_gone_without_a_fixed_wait():
    c = Collector()
    proc = c.spawn(["sleep", "30"])
    t0 = time.monotonic()
    sig = await processes.end_tree(proc.pid, 5.0, proc.watcher.done)
    elapsed = time.monotonic() - t0
    assert sig == signal.SIGHUP
    assert elapsed < 5.0  # did not sit out the timeout: the exit event ended the wait
    await c.until(lambda: c.exit is not None)
    proc.close()


async def test_invalid_utf8_and_binary_output_do_not_break_reading():
    c = Collector()
    proc = c.spawn(
        [
            sys.executable,
            "-c",
            "import os; os.write(1, b'\\xff\\xfe\\x00bin\\xc3'); os.write(1, b'\\xa9 ok\\n')",
        ]
    )
    await c.until(lambda: c.exit is not None and c.eof)
    assert b"bin" in c.data and b"ok" in c.data
    proc.close()


def test_start_time_identifies_a_process():
    assert processes.start_time(os.getpid()) == processes.start_time(os.getpid())
    assert processes.is_alive(os.getpid(), processes.start_time(os.getpid()))
    assert not processes.is_alive(os.getpid(), (processes.start_time(os.getpid()) or 0) + 1)
    assert processes.start_time(2**22 + 12345) is None


def test_gits_at_finds_the_git_processes_working_on_a_folder(tmp_path):
    """What a killed server's `git worktree add` leaves running: git in the folder, or git
    naming it. Other programs there, and git elsewhere, are not named."""
    inside, elsewhere = tmp_path / "ws", tmp_path / "other"
    (inside / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    subprocess.run(["git", "init", "-q", str(inside)], check=True)
    subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
    batch = ["git", "cat-file", "--batch"]  # waits on its input
    started = [
        subprocess.Popen(batch, cwd=inside / "sub", stdin=subprocess.PIPE),
        subprocess.Popen(batch, cwd=elsewhere, stdin=subprocess.PIPE),
        subprocess.Popen(["sleep", "60"], cwd=inside),
    ]
    try:
        found = processes.gits_at(str(inside))
        assert started[0].pid in found
        assert started[1].pid not in found and started[2].pid not in found
    finally:
        for proc in started:
            proc.kill()
            proc.wait(timeout=10)
