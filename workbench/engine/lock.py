"""One process per run directory: an exclusive lock beside the directory, released by the kernel if the process dies.

``RunLock(path)`` holds ``<parent>/.<name>.lock`` (``fcntl.flock``) while a benchmark, a meta-training run or any run
directory is written. The file names its holder (pid, host, command, start time), so a second process is refused
with an error that says who holds the directory (or, with ``wait=True``, blocks until it is free). A holder killed
with SIGKILL cannot remove the file, but its lock dies with it: the next process takes the lock and reports the
stale holder it replaced (``RunLock.stale``). The file is removed on release; a process that locked a file just
removed by its holder notices (the inode changed) and locks the new one, so two processes never both hold a path.
POSIX only (fcntl); locks on network file systems are only as good as their flock.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from workbench.config.base import WorkbenchError


class RunLockedError(WorkbenchError, RuntimeError):
    """Another process holds the run directory."""


def lock_path(target: str | Path) -> Path:
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


def describe_holder(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {since} ({info.get('command', '?')})"


class RunLock:
    """Exclusive lock on run directory ``target``; a context manager. ``wait``: block until the holder releases it
    (``poll`` seconds between tries) instead of raising :class:`RunLockedError`."""

    def __init__(self, target: str | Path, wait: bool = False, poll: float = 0.5):
        self.target, self.path, self.wait, self.poll = Path(target), lock_path(target), wait, poll
        self.stale: dict | None = None  # the holder recorded by a process that died holding the lock
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def _holder(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536).decode("utf-8", "replace").strip()
        try:
            return json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return {"pid": None, "host": None, "command": raw[:200]}

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        announced = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                if not self.wait:
                    raise RunLockedError(f"{self.target} is in use by another process: {describe_holder(holder)}; "
                                         f"wait for it to finish (or pass --wait), or choose another --out") from None
                if not announced:
                    print(f"waiting for {self.target}: held by {describe_holder(holder)}", file=sys.stderr)
                    announced = True
                time.sleep(self.poll)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our lock: lock the current one
                os.close(fd)
                continue
            break
        previous = self._holder(fd)
        if previous:  # a holder that released cleanly leaves no file; this one died holding it
            self.stale = previous
            print(f"note: {self.target} was locked by {describe_holder(previous)}, which ended without releasing it "
                  f"(killed?); taking it over", file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: a waiter re-checks the inode after locking
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
