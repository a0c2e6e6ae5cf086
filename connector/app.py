"""Wiring: the daemon (`connector run`).

    connector run       main process: SMTP/LMTP intake -> spool (group commit),
                        background intakes (IMAP scanners); starts, restarts and
                        reloads the background processes of `connector.worker`:
    connector worker    the pipeline over spooled messages
    connector deliver   the outbox, to the relay or the maildir

Separate processes, so that filing and delivering never take the intake's
interpreter lock. They share the SQLite files; the spool and the outbox are
the hand-overs.
"""

import asyncio
import signal
import subprocess
import sys
import threading
import time

from connector.intake.smtp import IntakeHandler, start_server
from connector.log import get_logger
from connector.pipeline.services import Services, own_address_re
from connector.settings import ConfigError
from connector.settings.reload import ConfigWatcher, fingerprint
from connector.store.db import load_hmac_key, open_store
from connector.store.spool import GroupCommitter
from connector.worker import load_checked

log = get_logger("daemon")

# Background intakes started beside SMTP: callables `start(settings, stop_event)`
# returning the threads they started. IMAP scanners add themselves here.
SERVICES = (
    __import__("connector.scanners.service", fromlist=["start"]).start,  # IMAP mail scanners
)

CHILD_RESTART_DELAY = 1.0
FINGERPRINT_EVERY = 1.0  # seconds between looks at the configuration files
CHILDREN = ("worker", "deliver")  # background processes, each restarted when it dies


def open_services(settings, clock=time.time, synchronous="full"):
    """Store, key and pipeline services for this process."""
    open_store(settings.database, synchronous)
    return Services(settings, load_hmac_key(settings.data_dir), clock=clock)


class Daemon:
    def __init__(self, settings, ini_path, with_worker=True):
        self.settings = settings
        self.ini_path = ini_path
        self.with_worker = with_worker
        self.stop_event = threading.Event()
        self.children = {}

    def _spawn(self, command):
        cmd = [sys.executable, "-m", "connector", "-c", str(self.ini_path), command]
        # SIGHUP asks a running child to reload; ignored until its handler is in place.
        child = subprocess.Popen(cmd, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        self.children[command] = child
        log.info("child.spawned", command=command, pid=child.pid)

    async def _check_files(self):
        """The ini is not watched by watchdog (its folder may be busy): compare fingerprints."""
        while not self.stop_event.is_set():
            await asyncio.sleep(FINGERPRINT_EVERY)
            if fingerprint(self.settings) != self.fingerprint:
                self.reload()

    async def _supervise(self):
        while not self.stop_event.is_set():
            for command, child in list(self.children.items()):
                if child.poll() is not None:
                    log.error("child.exited", command=command, returncode=child.returncode)
                    await asyncio.sleep(CHILD_RESTART_DELAY)
                    if not self.stop_event.is_set():
                        self._spawn(command)
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
            for command in CHILDREN:
                self._spawn(command)
        threads = [t for start in SERVICES for t in start(settings, self.stop_event)]
        log.info("daemon.started", listen=f"{settings.listen_host}:{settings.listen_port}",
                 protocol=settings.protocol, database=str(settings.database), outbound=settings.mode)
        self.fingerprint = fingerprint(settings)
        supervisor = asyncio.create_task(self._supervise())
        checker = asyncio.create_task(self._check_files())
        await stopped.wait()
        log.info("daemon.stopping")
        watcher.stop()
        self.stop_event.set()
        server.close()
        await server.wait_closed()
        supervisor.cancel()
        checker.cancel()
        committer.close()
        self._stop_children()
        for thread in threads:
            thread.join(timeout=10)
        log.info("daemon.stopped")

    def reload(self):
        """Load the configuration again; apply it if good, keep the running one if not."""
        self.fingerprint = fingerprint(self.settings)
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
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)
        log.info("config.reloaded", process="daemon")

    def _stop_children(self):
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def run_daemon(settings, ini_path, with_worker=True):
    asyncio.run(Daemon(settings, ini_path, with_worker).main())
    return 0


