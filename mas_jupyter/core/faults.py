"""Fault points: places where a test can make the process die as if killed.

Set MAS_FAULT_POINT to a point's name (e.g. `session:row-inserted`) and the process sends
itself SIGKILL when it gets there. Used by the crash-recovery tests; costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "session:row-inserted",
    "session:workspace-created",
    "session:ready",
    "session:deleting",
    "worker:row-inserted",
    "worker:process-started",
    "worker:spawned",
)


def point(name: str) -> None:
    """Die here with SIGKILL if the environment asks for it."""
    if os.environ.get("MAS_FAULT_POINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
