"""Running git for the engine: no shell, no hooks, no fsmonitor, no prompts, never blocking."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from .errors import UnavailableError

# Options that keep a repository's own configuration from running code in the server.
_SAFE_CONFIG = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "credential.helper=",
    "-c",
    "protocol.ext.allow=never",
]


@dataclass
class GitResult:
    """What a git command printed and how it ended."""

    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        """Whether git exited with 0."""
        return self.code == 0


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment git runs with: never prompts, never opens an editor or pager."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GIT_", "JUPYTER")) and k not in ("SSH_ASKPASS",)
    }
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        GIT_EDITOR="true",
        GIT_PAGER="cat",
        GIT_ASKPASS="true",
        LC_ALL="C",
    )
    env.setdefault("GIT_AUTHOR_NAME", "mas_jupyter")
    env.setdefault("GIT_AUTHOR_EMAIL", "mas_jupyter@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "mas_jupyter")
    env.setdefault("GIT_COMMITTER_EMAIL", "mas_jupyter@localhost")
    if extra:
        env.update(extra)
    return env


async def git(*args: str, cwd: str, env: dict[str, str] | None = None) -> GitResult:
    """Run `git <args>` in cwd without blocking the event loop."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *_SAFE_CONFIG,
            *args,
            cwd=cwd,
            env=git_env(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        if not os.path.isdir(cwd):  # the folder to run in is gone, not git
            return GitResult(128, "", f"the folder {cwd} does not exist")
        raise UnavailableError(
            "git is not installed; install git to use worktree sessions"
        ) from None
    out, err = await proc.communicate()
    return GitResult(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
