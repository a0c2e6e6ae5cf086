"""What the daemon's background processes do: filing (`connector worker`) and
delivery (`connector deliver`), each a loop of steps.

Each is its own process, so filing, delivering and accepting mail run on
separate cores instead of sharing one interpreter lock; `connector.app` wires
them (scheduling class, signals, the parent watch). Both reload the
configuration between two steps on SIGHUP or when the files' fingerprint
changes (`connector.settings.reload.Reloader`), keeping the current
configuration when the new one is bad.

The daemon runs `[worker] processes` filing workers (`connector worker
--partition I/N`): worker I files the spool entries whose id modulo N is I - 1,
so they never take the same entry, and a restarted worker finds its own
unfinished entries again (they have no processing row). On PostgreSQL the
partition is not used: every worker of every node claims its entries from one
pool, and each delivery process its outbox rows (`connector.store.claims`).
Each decides outside the write lock and re-checks under it what other mail may
have changed (`connector.pipeline.runner`). The first one also fires deadlines
and prunes, each under its lease (`deadlines`, `retention`:
`connector.singletons`), so that of several nodes on one PostgreSQL database
one fires and one prunes; a clean stop releases them at once for another
node's first worker.
"""

import os
import threading
import time

from connector.checks import load_checked
from connector.log import get_logger
from connector.outbound.delivery import Delivery
from connector.pipeline.runner import Runner
from connector.pipeline.services import Services
from connector.settings.reload import Reloader
from connector.singletons import LeaseKeeper
from connector.store.db import load_hmac_key, open_store
from connector.store.faults import describe, transient_fault
from connector.store.leases import DEADLINES, RETENTION, TIMERS
from connector.store.retention import prune
from connector.settings.schema import AUTO_PROCESSES
from connector.store.wakeup import IDLE_POLL, Waker, worker_role
from connector.workqueue import auto_emails, deadlines
from connector.workqueue import triage as triage_actions

log = get_logger("worker")

IDLE_WAIT = 0.05      # seconds to wait when there is nothing to do and no wake-up socket
PRUNE_FIRST = 60.0     # seconds after start before the first retention run ([retention] raw_days)
PRUNE_EVERY = 3600.0   # then once an hour, when the worker has nothing else to do
CHECK_EVERY = 1.0     # seconds between looks at the configuration files' fingerprint
# WAL pages before the filing worker's own commit checkpoints: the delivery process, which
# commits after every mail and has time to spare, checkpoints at SQLite's 1000; the worker
# only when delivery does not run, so the fsyncs of checkpoints stay off the filing path.
FILING_CHECKPOINT_PAGES = 20000


class AlreadyRunning(Exception):
    """A process of this kind already serves this data directory."""


class BackgroundLoop:
    """Do `step()` until stopped; reload the configuration between two steps."""

    name = "background"
    exclusive = False  # whether a second process of this kind must not run (the filing worker may)
    checkpoint_pages = None  # SQLite's default

    def __init__(self, settings, stop, clock=time.time, role=None):
        self.stop = stop
        self.clock = clock
        self.reload_requested = threading.Event()
        self.reloader = Reloader(settings, load_checked, self.name, clock)
        self.checked_at = time.monotonic()
        open_store(settings.database, synchronous="normal", upgrade=settings.auto_upgrade,
                   checkpoint_pages=self.checkpoint_pages)
        self.waker = Waker(settings.data_dir, role or self.name)
        if self.waker.sock is None and self.exclusive:
            raise AlreadyRunning(f"another `connector {self.name}` process runs for {settings.data_dir}; "
                                 "stop it first (the daemon starts its own)")
        self.configure(settings)

    @property
    def settings(self):
        return self.reloader.settings

    def started_fields(self):
        return {}

    def configure(self, settings):
        """Build what `step()` uses from `settings`; raise, leaving the running one, if it cannot."""
        raise NotImplementedError

    def step(self):
        """Do some work; returns whether there was any."""
        raise NotImplementedError

    def close(self):
        pass

    def request_reload(self):
        self.reload_requested.set()
        self.waker.poke()

    def request_stop(self):
        self.stop.set()
        self.waker.poke()

    def idle(self):
        """Nothing to do: wait for a wake-up (new work, stop, reload), at most until the next look."""
        if self.waker.sock is None:
            self.stop.wait(IDLE_WAIT)
        else:
            self.waker.wait(min(IDLE_POLL, CHECK_EVERY))

    def _files_changed(self):
        if time.monotonic() - self.checked_at < CHECK_EVERY:
            return False
        self.checked_at = time.monotonic()
        return self.reloader.files_changed()

    def run(self):
        log.info(f"{self.name}.started", database=str(self.settings.database), **self.started_fields())
        while not self.stop.is_set():
            if self.reload_requested.is_set() or self._files_changed():
                self.reload_requested.clear()
                self.reloader.reload(self.configure)
            try:
                busy = self.step()
            except Exception as exc:
                fault = transient_fault(exc)
                if fault is None:
                    log.exception(f"{self.name}.error")
                    delay = 1.0
                else:  # disk full, locked, I/O: the store's fault, not a bug; wait longer each time
                    delay = self.fault_delay = min(max(getattr(self, "fault_delay", 0) * 2, 1.0), 30.0)
                    log.warning("storage.fault", process=self.name, cause=describe(fault), retry_in=delay)
                self.stop.wait(delay)
                continue
            if getattr(self, "fault_delay", 0):  # a step that worked after faults: the store is back
                log.info("storage.recovered", process=self.name, after=self.fault_delay)
            self.fault_delay = 0
            if not busy:
                self.idle()
        self.close()
        self.waker.close()
        log.info(f"{self.name}.stopped")


def filing_processes(settings, cores=None):
    """How many filing workers the daemon runs: `[worker] processes`, auto = AUTO_PROCESSES
    (or one per core when the machine has fewer)."""
    wanted = settings.worker_processes
    if wanted != "auto":
        return wanted
    return max(1, min(AUTO_PROCESSES, cores or os.cpu_count() or 1))


def parse_partition(text):
    """`I/N` (1 <= I <= N) -> (I, N); ValueError otherwise."""
    index, _, count = text.partition("/")
    index, count = int(index), int(count)
    if not 1 <= index <= count:
        raise ValueError(text)
    return index, count


class FilingWorker(BackgroundLoop):
    """The pipeline over spooled messages (all of them, or its `partition` (I, N) of them)."""

    name = "worker"
    checkpoint_pages = FILING_CHECKPOINT_PAGES

    def __init__(self, settings, stop, clock=time.time, partition=None):
        self.partition = partition
        self.first = partition is None or partition[0] == 1  # fires deadlines and prunes, under their leases
        super().__init__(settings, stop, clock, role=worker_role(partition[0]) if partition else None)
        self.timers = None
        if self.first:
            self.timers = LeaseKeeper(settings.node_name, settings.failover_seconds)
            self.timers.want(TIMERS)
            self.timers.start()

    def started_fields(self):
        return {"partition": "/".join(map(str, self.partition))} if self.partition else {}

    def configure(self, settings):
        runner = Runner(Services(settings, load_hmac_key(settings.data_dir), clock=self.clock,
                                 triage=triage_actions), partition=self.partition)
        if getattr(self, "runner", None) is not None:  # a reload: what the old one held goes back
            self.runner.close()
        self.runner = runner
        self.prune_at = getattr(self, "prune_at", time.monotonic() + PRUNE_FIRST)
        self.deadlines_at = getattr(self, "deadlines_at", 0.0)
        auto_emails.install(settings)

    def close(self):
        """The loop has stopped: the spool claims go back to the pool at once, and nothing
        fires or prunes any more (the timers' leases are released)."""
        self.runner.close()
        if self.timers is not None:
            self.timers.finish()

    def step(self):
        busy = self.runner.drain(lambda: self.stop.is_set() or self.reload_requested.is_set())
        if not self.first:
            return busy
        if (self.settings.raw_days and time.monotonic() >= self.prune_at and not busy
                and self.timers.holds(RETENTION)):
            self.prune_at = time.monotonic() + PRUNE_EVERY
            pruned = prune(self.settings.raw_days, now=self.clock())
            if any(pruned.values()):
                log.info("retention.pruned", raw_days=self.settings.raw_days, **pruned)
        if time.monotonic() >= self.deadlines_at and self.timers.holds(DEADLINES):
            self.deadlines_at = time.monotonic() + deadlines.DEADLINE_EVERY
            busy += deadlines.fire_due(self.clock(), self.settings)
        return busy

class DeliveryWorker(BackgroundLoop):
    """The outbox, to the relay or the maildir."""

    name = "deliver"

    # one per node (data directory): on SQLite two could both send a row; on PostgreSQL the
    # nodes' delivery processes share the outbox by claims (`connector.store.claims`)
    exclusive = True

    def configure(self, settings):
        previous = getattr(self, "delivery", None)
        delivery = Delivery(settings, clock=self.clock, claimed=previous.claimed if previous else None)
        if previous is not None:  # a reload: an outcome still to record, and the claims, are not forgotten
            delivery.unrecorded = previous.unrecorded
            previous.transport.close()
        self.delivery = delivery

    def step(self):
        return self.delivery.run_once(lambda: self.stop.is_set() or self.reload_requested.is_set())

    def close(self):
        self.delivery.close()
