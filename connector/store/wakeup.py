"""Wake-ups: tell the worker (or delivery) at once that the store has new work for it.

Whoever commits work for a background process sends it one datagram on an
abstract unix socket named after the data directory and the process
(`worker`: a spool entry; `deliver`: outbox rows). Each filing process
(`[worker] processes`) has a socket of its own (`worker`, `worker-2`, ...) and
a wake-up for the worker goes to all of them: each looks for its share of the
spool. The process waits on its
socket between two looks at the store, so new mail is picked up at once and
an idle process looks at the store only every IDLE_POLL seconds (which also
covers a lost datagram, or work a writer did not announce). A datagram says
only "look now": it carries nothing, and anybody sending one costs one look.

Abstract sockets (Linux) need no file, so nothing is left behind and the
data directory's permissions do not matter; they belong to the network
namespace, which the daemon, its children and `connector inject` share.
"""

import functools
import hashlib
import socket
import threading
from pathlib import Path

from connector.settings.schema import MAX_PROCESSES
from connector.store.models import database

WORKER, DELIVER = "worker", "deliver"
IDLE_POLL = 1.0  # seconds: the longest an idle process waits before looking at the store anyway


def worker_role(index):
    """The wake-up role of filing process `index` (1-based): `worker`, then `worker-2`, ..."""
    return WORKER if index == 1 else f"{WORKER}-{index}"


WORKER_ROLES = tuple(worker_role(index) for index in range(1, MAX_PROCESSES + 1))


@functools.lru_cache(maxsize=64)
def addresses(data_dir, role):
    """Where a wake-up for `role` goes: every filing process's socket for WORKER."""
    return tuple(address(data_dir, name) for name in (WORKER_ROLES if role == WORKER else (role,)))


@functools.lru_cache(maxsize=64)
def address(data_dir, role):
    """The socket name (cached: the filing worker sends a wake-up per message filed)."""
    key = data_dir if isinstance(data_dir, str) and "://" in data_dir else str(Path(data_dir).resolve())
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return f"\0connector-{digest}-{role}"


def _data_dir():
    """What names the store: the SQLite file's folder, or the PostgreSQL URL with this node's
    name (its processes share it; two nodes on one host keep apart; a wake-up never crosses
    machines, the others poll)."""
    if _postgres():
        return f"{database.database}#{getattr(database.obj, 'node', '')}"
    return _folder(database.database)


@functools.lru_cache(maxsize=64)
def _folder(path):
    """The folder of the database file (cached: asked once per message filed)."""
    return Path(path).parent


def _postgres():
    return getattr(database.obj, "backend", "sqlite") == "postgresql"


class _Sender:
    """One unbound datagram socket per process for every wake-up it sends."""

    sock = None
    lock = threading.Lock()

    @classmethod
    def send(cls, names):
        with cls.lock:
            if cls.sock is None:
                cls.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                cls.sock.setblocking(False)
            for name in names:  # a name nobody binds is refused at once (a few microseconds)
                try:
                    cls.sock.sendto(b"!", name)
                except OSError:
                    pass


def notify(role, data_dir=None):
    """Send `role` a wake-up; never fails, never blocks (nobody listening: nothing happens)."""
    try:
        _Sender.send(addresses(data_dir or _data_dir(), role))
    except OSError:
        pass


class Waker:
    """The receiving end, bound by the process that does `role`'s work."""

    def __init__(self, data_dir, role):
        """`data_dir` names an SQLite store (its folder); a PostgreSQL store bound in this
        process is named by its URL, as the senders, who know only the store, name it."""
        self.name = address(_data_dir() if _postgres() else data_dir, role)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(self.name)
        except OSError:  # another process of this role runs: it gets the wake-ups, we poll
            self.sock.close()
            self.sock = None

    def wait(self, timeout=IDLE_POLL):
        """Until a wake-up arrives or `timeout` passes; swallows every wake-up waiting."""
        if self.sock is None:
            return False
        self.sock.settimeout(timeout)
        try:
            self.sock.recv(16)
        except (TimeoutError, OSError):
            return False
        self.sock.setblocking(False)
        try:
            while self.sock.recv(16):
                pass
        except OSError:
            pass
        return True

    def poke(self):
        """Wake our own wait (from a signal handler: stop or reload now)."""
        if self.sock is not None:
            try:
                self.sock.sendto(b"!", self.name)
            except OSError:
                pass

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
