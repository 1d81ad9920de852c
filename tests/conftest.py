"""Fixtures shared by every layer's tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import time

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_core"]

# The shell the tests run as a worker: no rc files (the machine's ~/.bashrc is slow).
PLAIN_BASH = ["bash", "--norc", "--noprofile", "-i"]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def run_git(*args: str, cwd: str) -> str:
    """Run git in a test repository and return its output."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def make_repo(tmp_path):
    """Make a git repository with one commit under the test's root folder."""

    def make(name: str = "repo") -> str:
        path = tmp_path / "root" / name
        path.mkdir(parents=True)
        run_git("init", "-q", "-b", "main", cwd=str(path))
        (path / "data.csv").write_text("a,b\n1,2\n")
        run_git("add", "data.csv", cwd=str(path))
        run_git("commit", "-q", "-m", "first", cwd=str(path))
        return str(path)

    return make


@pytest.fixture
def held_stops(monkeypatch):
    """Hold every worker's stop (`LiveWorker.stop`) before it ends a process: `entered` is set
    once one is held; set `release` to let them go on (the test's end does)."""
    from mas_jupyter.core.worker import LiveWorker

    entered, release = asyncio.Event(), asyncio.Event()
    stop = LiveWorker.stop

    async def held_stop(self, *args, **kwargs):
        entered.set()
        await release.wait()
        return await stop(self, *args, **kwargs)

    monkeypatch.setattr(LiveWorker, "stop", held_stop)
    yield entered, release
    release.set()


async def until(predicate, timeout: float = 20.0, what: str = "condition", every: float = 0.02):
    """Poll a (possibly async) predicate until it holds, every `every` s; bounded by timeout.

    `every=0` yields to the loop only once per check (for states that last one loop turn).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(every)
