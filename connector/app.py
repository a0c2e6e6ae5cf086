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
from connector.pipeline.runner import Runner, wait_loop
from connector.pipeline.services import Services
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


def run_worker(settings, stop):
    """The worker's loop: the pipeline in this thread, delivery in another."""
    services = open_services(settings, synchronous="normal")
    runner = Runner(services)
    delivery = Delivery(settings)

    def deliver():
        while not stop.is_set():
            try:
                if not delivery.run_once():
                    stop.wait(0.05)
            except Exception:
                log.exception("outbox.worker_error")
                stop.wait(1.0)
        delivery.close()

    thread = threading.Thread(target=deliver, name="delivery", daemon=True)
    thread.start()
    log.info("worker.started", database=str(settings.database))
    wait_loop(runner, stop.is_set)
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
        self.worker = subprocess.Popen(cmd)
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
        server = await start_server(settings, handler)
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        if self.with_worker:
            self._spawn_worker()
        threads = [t for start in SERVICES for t in start(settings, self.stop_event)]
        log.info("daemon.started", listen=f"{settings.listen_host}:{settings.listen_port}",
                 protocol=settings.protocol, database=str(settings.database), outbound=settings.mode)
        supervisor = asyncio.create_task(self._supervise())
        await stopped.wait()
        log.info("daemon.stopping")
        self.stop_event.set()
        server.close()
        await server.wait_closed()
        supervisor.cancel()
        committer.close()
        self._stop_worker()
        for thread in threads:
            thread.join(timeout=10)
        log.info("daemon.stopped")

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
    run_worker(settings, stop)
    return 0
