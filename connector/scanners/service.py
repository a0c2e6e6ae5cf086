"""The scanners inside the daemon: one isolated thread per active scanner.

`ScannerService` is an entry of `connector.app.SERVICES`. Each
thread connects, scans, waits for mail (IMAP IDLE or `interval`) and scans
again. Any failure (wrong password, TLS refused, server down, a database
hiccup) is logged as `imap.error`, recorded as the scanner's last error and
retried with exponential backoff; it never touches the other scanners or the
SMTP intake.

The scanners follow the daemon's reloads (one `Reloader`, which checks
everything `run` checks, templates included): when `config/scanners.yaml` (or
the ini) changes and the whole configuration loads cleanly, scanners that
were added, changed or removed are started, restarted or stopped
(`scanners.reloaded`); a refused reload is logged (`scanners.reload_failed`)
and the running scanners keep going. A supervisor thread stops them all when
the daemon stops.

Each scanner runs on one node at a time (issue 13): under the lease
`scanner:<name>` (`connector.singletons`), which the service's `LeaseKeeper`
takes for every active scanner. A node runs the scanners whose lease it holds;
the others stand by and take over when the holder dies, resuming from the
store's scanner state (UIDs). The supervisor reconciles what runs with what is
held (at once when a lease is taken or lost, else every SUPERVISE_EVERY): a
scanner whose lease is lost is stopped, and a scan checks the lease before each
fetch and mailbox action (`Scanner(may_work=...)`), so a frozen node that wakes
up does not scan before it has the lease again. A new scanner thread for a name
starts only after the previous one has ended, and a lease is released (at a
clean stop, or when a reload removes the scanner) only once its thread ended.
"""

import threading
import time

from connector.intake.imap import Fenced, ScanError, Scanner, connect, logout, wait_for_mail
from connector.log import get_logger
from connector.scanners.config import scanners_of
from connector.settings.reload import KEEPING
from connector.singletons import LeaseKeeper
from connector.store.leases import scanner_lease
from connector.store.models import database
from connector.store.scanners import ScannerState

log = get_logger("scanners")

BACKOFF_INITIAL = 5.0
BACKOFF_MAX = 300.0
STOP_GRACE = 5.0   # seconds the scanners get to finish when the daemon stops
SUPERVISE_EVERY = 0.5  # seconds between two looks at the leases (a lost one stops its scanner)


def describe(exc):
    """An error as the scanner's status shows it: a ScanError's own words, else its type too."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ScanError) else f"{type(exc).__name__}: {text}"


class ScannerThread(threading.Thread):
    """One scanner: connect, scan, wait, scan again, while `stop` is not set and `may_work()`
    (its lease is held)."""

    def __init__(self, cfg, stop, clock=time.time, may_work=lambda: True):
        super().__init__(name=f"scanner-{cfg.name}", daemon=True)
        self.cfg = cfg
        self.stop = stop
        self.may_work = may_work
        self.scanner = Scanner(cfg, clock, may_work=may_work)
        self.state = ScannerState(cfg.name, clock)

    def working(self):
        return not self.stop.is_set() and self.may_work()

    def run(self):
        backoff = BACKOFF_INITIAL
        reason = "stopped"
        try:
            while self.working():
                client = None
                try:
                    client = connect(self.cfg)
                    while self.working():
                        self.scanner.scan(client)
                        client = self.scanner.client  # a new one after a reconnect
                        backoff = BACKOFF_INITIAL
                        last_uid = self.state.folder(self.cfg.folders[0]).last_uid
                        wait_for_mail(client, self.cfg, self.stop, last_uid)
                except Fenced:
                    reason = "lease lost"
                    break
                except Exception as exc:
                    text = describe(exc)
                    log.error("imap.error", scanner=self.cfg.name, error=text, retry_in=backoff)
                    try:
                        self.state.error(text)
                    except Exception as db_exc:
                        log.error("imap.state_error", scanner=self.cfg.name, error=describe(db_exc))
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                finally:
                    for used in {id(c): c for c in (client, self.scanner.client) if c is not None}.values():
                        logout(used)
                    self.scanner.client = None
        finally:
            if not self.may_work():
                reason = "lease lost"
            log.info("imap.stopped", scanner=self.cfg.name, reason=reason)
            database.close()


class ScannerService:
    """The active scanners of the configuration in force whose lease this node holds, one
    thread each."""

    def __init__(self, settings, stop_event, clock=time.time):
        self.settings = settings
        self.stop_event = stop_event
        self.clock = clock
        self.wanted = {}   # name -> cfg: the active scanners of the configuration in force
        self.running = {}  # name -> (cfg, thread, stop)
        self.threads = {}  # lease name -> the last thread started under it (maybe still ending)
        self.lock = threading.Lock()  # reloads come from the daemon's event loop, leases from the keeper
        self.changed = threading.Event()
        self.keeper = LeaseKeeper(settings.node_name, settings.failover_seconds, on_change=self.changed.set,
                                  busy=self._busy)

    def start(self):
        """Take the scanners' leases and start the supervisor; returns the threads started
        (the supervisor: it stops the scanners and the keeper when the daemon stops)."""
        self._want(scanners_of(self.settings))
        self.keeper.start()
        supervisor = threading.Thread(target=self._supervise, name="scanners", daemon=True)
        supervisor.start()
        return [supervisor]

    def reload(self, settings):
        """The daemon's reload was good: start, restart or stop what changed."""
        self.settings = settings
        self._want(scanners_of(settings))
        self._reconcile()
        log.info("scanners.reloaded", active=sorted(self.wanted))

    def keep(self, error):
        """The daemon's reload was refused: the running scanners keep going."""
        log.error("scanners.reload_failed", error=error, keeping=KEEPING)

    def _want(self, scanners):
        with self.lock:
            self.wanted = {cfg.name: cfg for cfg in scanners if cfg.active}
        self.keeper.want(scanner_lease(name) for name in self.wanted)

    def _busy(self, lease):
        thread = self.threads.get(lease)
        return thread is not None and thread.is_alive()

    def _reconcile(self):
        """Stop the scanners changed, removed or whose lease is lost; start those whose lease
        is held (once the previous thread under the lease has ended)."""
        with self.lock:
            if self.stop_event.is_set():
                return
            for name, (cfg, thread, stop) in list(self.running.items()):
                held = self.keeper.holds(scanner_lease(name))
                if self.wanted.get(name) != cfg or not held or not thread.is_alive():
                    if not stop.is_set():
                        stop.set()
                        log.info("scanners.stopping", scanner=name, reason="configuration changed"
                                 if held else "lease lost")
                    del self.running[name]
            for name, cfg in self.wanted.items():
                lease = scanner_lease(name)
                if name in self.running or not self.keeper.holds(lease) or self._busy(lease):
                    continue
                stop = threading.Event()
                thread = ScannerThread(cfg, stop, self.clock, may_work=lambda lease=lease: self.keeper.holds(lease))
                thread.start()
                self.running[name] = (cfg, thread, stop)
                self.threads[lease] = thread
                log.info("scanners.started", scanner=name, host=cfg.host, folders=list(cfg.folders), scan=cfg.scan)

    def _supervise(self):
        while not self.stop_event.is_set():
            self._reconcile()
            self.changed.wait(SUPERVISE_EVERY)
            self.changed.clear()
        with self.lock:
            running = list(self.running.values())
        for _, thread, stop in running:
            stop.set()
        # A scanner stuck on a server that never answers must not hold up the daemon's
        # stop: what it fetched is either committed (and flagged next time) or not yet.
        # Its lease is not released: it expires by itself after the process is gone.
        deadline = time.monotonic() + STOP_GRACE
        for thread in list(self.threads.values()):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.keeper.finish()
        database.close()
