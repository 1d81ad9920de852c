"""One engine per sessions root: an exclusive lock, held from start to shutdown.

Two engines on one sessions root (two Jupyter servers, or a server and a notebook's in-process
engine) would each take the other's workers for orphans at start-up and end them, and both
would write the same rows. The first engine to start holds an exclusive `flock` on a file in
the root's state folder (and on one beside the database when `db_path` puts it elsewhere); a
second is refused before it reads or writes anything. The kernel drops the lock when the
holder exits, however it exits (`kill -9` included): there is no stale lock to clean up.

The holder also marks the file now and then (`beat`, its modification time): a holder that
was killed leaves its pid in the file, and the next one reads when it was last known alive
(`holder_died_at`), so the time the server was down is not counted as sessions' active time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from .store import StoreError


class RootLock:
    """An exclusive lock on one file; the file says which process holds it."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what  # what the lock guards, for the message ("the sessions root /x")
        self._fd: int | None = None
        # When the previous holder was last known alive, if it ended without releasing the
        # lock (killed); None after a clean release.
        self.holder_died_at: float | None = None

    def acquire(self) -> None:
        """Take the lock, or raise a StoreError naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise StoreError(
                f"{self.what} is in use by another process{by}: another Jupyter server, or a "
                "notebook's in-process engine, uses it. Stop that one, or set "
                "c.MASManager.sessions_root to another folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if os.pread(fd, 32, 0).strip():  # a pid left behind: its holder did not release
            self.holder_died_at = os.fstat(fd).st_mtime
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def beat(self) -> None:
        """Mark the holder alive now (the file's modification time)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.utime(self._fd)

    def release(self) -> None:
        """Let another engine start here (closing the file drops the lock)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
