"""One daemon per data directory, and per SQLite store: `connector run` holds an flock on
DAEMON_LOCK in each (released by the kernel when the process dies, kill -9 included), so a
second daemon started by mistake (a copied ini with another port) refuses to start in one
line instead of overwriting the first one's state file and sharing its outbox.

Several nodes on one PostgreSQL database are the designed case: each has its own data
directory, and the claims of `connector.store.claims` share the work.
"""

import fcntl
import os
from pathlib import Path
from typing import NamedTuple

from connector.settings import ConfigError
from connector.settings.values import PostgresURL

DAEMON_LOCK = "daemon.lock"


class Run(NamedTuple):
    """A daemon's run, as its lock file records it: its pid and its random id."""
    pid: int
    instance: str


class DaemonRunning(Exception):
    def __init__(self, path, holder):
        self.path, self.holder = path, holder
        super().__init__(f"another connector daemon{f' (pid {holder})' if holder else ''} runs with "
                         f"{path.parent} ({path.name} is locked); stop it first, or give this one its own "
                         "[connector] data_dir and database")


def lock_paths(settings):
    """The lock files: in the data directory, and beside an SQLite database."""
    paths = [Path(settings.data_dir) / DAEMON_LOCK]
    if not isinstance(settings.database, PostgresURL):
        paths.append(Path(settings.database).parent / DAEMON_LOCK)
    return list(dict.fromkeys(path.resolve() for path in paths))  # one folder by two spellings: one lock


def hold(settings):
    """Take every lock, before the store is opened (a second daemon must not migrate the store
    under the first); returns (the open descriptors: the locks last while they are open; the
    Run recorded in the data directory's lock, over now, or None). DaemonRunning names the
    holder's pid. `record` writes this run into them once it is sure to run."""
    fds, previous = [], None
    for path in lock_paths(settings):
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            for other in fds:
                os.close(other)
            raise ConfigError(settings.ini_path, "[connector] data_dir / database",
                              f"cannot create {path}: {exc.strerror}",
                              "the folder must be writable by the user the daemon runs as") from None
        if any(os.path.samestat(os.fstat(fd), os.fstat(held)) for held in fds):
            os.close(fd)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (os.pread(fd, 64, 0).decode("ascii", "replace").split() or [""])[0]
            for other in (fd, *fds):
                os.close(other)
            raise DaemonRunning(path, holder) from None
        if not fds:  # the data directory's
            before = os.pread(fd, 64, 0).decode("ascii", "replace").split()
            previous = Run(int(before[0]), before[1]) if len(before) > 1 and before[0].isdigit() else None
        fds.append(fd)
    return fds, previous


def record(fds, instance):
    """This run (pid, `instance`) in the held locks: what the next daemon reads as its predecessor
    (a start refused before this keeps the run before it there)."""
    for fd in fds:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {instance}\n".encode("ascii"), 0)
