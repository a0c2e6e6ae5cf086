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
"""

import threading
import time

from connector.intake.imap import ScanError, Scanner, connect, logout, wait_for_mail
from connector.log import get_logger
from connector.scanners.config import scanners_of
from connector.settings.reload import KEEPING
from connector.store.models import database
from connector.store.scanners import ScannerState

log = get_logger("scanners")

BACKOFF_INITIAL = 5.0
BACKOFF_MAX = 300.0
STOP_GRACE = 5.0   # seconds the scanners get to finish when the daemon stops


def describe(exc):
    """An error as the scanner's status shows it: a ScanError's own words, else its type too."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ScanError) else f"{type(exc).__name__}: {text}"


class ScannerThread(threading.Thread):
    def __init__(self, cfg, stop, clock=time.time):
        super().__init__(name=f"scanner-{cfg.name}", daemon=True)
        self.cfg = cfg
        self.stop = stop
        self.scanner = Scanner(cfg, clock)
        self.state = ScannerState(cfg.name, clock)

    def run(self):
        backoff = BACKOFF_INITIAL
        try:
            while not self.stop.is_set():
                client = None
                try:
                    client = connect(self.cfg)
                    while not self.stop.is_set():
                        self.scanner.scan(client)
                        client = self.scanner.client  # a new one after a reconnect
                        backoff = BACKOFF_INITIAL
                        last_uid = self.state.folder(self.cfg.folders[0]).last_uid
                        wait_for_mail(client, self.cfg, self.stop, last_uid)
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
            log.info("imap.stopped", scanner=self.cfg.name)
            database.close()


class ScannerService:
    """The active scanners of the configuration in force, one thread each."""

    def __init__(self, settings, stop_event, clock=time.time):
        self.settings = settings
        self.stop_event = stop_event
        self.clock = clock
        self.running = {}  # name -> (cfg, thread, stop)
        self.lock = threading.Lock()  # reloads come from the daemon's event loop

    def start(self):
        """Start the scanners; returns the threads started (the supervisor first)."""
        self._apply(scanners_of(self.settings))
        supervisor = threading.Thread(target=self._supervise, name="scanners", daemon=True)
        supervisor.start()
        return [supervisor] + [thread for _, thread, _ in self.running.values()]

    def reload(self, settings):
        """The daemon's reload was good: start, restart or stop what changed."""
        self.settings = settings
        self._apply(scanners_of(settings))
        log.info("scanners.reloaded", active=sorted(self.running))

    def keep(self, error):
        """The daemon's reload was refused: the running scanners keep going."""
        log.error("scanners.reload_failed", error=error, keeping=KEEPING)

    def _apply(self, scanners):
        wanted = {cfg.name: cfg for cfg in scanners if cfg.active}
        with self.lock:
            if self.stop_event.is_set():
                return
            for name, (cfg, thread, stop) in list(self.running.items()):
                if wanted.get(name) != cfg:
                    stop.set()
                    del self.running[name]
                    log.info("scanners.stopping", scanner=name)
            for name, cfg in wanted.items():
                if name not in self.running:
                    stop = threading.Event()
                    thread = ScannerThread(cfg, stop, self.clock)
                    thread.start()
                    self.running[name] = (cfg, thread, stop)
                    log.info("scanners.started", scanner=name, host=cfg.host, folders=list(cfg.folders),
                             scan=cfg.scan)

    def _supervise(self):
        self.stop_event.wait()
        with self.lock:
            running = list(self.running.values())
        for _, thread, stop in running:
            stop.set()
        # A scanner stuck on a server that never answers must not hold up the daemon's
        # stop: what it fetched is either committed (and flagged next time) or not yet.
        deadline = time.monotonic() + STOP_GRACE
        for _, thread, _ in running:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        database.close()
