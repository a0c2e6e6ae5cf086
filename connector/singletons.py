"""Singletons: work that runs on one node at a time, under a lease (issue 13).

Where it stands: the daemon's scanner service (`connector.scanners.service`)
holds a lease per IMAP scanner, the first filing worker (`connector.worker`)
the deadline timer's and pruning's. A `LeaseKeeper` is one thread per process
that takes, renews and releases that process's leases (`connector.store.leases`,
the database's clock); the work asks `holds(name)` before each step and stops
when it turns false.

With F = `[node] failover_seconds`:

    a lease lasts   2F/3 from its last renewal (the database's clock)
    renewed every   F/6; a node that stands by tries to take it as often
    fence           the holder may work only until F/2 after the start of its last
                    successful renewal (this process's monotonic clock, which runs on
                    while the process is frozen): a renewal that fails (database away,
                    a statement that hangs) stops the work F/6 before the lease can
                    expire, so two nodes never work under one lease on a healthy clock

so a dead holder's work is taken over within 2F/3 + F/6 < F, and at once
after a clean stop (`finish` releases the leases whose work has stopped).
Events: `lease.acquired` (name, node, before), `lease.lost` (name, node,
reason), `lease.released` (name, node); `lease.failed` once per outage.
"""

import os
import threading
import time

from connector.log import get_logger
from connector.store import leases
from connector.store.claims import new_token
from connector.store.models import database

log = get_logger("lease")

LASTS = 2 / 3    # of failover_seconds: how long a lease lasts after a renewal
RENEW = 1 / 6    # of failover_seconds: between two renewals (and two tries to take it)
FENCE = 1 / 2    # of failover_seconds: how long the holder may work after its last renewal began


def _monotonic():
    """Seconds on a clock that also runs while the machine sleeps (and the process is stopped)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _normal_priority():
    """This thread in the normal CPU class: the filing worker runs in the idle one, where a busy
    machine could hold its renewals back past the fence (the work would stop and the lease
    move between nodes). Linux keeps the class per thread; where it cannot change, it stays."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_IDLE:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass


class LeaseKeeper(threading.Thread):
    """Take, renew and release this process's leases; `holds(name)`: whether its work may run.

    `want(names)`: the leases to hold (others are released once `busy(name)` says their
    work has stopped). `on_change()` is called (from this thread) after a lease was
    taken or lost, so the owner starts or stops the work at once."""

    def __init__(self, node, failover, on_change=None, busy=None, clock=_monotonic):
        super().__init__(name="leases", daemon=True)
        self.node, self.pid, self.token = node, os.getpid(), new_token(node)
        self.lasts, self.every, self.fence = failover * LASTS, failover * RENEW, failover * FENCE
        self.on_change = on_change or (lambda: None)
        self.busy = busy or (lambda name: False)
        self.clock = clock
        self.lock = threading.Lock()
        self.wanted = set()
        self.until = {}  # lease name -> the monotonic time its work must stop by
        self.wake = threading.Event()
        self.finishing = threading.Event()
        self.failing = False

    def want(self, names):
        with self.lock:
            self.wanted = set(names)
        self.wake.set()

    def holds(self, name):
        until = self.until.get(name)
        return until is not None and self.clock() < until

    def finish(self, timeout=5.0):
        """Stop; release the leases whose work has stopped (the others expire by themselves)."""
        self.finishing.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self):
        _normal_priority()
        try:
            while not self.finishing.is_set():
                try:
                    self.tick()
                except Exception:  # a bug must not end the thread: the fences stop the work meanwhile
                    log.exception("lease.error", node=self.node)
                self.wake.wait(self.every)
                self.wake.clear()
            for name in sorted(self.until):
                if not self.busy(name):
                    self._release(name)
        finally:
            database.close()

    def tick(self):
        with self.lock:
            wanted = set(self.wanted)
        changed = False
        for name in sorted(self.until):
            if name not in wanted:
                if not self.busy(name):
                    self._release(name)
                continue
            changed |= self._renew(name)
        for name in sorted(wanted - set(self.until)):
            changed |= self._acquire(name)
        if changed:
            self.on_change()

    def _failed(self, what, name, exc):
        if not self.failing:  # once per outage, not every F/6
            log.warning("lease.failed", action=what, name=name, node=self.node,
                        error=f"{type(exc).__name__}: {exc}")
        self.failing = True
        database.close()  # a connection the server dropped: a new one next time

    def _renew(self, name):
        """Renew a lease held; True when it was lost."""
        started = self.clock()
        if started >= self.until[name]:
            return self._lose(name, "not renewed in time (database unreachable or too slow)")
        try:
            ours = leases.renew(name, self.token, self.lasts)
        except Exception as exc:
            self._failed("renew", name, exc)
            return False
        self.failing = False
        if not ours:
            return self._lose(name, "taken by another node")
        self.until[name] = started + self.fence
        return False

    def _lose(self, name, reason):
        del self.until[name]
        log.warning("lease.lost", name=name, node=self.node, pid=self.pid, reason=reason)
        return True

    def _acquire(self, name):
        started = self.clock()
        try:
            taken, before = leases.acquire(name, self.node, self.pid, self.token, self.lasts)
        except Exception as exc:
            self._failed("acquire", name, exc)
            return False
        self.failing = False
        if not taken:
            return False
        self.until[name] = started + self.fence
        log.info("lease.acquired", name=name, node=self.node, pid=self.pid, before=before)
        return True

    def _release(self, name):
        del self.until[name]
        try:
            released = leases.release(name, self.token)
        except Exception as exc:  # it expires by itself
            self._failed("release", name, exc)
            return
        if released:
            log.info("lease.released", name=name, node=self.node, pid=self.pid)
