"""Wiring: the daemon (`connector run`) and its worker (`connector worker`).

    connector run       main process: SMTP/LMTP intake -> spool (group commit),
                        background intakes (IMAP scanners), supervises the worker
    connector worker    child process: pipeline over queued spool entries,
                        delivery of the outbox

Two processes so that filing and delivering never slow down accepting mail
(they would share one interpreter lock otherwise). Both reopen the same
SQLite file; the spool is the only hand-over between them.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

from connector.intake.smtp import IntakeHandler, start_server
from connector.log import get_logger
from connector.outbound.delivery import Delivery
from connector.pipeline.runner import Runner
from connector.pipeline.services import Services, own_address_re
from connector.settings import ConfigError, load_settings
from connector.settings.reload import ConfigWatcher, fingerprint
from connector.store.db import load_hmac_key, open_store
from connector.store.spool import GroupCommitter

log = get_logger("daemon")

# Background intakes started beside SMTP: callables `start(settings, stop_event)`
# returning the threads they started. IMAP scanners add themselves here.
SERVICES = (
)

WORKER_RESTART_DELAY = 1.0


def open_services(settings, clock=time.time, synchronous="full"):
    """Store, key and pipeline services for this process."""
    open_store(settings.database, synchronous)
    return Services(settings, load_hmac_key(settings.data_dir), clock=clock)


def load_checked(ini_path):
    """Settings whose templates render too; raises ConfigError like check-config."""
    from connector.commands.daemon import check_templates
    settings = load_settings(ini_path)
    check_templates(settings)
    return settings


class Worker:
    """The worker's loop: the pipeline in this thread, delivery in another.

    `request_reload()` (SIGHUP) makes it load the configuration again between
    two messages, keeping the current one if the new one is bad.
    """

    CHECK_EVERY = 1.0  # seconds between looks at the files' fingerprint

    def __init__(self, settings, stop):
        self.stop = stop
        self.reload_requested = threading.Event()
        self.settings = settings
        self.fingerprint = fingerprint(settings)
        self.checked_at = time.monotonic()
        self.runner = Runner(open_services(settings, synchronous="normal"))

    def _files_changed(self):
        """A SIGHUP can arrive before the handler exists; the files' fingerprint cannot be missed."""
        if time.monotonic() - self.checked_at < self.CHECK_EVERY:
            return False
        self.checked_at = time.monotonic()
        return fingerprint(self.settings) != self.fingerprint

    def request_reload(self):
        self.reload_requested.set()

    def _reload(self):
        self.reload_requested.clear()
        self.fingerprint = fingerprint(self.settings)
        try:
            settings = load_checked(self.settings.ini_path)
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc), keeping="last good configuration")
            return
        self.settings = settings
        self.runner = Runner(Services(settings, load_hmac_key(settings.data_dir)))
        log.info("config.reloaded", process="worker")

    def _deliver(self):
        delivery, used = Delivery(self.settings), self.settings
        while not self.stop.is_set():
            if used is not self.settings:  # reloaded: relay or retry settings may differ
                delivery.close()
                delivery, used = Delivery(self.settings), self.settings
            try:
                if not delivery.run_once():
                    self.stop.wait(0.05)
            except Exception:
                log.exception("outbox.worker_error")
                self.stop.wait(1.0)
        delivery.close()

    def run(self):
        thread = threading.Thread(target=self._deliver, name="delivery", daemon=True)
        thread.start()
        log.info("worker.started", database=str(self.settings.database))
        while not self.stop.is_set():
            if self.reload_requested.is_set() or self._files_changed():
                self._reload()
            if not self.runner.drain(lambda: self.stop.is_set() or self.reload_requested.is_set()):
                self.stop.wait(0.05)
        thread.join(timeout=10)
        log.info("worker.stopped")


class Daemon:
    def __init__(self, settings, ini_path, with_worker=True):
        self.settings = settings
        self.ini_path = ini_path
        self.with_worker = with_worker
        self.stop_event = threading.Event()
        self.worker = None

    def _spawn_worker(self):
        cmd = [sys.executable, "-m", "connector", "-c", str(self.ini_path), "worker"]
        # SIGHUP asks a running worker to reload; ignored until its handler is in place.
        self.worker = subprocess.Popen(cmd, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        log.info("worker.spawned", pid=self.worker.pid)

    async def _supervise(self):
        while not self.stop_event.is_set() and self.worker:
            if self.worker.poll() is not None:
                log.error("worker.exited", returncode=self.worker.returncode)
                await asyncio.sleep(WORKER_RESTART_DELAY)
                if not self.stop_event.is_set():
                    self._spawn_worker()
            await asyncio.sleep(0.2)

    async def main(self):
        settings = self.settings
        services = open_services(settings)
        committer = GroupCommitter()
        handler = IntakeHandler(services.is_own, committer, settings.protocol)
        self.handler = handler
        server = await start_server(settings, handler)
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        watcher = ConfigWatcher(settings, lambda: loop.call_soon_threadsafe(self.reload))
        watcher.start()
        if self.with_worker:
            self._spawn_worker()
        threads = [t for start in SERVICES for t in start(settings, self.stop_event)]
        log.info("daemon.started", listen=f"{settings.listen_host}:{settings.listen_port}",
                 protocol=settings.protocol, database=str(settings.database), outbound=settings.mode)
        supervisor = asyncio.create_task(self._supervise())
        await stopped.wait()
        log.info("daemon.stopping")
        watcher.stop()
        self.stop_event.set()
        server.close()
        await server.wait_closed()
        supervisor.cancel()
        committer.close()
        self._stop_worker()
        for thread in threads:
            thread.join(timeout=10)
        log.info("daemon.stopped")

    def reload(self):
        """Load the configuration again; apply it if good, keep the running one if not."""
        try:
            settings = load_checked(self.ini_path)
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc), keeping="last good configuration")
            return
        restart = [k for k in ("listen", "protocol", "max_message_size", "hostname", "database")
                   if getattr(settings, k) != getattr(self.settings, k)]
        if restart:
            log.warning("config.restart_needed", keys=restart)
        own = [own_address_re(settings.public_address), own_address_re(settings.notifications_address)]
        self.handler.is_own_address = lambda address: any(r.match(address or "") for r in own)
        self.settings = settings
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGHUP)
        log.info("config.reloaded", process="daemon")

    def _stop_worker(self):
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()


def run_daemon(settings, ini_path, with_worker=True):
    asyncio.run(Daemon(settings, ini_path, with_worker).main())
    return 0


WORKER_NICENESS = 19


def worker_main(settings):
    # Accepting mail is what senders wait on; filing and delivering can wait a
    # moment. A lower CPU priority keeps the intake fast under a burst.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(WORKER_NICENESS)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()

    def orphaned():  # the daemon died (kill -9): stop, its successor starts a new worker
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning("worker.orphaned", parent=parent)
                stop.set()

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    worker = Worker(settings, stop)
    signal.signal(signal.SIGHUP, lambda *_: worker.request_reload())
    worker.run()
    return 0
