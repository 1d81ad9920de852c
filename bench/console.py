"""Consoles through a real server (issues 4 and 7): mas channels vs Jupyter terminals.

One `jupyter server` runs both mas_jupyter and jupyter_server_terminals; every scenario drives
both with the same client, and where it makes sense a plain PTY read loop with no server gives
the ceiling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import pexpect
import psutil

from .client import Api, Console, LatencyProbe, echo_rtts, raw_websocket, vanish
from .report import Report, percentile
from .server import PLAIN_BASH, JupyterServer

LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SENTINEL = "__DONE42__"
KINDS = ("mas", "jupyter")
LABEL = {"mas": "mas channel", "jupyter": "Jupyter terminal"}


def flood_command(nbytes: int, wait: float = 0.0) -> str:
    """Print nbytes of text lines, then a sentinel that the command's own echo does not show."""
    pause = f"sleep {wait}; " if wait else ""
    return f'{pause}yes "{LINE}" | head -c {nbytes}; echo __DONE$((6*7))__\r'


class Terminals:
    """Opens and deletes consoles of either kind on one server."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.count = 0

    async def open(self, kind: str) -> tuple[str, Console, str]:
        """(handle, console at its prompt, websocket path)."""
        self.count += 1
        if kind == "mas":
            name = f"w{self.count}"
            worker, console = await self.api.mas_shell("bench", name)
            return name, console, f"api/mas/{worker['channel']}"
        name, console = await self.api.jupyter_terminal()
        return name, console, f"terminals/websocket/{name}"

    async def create(self, kind: str) -> tuple[str, str]:
        """A new terminal without a console: (handle, websocket path)."""
        self.count += 1
        if kind == "mas":
            name = f"w{self.count}"
            worker = await self.api.ok(
                "POST", "sessions/bench/workers", {"name": name, "kind": "terminal"}
            )
            return name, f"api/mas/{worker['channel']}"
        code, data = await self.api.call("POST", "/api/terminals", {})
        assert code == 200, data
        return data["name"], f"terminals/websocket/{data['name']}"

    async def delete(self, kind: str, handle: str) -> float:
        """Delete a terminal; returns the seconds the DELETE took."""
        t0 = time.perf_counter()
        if kind == "mas":
            code, data = await self.api.mas("DELETE", f"sessions/bench/workers/{handle}")
        else:
            code, data = await self.api.call("DELETE", f"/api/terminals/{handle}")
        elapsed = time.perf_counter() - t0
        assert code == 204, (code, data)
        return elapsed


class _Finder:
    """Finds the sentinel, then the prompt after it, in a byte stream fed piece by piece."""

    def __init__(self) -> None:
        self.marker = SENTINEL.encode()
        self.tail = b""

    def feed(self, data: bytes) -> bool:
        window = self.tail + data
        at = window.find(self.marker)
        if at >= 0 and self.marker != b"$ ":
            self.marker, window = b"$ ", window[at + len(self.marker) :]
            at = window.find(self.marker)
        if at >= 0 and self.marker == b"$ ":
            return True
        self.tail = window[-len(self.marker) :]
        return False


class PtyShells:
    """The ceiling: plain shells in PTYs read by this process, with no server in between."""

    def __init__(self, n: int) -> None:
        env = {**os.environ, "PS1": "$ "}
        self.children = [
            pexpect.spawn(PLAIN_BASH[0], PLAIN_BASH[1:], env=env, encoding=None) for _ in range(n)
        ]
        for child in self.children:
            child.expect_exact(b"$ ", timeout=30)

    def read_one(self, command: str) -> tuple[float, int]:
        """A blocking read loop on one PTY until the sentinel and the next prompt."""
        child = self.children[0]
        fd = child.child_fd
        os.set_blocking(fd, True)
        finder = _Finder()
        got = 0
        t0 = time.perf_counter()
        os.write(fd, command.encode())
        while True:
            data = os.read(fd, 65536)
            got += len(data)
            if finder.feed(data):
                break
        return time.perf_counter() - t0, got

    async def read_all(self, command: str) -> tuple[float, int]:
        """One asyncio reader of every PTY until each shows the sentinel: (seconds, bytes)."""
        loop = asyncio.get_running_loop()
        pending = len(self.children)
        done = loop.create_future()
        finders = {}
        total = 0

        def readable(fd: int) -> None:
            nonlocal pending, total
            for _ in range(4):
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                total += len(data)
                if finders[fd].feed(data):
                    loop.remove_reader(fd)
                    pending -= 1
                    if not pending and not done.done():
                        done.set_result(None)
                    return

        for child in self.children:
            os.set_blocking(child.child_fd, False)
            finders[child.child_fd] = _Finder()
            loop.add_reader(child.child_fd, readable, child.child_fd)
        t0 = time.perf_counter()
        for child in self.children:
            os.write(child.child_fd, command.encode())
        await asyncio.wait_for(done, 600)
        elapsed = time.perf_counter() - t0
        for child in self.children:
            os.set_blocking(child.child_fd, True)
        return elapsed, total

    def close(self) -> None:
        for child in self.children:
            child.close(force=True)


async def flood_all(consoles: list[Console], command: str) -> tuple[float, int]:
    """Type the command into every console; (seconds until all show the sentinel, chars)."""
    before = sum(c.received for c in consoles)
    t0 = time.perf_counter()
    for c in consoles:
        c.send(command)
    await asyncio.gather(*(c.read_until(SENTINEL, 600) for c in consoles))
    elapsed = time.perf_counter() - t0
    for c in consoles:
        await c.read_until("$ ", 30)
    return elapsed, sum(c.received for c in consoles) - before


async def throughput(report: Report, server: JupyterServer, terms: Terminals, quick: bool):
    nbytes = (5 if quick else 50) * 1_000_000
    rates: dict[str, list[float]] = {"mas": [], "jupyter": [], "pty": []}
    cpu: dict[str, list[float]] = {"mas": [], "jupyter": []}
    consoles = {k: await terms.open(k) for k in KINDS}
    shells = PtyShells(1)
    for _ in range(3):
        for kind in KINDS:
            c0 = server.cpu()
            elapsed, got = await flood_all([consoles[kind][1]], flood_command(nbytes))
            rates[kind].append(got / 1e6 / elapsed)
            cpu[kind].append((server.cpu() - c0) / (got / 1e6))
        elapsed, got = await asyncio.to_thread(shells.read_one, flood_command(nbytes))
        rates["pty"].append(got / 1e6 / elapsed)
    shells.close()
    for kind in KINDS:
        consoles[kind][1].close()
        await terms.delete(kind, consoles[kind][0])
    note = f"{nbytes / 1e6:.0f} MB until a sentinel"
    report.fig(
        "console WS throughput: mas", "MB/s", rates["mas"], ref_name="Jupyter terminal",
        ref_runs=rates["jupyter"], target=">= 1.2x", note=note, higher_is_better=True,
    )  # fmt: skip
    report.fig(
        "console WS throughput: mas vs PTY ceiling", "MB/s", rates["mas"],
        ref_name="plain PTY read loop", ref_runs=rates["pty"], higher_is_better=True,
    )  # fmt: skip
    report.fig(
        "console WS throughput: Jupyter terminal vs PTY ceiling", "MB/s", rates["jupyter"],
        ref_name="plain PTY read loop", ref_runs=rates["pty"], higher_is_better=True,
    )  # fmt: skip
    report.fig(
        "server CPU per MB (one console)", "cpu-s/MB", cpu["mas"],
        ref_name="Jupyter terminal", ref_runs=cpu["jupyter"],
    )  # fmt: skip


class Load:
    """n terminals of one kind streaming without end, read by a separate process."""

    def __init__(self, server: JupyterServer, terms: Terminals, kind: str) -> None:
        self.server, self.terms, self.kind = server, terms, kind
        self.handles: list[str] = []
        self.proc: subprocess.Popen | None = None

    async def start(self, n: int) -> None:
        paths = []
        for _ in range(n):
            handle, path = await self.terms.create(self.kind)
            self.handles.append(handle)
            paths.append(path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.load", self.server.ws_url, self.server.token, *paths],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 120)
        assert line.strip() == "ready", line

    async def received(self) -> int:
        """Characters of the streams' output the reader has received so far."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        word, count = line.split()
        assert word == "received", line
        return int(count)

    async def stop(self) -> None:
        # End the streams first, as a user would with Ctrl-C. Deleting a Jupyter terminal
        # signals only its shell: a `yes` running in it survives (in its own process group),
        # keeps the terminal listed and its PTY open, and would load every later scenario.
        _kill_descendants(self.server, "yes")
        for handle in self.handles:
            await self.terms.delete(self.kind, handle)
        self.handles.clear()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc.stdout.close()
            self.proc = None


async def _echo_run(
    api: Api, console: Console, load: Load | None, count: int, quick: bool
) -> tuple[int, float, float, float, float | None]:
    """One run of keystrokes: (keystrokes, p50 ms, p99 ms, /api/status p99 ms meanwhile,
    the load's rate in MB/s or None)."""
    got0 = await load.received() if load else 0
    t0 = time.perf_counter()
    probe = LatencyProbe(lambda: api.timed_get("/api/status")).start()
    rtts = await echo_rtts(console, count, max_seconds=15 if quick else 40)
    samples = await probe.stop()
    rate = None
    if load:
        rate = (await load.received() - got0) / 1e6 / (time.perf_counter() - t0)
    return (
        len(rtts), percentile(rtts, 50) * 1e3, percentile(rtts, 99) * 1e3,
        percentile(samples, 99) * 1e3, rate,
    )  # fmt: skip


async def echo(report: Report, server: JupyterServer, terms: Terminals, quick: bool):
    count = 100 if quick else 500
    loads = (0, 10) if quick else (0, 10, 50)
    api = terms.api
    for load_n in loads:
        runs: dict[str, list[tuple]] = {"mas": [], "jupyter": []}  # of _echo_run
        if not load_n:
            # Idle, the two answer in about half a millisecond and the machine's own speed
            # moves more than that from one minute to the next: the runs take turns, as in
            # fan-out, so both kinds meet the same machine.
            opened = {kind: await terms.open(kind) for kind in KINDS}
            for _ in range(3 if quick else 5):
                for kind in KINDS:
                    runs[kind].append(await _echo_run(api, opened[kind][1], None, count, quick))
            for kind, (handle, console, _) in opened.items():
                console.close()
                await terms.delete(kind, handle)
        else:
            # Loaded, each kind streams on its own: the other kind's streams are stopped.
            for kind in KINDS:
                handle, console, _ = await terms.open(kind)
                load = Load(server, terms, kind)
                await load.start(load_n)
                for _ in range(3):
                    runs[kind].append(await _echo_run(api, console, load, count, quick))
                await load.stop()
                console.close()
                await terms.delete(kind, handle)
        samples_taken, p50, p99, status99, streams = (
            {kind: [run[i] for run in runs[kind]] for kind in KINDS} for i in range(5)
        )
        what = "idle" if not load_n else f"{load_n} streaming"
        target50 = "<= 1x" if not load_n else ""
        target99 = "<= 1x" if not load_n else "< 10 ms"
        report.fig(
            f"keystroke echo p50 ({what})", "ms", p50["mas"], ref_name="Jupyter terminal",
            ref_runs=p50["jupyter"], target=target50,
            note=f"keystrokes per run: mas {samples_taken['mas']}, "
            f"Jupyter {samples_taken['jupyter']} (of {count}; each run capped in time)",
        )  # fmt: skip
        report.fig(
            f"keystroke echo p99 ({what})", "ms", p99["mas"], ref_name="Jupyter terminal",
            ref_runs=p99["jupyter"], target=target99,
        )  # fmt: skip
        report.fig(
            f"GET /api/status p99 meanwhile ({what})", "ms", status99["mas"],
            ref_name="same, Jupyter terminals streaming", ref_runs=status99["jupyter"],
        )  # fmt: skip
        if load_n:
            report.fig(
                f"the {load_n} streams' total rate meanwhile", "MB/s", streams["mas"],
                ref_name="Jupyter terminals", ref_runs=streams["jupyter"],
                higher_is_better=True, note="characters received by the streams' reader",
            )  # fmt: skip


async def fanout(report: Report, fresh, quick: bool):
    """Fan-out on one fresh server per kind, so memory is measured from a clean start."""
    total = (4 if quick else 40) * 1_000_000
    levels = (1, 10) if quick else (1, 10, 50, 100)
    served = {kind: await fresh(f"fanout-{kind}") for kind in KINDS}
    base = {kind: served[kind][0].rss() for kind in KINDS}
    alive = dict(base)
    try:
        for n in levels:
            command = flood_command(total // n)
            rates: dict[str, list[float]] = {"mas": [], "jupyter": [], "pty": []}
            cpu: dict[str, list[float]] = {"mas": [], "jupyter": []}
            opened = {kind: [await served[kind][1].open(kind) for _ in range(n)] for kind in KINDS}
            shells = PtyShells(n)
            # Each round floods through both servers and the reference reader in turn, so the
            # three meet the same machine: its speed here changes within a minute. Five rounds:
            # this is the figure that varies most from run to run.
            for _ in range(5):
                for kind in KINDS:
                    server = served[kind][0]
                    c0 = server.cpu()
                    elapsed, got = await flood_all([c for _, c, _ in opened[kind]], command)
                    rates[kind].append(got / 1e6 / elapsed)
                    cpu[kind].append((server.cpu() - c0) / (got / 1e6))
                    alive[kind] = max(alive[kind], server.rss())
                elapsed, got = await shells.read_all(command)
                rates["pty"].append(got / 1e6 / elapsed)
            shells.close()
            for kind in KINDS:
                for handle, console, _ in opened[kind]:
                    console.close()
                    await served[kind][1].delete(kind, handle)
            note = f"{total / n / 1e6:g} MB per worker"
            report.fig(
                f"fan-out {n}: aggregate, mas", "MB/s", rates["mas"],
                ref_name="one asyncio reader of the PTYs", ref_runs=rates["pty"],
                target=">= 0.7x" if n in (10, 50) else "", note=note, higher_is_better=True,
            )  # fmt: skip
            report.fig(
                f"fan-out {n}: aggregate, Jupyter terminals", "MB/s", rates["jupyter"],
                ref_name="one asyncio reader of the PTYs", ref_runs=rates["pty"],
                higher_is_better=True,
            )  # fmt: skip
            report.fig(
                f"fan-out {n}: server CPU per MB, mas", "cpu-s/MB", cpu["mas"],
                ref_name="Jupyter terminals", ref_runs=cpu["jupyter"],
            )  # fmt: skip
        await asyncio.sleep(1.0)
        after = {kind: served[kind][0].rss() for kind in KINDS}
        report.fig(
            "fan-out 1..100: server RSS growth while alive (peak)", "MiB",
            [(alive["mas"] - base["mas"]) / 2**20], ref_name="Jupyter terminals",
            ref_runs=[(alive["jupyter"] - base["jupyter"]) / 2**20],
            note="each kind on its own fresh server, from its idle RSS",
        )  # fmt: skip
        report.fig(
            "fan-out 1..100: server RSS growth after deleting all", "MiB",
            [(after["mas"] - base["mas"]) / 2**20], ref_name="Jupyter terminals",
            ref_runs=[(after["jupyter"] - base["jupyter"]) / 2**20],
        )  # fmt: skip
    finally:
        for server, terms in served.values():
            terms.api.close()
            server.close()


def _kill_descendants(server: JupyterServer, name: str) -> None:
    """SIGKILL every descendant of the server called `name`."""
    try:
        kids = psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:
        return
    for kid in kids:
        try:
            if kid.name() == name:
                kid.kill()
        except psutil.Error:
            pass


def _flood_running(server: JupyterServer) -> bool:
    try:
        kids = psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:
        return False
    names = set()
    for kid in kids:
        try:
            names.add(kid.name())
        except psutil.Error:
            pass
    return "head" in names


async def slow_consumer(report: Report, fresh, quick: bool):
    """A client that never reads, on one fresh server per kind (memory from a clean start)."""
    nbytes = (20 if quick else 200) * 1_000_000
    growth: dict[str, list[float]] = {"mas": [], "jupyter": []}
    p99: dict[str, list[float]] = {"mas": [], "jupyter": []}
    for kind in KINDS:
        server, terms = await fresh(f"slow-{kind}")
        echo_handle, echo_console, _ = await terms.open(kind)
        # Peak memory over the fresh server's idle RSS: what it holds (and keeps) at worst.
        base = server.rss()
        for _ in range(3):
            handle, typist, path = await terms.open(kind)
            stalled = raw_websocket(server, path)
            peak = base
            typist.send(flood_command(nbytes, wait=0.5))
            await typist.read_until("sleep", 10)
            typist.close()
            deadline = time.monotonic() + 10
            while not _flood_running(server) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            rtts: list[float] = []
            peak_box = [peak]

            async def sample(box=peak_box, server=server):
                while True:
                    box[0] = max(box[0], server.rss())
                    await asyncio.sleep(0.02)

            sampler = asyncio.ensure_future(sample())
            deadline = time.monotonic() + (60 if quick else 180)
            while _flood_running(server) and time.monotonic() < deadline:
                rtts += await echo_rtts(echo_console, 20)
            sampler.cancel()
            peak = max(peak_box[0], server.rss())
            growth[kind].append((peak - base) / 2**20)
            p99[kind].append(percentile(rtts, 99) * 1e3 if rtts else float("nan"))
            vanish(stalled)
            await terms.delete(kind, handle)
        echo_console.close()
        await terms.delete(kind, echo_handle)
        terms.api.close()
        server.close()
    note = (
        f"{nbytes / 1e6:.0f} MB printed while one client does not read; "
        "peak over the fresh server's idle RSS"
    )
    report.fig(
        "slow consumer: peak server RSS growth", "MiB", growth["mas"],
        ref_name="Jupyter terminal", ref_runs=growth["jupyter"], target="< 20 MiB", note=note,
    )  # fmt: skip
    report.fig(
        "slow consumer: other client's echo p99", "ms", p99["mas"],
        ref_name="Jupyter terminal", ref_runs=p99["jupyter"], target="< 20 ms",
    )  # fmt: skip


async def delete_latency(report: Report, server: JupyterServer, terms: Terminals, quick: bool):
    n = 5 if quick else 15
    times: dict[str, list[float]] = {"mas": [], "jupyter": []}
    for kind in KINDS:
        for _ in range(n):
            handle, console, _ = await terms.open(kind)
            console.close()
            times[kind].append(await terms.delete(kind, handle) * 1e3)
    report.fig(
        "delete a worker (exits on SIGHUP)", "ms", times["mas"],
        ref_name="DELETE /api/terminals/{name}", ref_runs=times["jupyter"], target="< 20 ms",
        note=f"{n} deletes of an idle bash each",
    )  # fmt: skip


async def run(report: Report, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        config = {"MASManager": {"max_workers": 512, "max_workers_per_session": 512}}

        async def fresh(name: str) -> tuple[JupyterServer, Terminals]:
            """A newly started server with an empty session 'bench', and its client."""
            server = JupyterServer(
                os.path.join(tmp, name, "root"), config, base=os.path.join(tmp, name, "srv")
            )
            server.start()
            api = Api(server)
            await api.ok("POST", "sessions", {"name": "bench"})
            return server, Terminals(api)

        server, terms = await fresh("main")
        try:
            report.note(f"console server idle RSS {server.rss() / 2**20:.0f} MiB")
            for step in (throughput, echo, delete_latency):
                t0 = time.perf_counter()
                await step(report, server, terms, quick)
                report.note(f"{step.__name__} took {time.perf_counter() - t0:.0f} s")
        finally:
            terms.api.close()
            server.close()
        for step in (fanout, slow_consumer):
            t0 = time.perf_counter()
            await step(report, fresh, quick)
            report.note(f"{step.__name__} took {time.perf_counter() - t0:.0f} s")


__all__ = ["run", "statistics"]
