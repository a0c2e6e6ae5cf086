"""Wiring: the daemon (`connector run`) and its background processes, in one place.

    connector run       main process: SMTP/LMTP intake -> spool (group commit),
                        in-process SERVICES (IMAP scanners); starts, restarts and
                        reloads the BACKGROUND processes of `connector.worker`:
    connector worker    the pipeline over spooled messages; `[worker] processes`
                        of them (`worker --partition I/N`), each its share
    connector deliver   the outbox, to the relay or the maildir

Separate processes, so that filing and delivering never take the intake's
interpreter lock. They share the SQLite files; the spool and the outbox are
the hand-overs. Every process reloads its configuration through one
`Reloader` (connector.settings.reload); in the daemon the intake and the
services follow its reloads. `connector.health` holds how the daemon is
watched: the children's supervision, the state file `connector status` reads,
the metrics endpoint and systemd's notify protocol.

The store is opened (and its schema upgraded, when `[connector] auto_upgrade`
allows) before anything listens: an old schema with auto_upgrade = no stops
`run` with a line naming `connector db upgrade`.
"""

import asyncio
import errno
import os
import secrets
import signal
import socket
import sys
import threading
import time

from connector import __version__, priority
from connector.checks import load_checked
from connector.health import daemonlock
from connector.health.children import RUNNING, Children, announce_ready, parent_pid
from connector.health.sdnotify import READY, STOPPING, WATCHDOG, Notifier
from connector.health.state import HEARTBEAT, write_state
from connector.intake.smtp import IntakeHandler, start_server
from connector.log import get_logger
from connector.mail.addresses import OwnAddresses
from connector.pipeline.services import Services
from connector.scanners.service import ScannerService
from connector.settings.reload import ConfigWatcher, Reloader
from connector.store import claims, dialect, nodes, storekey
from connector.settings.values import PostgresURL
from connector.store.db import PostgresUnavailable, load_hmac_key, open_store, probe
from connector.store.spool import GroupCommitter
from connector.store.wakeup import worker_role
from connector.worker import AlreadyRunning, DeliveryWorker, FilingWorker, filing_processes
from connector.workqueue import triage as triage_actions

log = get_logger("daemon")

# In-process services started beside SMTP: `cls(settings, stop_event)` with `start()`
# returning the threads started, `reload(settings)` and `keep(error)` after a refused reload.
SERVICES = (ScannerService,)  # IMAP mail scanners
# Background processes (`connector <name>`), each restarted by the daemon when it dies.
BACKGROUND = {loop.name: loop for loop in (FilingWorker, DeliveryWorker)}

SUPERVISE_EVERY = 0.2   # seconds between looks at the children
START_EXTEND_EVERY = 10.0  # seconds between two extensions of systemd's start timeout before READY
START_EXTENSION = 40.0     # seconds each one asks for: the next comes well before it ends
FINGERPRINT_EVERY = 1.0  # seconds between looks at the configuration files
DATABASE_WAIT_FIRST, DATABASE_WAIT_MAX = 1.0, 30.0  # the backoff while the database is away at start
DATABASE_WAIT_WARN = 300.0  # then every look is an error, with the hint to check host and port
EX_TEMPFAIL = 75  # sysexits: another process holds the job; try again later
# The daemon's pid, in its children's environment: a child compares its parent with it, so
# that it stops even when the daemon died before the child (slow to start in the idle CPU
# class on a busy machine) first looked at its parent, which was then already init.
LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there (`ss -ltnp` names it); stop it or choose another port",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's; use 127.0.0.1 or an address `ip addr` lists",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit)",
}


class ListenError(Exception):
    """A listen address the daemon cannot bind: one line for the operator, no traceback."""

    def __init__(self, ini_path, key, address, exc):
        if isinstance(exc, socket.gaierror):
            what, hint = "cannot resolve the host", "write an IP address, or a name this machine resolves"
        else:
            what = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror repeats the address
            hint = LISTEN_HINTS.get(exc.errno, f"check {key}")
        super().__init__(f"{ini_path}: {key}: cannot listen on {address}: {what.lower()} (hint: {hint})")


def background_commands(settings):
    """{child name: command} of the daemon's background processes: the filing workers
    (`worker`, or `worker`, `worker-2`, ... each with its partition) and `deliver`."""
    count = filing_processes(settings)
    workers = {"worker": ("worker",)} if count == 1 else {
        worker_role(index): ("worker", "--partition", f"{index}/{count}") for index in range(1, count + 1)}
    return {**workers, "deliver": ("deliver",)}


def open_services(settings, clock=time.time, synchronous="full"):
    """Store, key and pipeline services for this process."""
    open_store(settings.database, synchronous, upgrade=settings.auto_upgrade)
    return Services(settings, load_hmac_key(settings.data_dir), clock=clock, triage=triage_actions)


class Daemon:
    def __init__(self, settings, ini_path, with_worker=True, clock=time.time):
        self.reloader = Reloader(settings, load_checked, "daemon", clock)
        self.ini_path = ini_path
        self.clock = clock
        self.stop_event = threading.Event()
        self.instance = secrets.token_hex(6)  # this run's: in every token of its processes' claims and leases
        os.environ[claims.INSTANCE_ENV] = self.instance
        self.children = Children(ini_path, background_commands(settings) if with_worker else {})
        self.services = [service(settings, self.stop_event) for service in SERVICES]
        self.notifier = Notifier()
        self.started_at = clock()
        self.started_monotonic = self.extended_at = time.monotonic()
        self.stopped_at = None
        self.ready = False
        self.state_failed = False
        self.publish_lock = threading.Lock()
        self.published_at = float("-inf")  # updated_at of the state last written
        self.listen = settings.listen      # what is bound and opened: a change of either needs a restart
        self.data_dir = settings.data_dir

    @property
    def settings(self):
        return self.reloader.settings

    def state(self):
        """What the state file holds (and /metrics, /healthz read in-process)."""
        return {"pid": os.getpid(), "started_at": self.started_at, "updated_at": self.clock(),
                "stopped_at": self.stopped_at, "listen": self.listen,
                "protocol": self.settings.protocol, "ready": self.ready, "config": self.reloader.state(),
                "children": self.children.snapshot()}

    def publish(self, state=None):
        """Write the state file: `state`, or what is true now (taken on the event loop's thread)."""
        state = state or self.state()
        with self.publish_lock:  # the heartbeat writes from a thread: one write at a time, the newest last
            if state["updated_at"] < self.published_at:
                return
            self.published_at = state["updated_at"]
            self._write_state(state)

    def _write_state(self, state):
        try:
            write_state(self.data_dir, state)
        except OSError as exc:
            if not self.state_failed:  # once, not every heartbeat
                log.error("daemon.state_failed", error=f"{type(exc).__name__}: {exc}",
                          hint="connector status cannot see this daemon; check the data directory")
            self.state_failed = True
        else:
            self.state_failed = False

    async def _check_files(self):
        """The ini is not watched by watchdog (its folder may be busy): compare fingerprints."""
        while not self.stop_event.is_set():
            await asyncio.sleep(FINGERPRINT_EVERY)
            if self.reloader.files_changed():
                self.reload()

    async def _supervise(self):
        while not self.stop_event.is_set():
            if self.children.poll():
                self.publish()
                self.beat_now.set()  # `connector nodes` shows what runs now, not in BEAT_EVERY
            if not self.ready and self.children.all_running():
                self.ready = True
                self.notifier.send(READY, f"STATUS=accepting mail on {self.listen}")
                log.info("daemon.ready", listen=self.listen)
                self.publish()
                self.beat_now.set()
            elif not self.ready:
                self._extend_start()
            await asyncio.sleep(SUPERVISE_EVERY)

    def _extend_start(self):
        """Before READY: every START_EXTEND_EVERY seconds while children are still starting
        (none has died), ask systemd for more time. They open their store and load their
        configuration in the idle CPU class, which a machine busy with other work may leave
        them almost none of; SMTP already accepts mail, and a start that timed out would
        restart the whole service. Once a child has died, no more extensions: systemd's start
        timeout stands, and a crash loop fails the start."""
        waiting = self.children.only_starting()
        now = time.monotonic()
        if not waiting or now - self.extended_at < START_EXTEND_EVERY:
            return
        self.extended_at = now
        log.info("daemon.waiting_for_children", children=waiting,
                 seconds=round(now - self.started_monotonic, 1))
        self.notifier.send(f"EXTEND_TIMEOUT_USEC={int(START_EXTENSION * 1e6)}",
                           f"STATUS=accepting mail on {self.listen}; waiting for {', '.join(waiting)} to start")

    async def _heartbeat(self):
        """From the intake's event loop: the state file's heartbeat and systemd's watchdog."""
        interval = min(HEARTBEAT, self.notifier.watchdog_interval or HEARTBEAT)
        loop = asyncio.get_running_loop()
        while not self.stop_event.is_set():
            # written by a thread: a file's write and rename may wait for the disk (ms, while
            # the worker writes), and every session of the intake would wait with it
            await loop.run_in_executor(None, self.publish, self.state())
            if self.notifier.watchdog_interval:
                self.notifier.send(WATCHDOG)
            await asyncio.sleep(interval)

    async def _node_heartbeat(self):
        """This node's row in `connector nodes`, written from a thread (a store that is busy or
        away never holds up the event loop), and at once when a process starts or ends; a
        failure is logged once until it works again. Its leases are in the lease table."""
        loop, failed = asyncio.get_running_loop(), False
        while not self.stop_event.is_set():
            holds = sorted(name for name, child in self.children.snapshot().items() if child["state"] == RUNNING)
            try:
                await loop.run_in_executor(None, self._beat, holds)
            except Exception as exc:  # the store's fault: the intake answers 451 on its own meanwhile
                if not failed:
                    log.warning("node.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
                failed = True
            else:
                failed = False
            try:
                await asyncio.wait_for(self.beat_now.wait(), nodes.BEAT_EVERY)
            except asyncio.TimeoutError:
                pass
            self.beat_now.clear()

    async def main(self):
        settings = self.settings
        self.locks, previous = daemonlock.hold(settings)  # DaemonRunning: another daemon runs
        services = open_services(settings)
        storekey.check(load_hmac_key(settings.data_dir), settings.data_dir, self.clock())  # KeyMismatch
        if dialect.is_postgres():
            nodes.check_name_free(settings.node_name, previous)
        committer = GroupCommitter()
        handler = IntakeHandler(services.addresses.is_own, committer, settings.protocol)
        self.handler = handler
        try:
            server, metrics = await self._listen(handler)
        except ListenError:
            committer.close()
            raise
        # this run is sure to run now: the lock and the node row name it (a start refused
        # above leaves both naming the run before), then its predecessor's claims are freed
        daemonlock.record(self.locks, self.instance)
        if dialect.is_postgres():
            self._beat([])
            if previous:
                self._take_back(settings.node_name, previous.instance)
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        self.beat_now = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        watcher = ConfigWatcher(settings, lambda: loop.call_soon_threadsafe(self.reload))
        watcher.start()
        self.children.start_all()
        threads = [thread for service in self.services for thread in service.start()]
        log.info("daemon.started", listen=f"{settings.listen_host}:{settings.listen_port}",
                 protocol=settings.protocol, database=str(settings.database), outbound=settings.mode,
                 metrics=settings.metrics_listen or None)
        tasks = [asyncio.create_task(coro) for coro in (self._supervise(), self._check_files(), self._heartbeat(),
                                                        self._node_heartbeat())]
        await stopped.wait()
        self.notifier.send(STOPPING)
        log.info("daemon.stopping")
        watcher.stop()
        self.stop_event.set()
        server.close()
        await server.wait_closed()
        for task in tasks:
            task.cancel()
        committer.close()
        self.children.stop()
        for thread in threads:
            thread.join(timeout=10)
        if metrics:
            metrics.stop()
        self.stopped_at = self.clock()
        self.publish()
        log.info("daemon.stopped")

    def _beat(self, holds):
        nodes.beat(self.settings.node_name, __version__, os.getpid(), self.instance, self.started_at, holds)

    def _take_back(self, node, previous):
        """The claims and leases of our killed predecessor's processes are free at once, not
        after `[node] failover_seconds` (a restart after a crash resumes filing at once)."""
        counts = claims.take_back(node, previous)
        if counts["filing"] or counts["outbox"] or counts["leases"] or counts["kept"]:
            log.info("claims.taken_back", previous_run=previous, **counts)

    async def _listen(self, handler):
        """The metrics endpoint, then SMTP; ListenError, with nothing left bound, when either cannot bind."""
        metrics = self._start_metrics()
        try:
            smtp_handler = handler if metrics is None else metrics_handler(handler, metrics)
            server = await start_server(self.settings, smtp_handler)
        except OSError as exc:
            if metrics:
                metrics.stop()
            raise ListenError(self.ini_path, "[smtp] listen", self.settings.listen, exc) from None
        return server, metrics

    def _start_metrics(self):
        if not self.settings.metrics_listen:
            return None
        from connector.health.metrics import MetricsServer
        host, port = self.settings.metrics_listen_host, self.settings.metrics_listen_port
        try:
            server = MetricsServer(host, port, self.state, clock=self.clock, data_dir=self.settings.data_dir)
        except OSError as exc:
            raise ListenError(self.ini_path, "[metrics] listen", f"{host}:{port}", exc) from None
        server.start()
        return server

    def reload(self):
        """Load the configuration again; apply it if good, keep the running one if not."""
        if not self.reloader.reload(self._apply):
            for service in self.services:
                service.keep(self.reloader.error["error"])
        self.publish()

    def _apply(self, settings):
        for service in self.services:
            service.reload(settings)
        self.handler.is_own_address = OwnAddresses.of(settings).is_own
        self.children.signal_running(signal.SIGHUP)


def metrics_handler(handler, metrics):
    from connector.health.metrics import CountingHandler
    return CountingHandler(handler, metrics.intake)


def wait_for_database(settings, notifier=None, sleep=time.sleep):
    """Before the daemon starts: a PostgreSQL server that is away (down, restarting, not up
    yet at boot) is waited for, with backoff, rather than failing the start (systemd would
    give up after a few tries and leave the connector stopped); mail waits at the MTA
    meanwhile. One that answers and refuses us is the configuration's fault: raised."""
    if not isinstance(settings.database, PostgresURL):
        return
    notifier = notifier or Notifier()
    delay, since = 0.0, time.monotonic()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload meanwhile must not end it: the files are read after
    while True:
        try:
            probe(settings.database)
        except PostgresUnavailable as exc:
            if not exc.unreachable:
                raise
            delay = min(max(delay * 2, DATABASE_WAIT_FIRST), DATABASE_WAIT_MAX)
            if delay == DATABASE_WAIT_FIRST or delay == DATABASE_WAIT_MAX:  # the first and then every 30 s
                long = time.monotonic() - since > DATABASE_WAIT_WARN  # a typo in host or port waits forever too
                (log.error if long else log.warning)(
                    "storage.fault", cause=exc.problem, retry_in=delay, waiting="to start",
                    hint=f"still away after {DATABASE_WAIT_WARN:.0f} s: check host and port in {exc.file}" if long
                    else None)
            notifier.send(f"EXTEND_TIMEOUT_USEC={int((delay + 30) * 1e6)}",
                          f"STATUS=waiting for the database: {exc.problem}"[:200])
            sleep(delay)
            continue
        if delay:
            log.info("storage.recovered", after=round(time.monotonic() - since, 1))
        return


def run_daemon(settings, ini_path, with_worker=True):
    asyncio.run(Daemon(settings, ini_path, with_worker).main())
    return 0


def run_background(name, settings, partition=None):
    """Entry point of a background process (`connector worker|deliver`) started by the
    daemon (or by systemd): idle CPU class, stop on SIGTERM or when the daemon that started
    it dies, reload on SIGHUP, tell the daemon it runs once its store is open. A filing
    worker's `partition` (I, N): the share of the spool it files."""
    loop_class = BACKGROUND[name]
    options = {"partition": partition} if partition else {}
    priority.background()
    stop = threading.Event()
    worker = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.request_stop() if worker else stop.set())
    parent = parent_pid()

    def orphaned():  # the daemon died (kill -9): stop; its successor starts new children
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning(f"{name}.orphaned", parent=parent)
                stop.set()
                if worker:
                    worker.waker.poke()

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    try:
        worker = loop_class(settings, stop, **options)
    except AlreadyRunning as exc:
        log.error(f"{name}.already_running", error=str(exc))
        print(f"connector: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    signal.signal(signal.SIGHUP, lambda *_: worker.request_reload())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # the daemon started us with it blocked
    announce_ready()  # store open, configuration loaded: the daemon may tell systemd READY
    worker.run()
    return 0
