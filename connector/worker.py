"""The daemon's background processes: filing (`connector worker`) and delivery
(`connector deliver`).

Each is its own process, so filing, delivering and accepting mail run on
separate cores instead of sharing one interpreter lock. Both run in the idle
CPU scheduling class (senders wait on acceptance; filing and delivery can
wait a moment), stop when the daemon that started them dies, and reload the
configuration on SIGHUP or when the files' fingerprint changes, keeping the
current configuration when the new one is bad.
"""

import os
import signal
import sys
import threading
import time

from connector.checks import load_checked
from connector.health.children import announce_ready
from connector.log import get_logger
from connector.outbound.delivery import Delivery
from connector.pipeline.runner import Runner
from connector.pipeline.services import Services
from connector.settings import ConfigError
from connector.settings.reload import fingerprint, keep_in_force
from connector.store.db import load_hmac_key, open_store
from connector.store.faults import describe, transient_fault
from connector.store.retention import prune
from connector.store.wakeup import IDLE_POLL, Waker

log = get_logger("worker")

EX_TEMPFAIL = 75  # sysexits: another process holds the job; try again later
IDLE_WAIT = 0.05      # seconds to wait when there is nothing to do and no wake-up socket
PRUNE_FIRST = 60.0     # seconds after start before the first retention run ([retention] raw_days)
PRUNE_EVERY = 3600.0   # then once an hour, when the worker has nothing else to do
CHECK_EVERY = 1.0     # seconds between looks at the configuration files' fingerprint
FALLBACK_NICENESS = 19
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

    def __init__(self, settings, stop, clock=time.time):
        self.stop = stop
        self.clock = clock
        self.reload_requested = threading.Event()
        self.settings = settings
        self.fingerprint = fingerprint(settings)
        self.checked_at = time.monotonic()
        open_store(settings.database, synchronous="normal", checkpoint_pages=self.checkpoint_pages)
        self.waker = Waker(settings.data_dir, self.name)
        if self.waker.sock is None and self.exclusive:
            raise AlreadyRunning(f"another `connector {self.name}` process runs for {settings.data_dir}; "
                                 "stop it first (the daemon starts its own)")
        self.configure(settings)

    def configure(self, settings):
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
        """A SIGHUP can arrive before the handler exists; the files' fingerprint cannot be missed."""
        if time.monotonic() - self.checked_at < CHECK_EVERY:
            return False
        self.checked_at = time.monotonic()
        return fingerprint(self.settings) != self.fingerprint

    def _reload(self):
        self.reload_requested.clear()
        self.fingerprint = fingerprint(self.settings)
        try:
            settings = load_checked(self.settings.ini_path)
        except ConfigError as exc:
            log.error("config.reload_failed", process=self.name, error=str(exc),
                      keeping="last good configuration")
            return
        restart = keep_in_force(self.settings, settings)  # e.g. a new database waits for the restart
        self.close()
        try:
            self.configure(settings)
        except Exception as exc:  # a file changed again since the check, or an error of ours
            log.error("config.reload_failed", process=self.name, error=f"{type(exc).__name__}: {exc}",
                      keeping="last good configuration")
            self.configure(self.settings)
            return
        self.settings = settings
        log.info("config.reloaded", process=self.name, restart_needed=restart or None)

    def run(self):
        log.info(f"{self.name}.started", database=str(self.settings.database))
        while not self.stop.is_set():
            if self.reload_requested.is_set() or self._files_changed():
                self._reload()
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
            self.fault_delay = 0
            if not busy:
                self.idle()
        self.close()
        self.waker.close()
        log.info(f"{self.name}.stopped")


class FilingWorker(BackgroundLoop):
    """The pipeline over spooled messages."""

    name = "worker"
    checkpoint_pages = FILING_CHECKPOINT_PAGES

    def configure(self, settings):
        self.runner = Runner(Services(settings, load_hmac_key(settings.data_dir), clock=self.clock))
        self.prune_at = getattr(self, "prune_at", time.monotonic() + PRUNE_FIRST)

    def step(self):
        busy = self.runner.drain(lambda: self.stop.is_set() or self.reload_requested.is_set())
        if self.settings.raw_days and time.monotonic() >= self.prune_at and not busy:
            self.prune_at = time.monotonic() + PRUNE_EVERY
            pruned = prune(self.settings.raw_days, now=self.clock())
            if any(pruned.values()):
                log.info("retention.pruned", raw_days=self.settings.raw_days, **pruned)
        return busy


class DeliveryWorker(BackgroundLoop):
    """The outbox, to the relay or the maildir."""

    name = "deliver"

    exclusive = True  # two delivery processes on one outbox could both send a row

    def configure(self, settings):
        previous = getattr(self, "delivery", None)
        self.delivery = Delivery(settings, clock=self.clock)
        if previous is not None:  # a reload: an outcome still to record is not forgotten
            self.delivery.unrecorded = previous.unrecorded

    def step(self):
        return self.delivery.run_once(lambda: self.stop.is_set() or self.reload_requested.is_set())

    def close(self):
        self.delivery.close()


def process_main(loop_class, settings):
    """Entry point of a background process started by the daemon (or by systemd)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(FALLBACK_NICENESS)
    stop = threading.Event()
    worker = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.request_stop() if worker else stop.set())
    parent = os.getppid()

    def orphaned():  # the daemon died (kill -9): stop; its successor starts new children
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning(f"{loop_class.name}.orphaned", parent=parent)
                stop.set()
                if worker:
                    worker.waker.poke()

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    try:
        worker = loop_class(settings, stop)
    except AlreadyRunning as exc:
        log.error(f"{loop_class.name}.already_running", error=str(exc))
        print(f"connector: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    signal.signal(signal.SIGHUP, lambda *_: worker.request_reload())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # the daemon started us with it blocked
    announce_ready()  # store open, configuration loaded: the daemon may tell systemd READY
    worker.run()
    return 0
