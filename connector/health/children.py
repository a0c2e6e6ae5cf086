"""The daemon's background processes (`connector worker`, `connector deliver`):
start them, notice when they die, restart them with backoff.

Each child has a name (what `connector status`, the logs and the metrics call
it: `worker`, `worker-2`, ... for `[worker] processes` filing workers, `deliver`)
and the command line it runs (`worker --partition 2/3`).

A child is started as `python -P -c BOOTSTRAP`, which imports this very
`connector` package by its absolute path: the working directory is never on
its `sys.path`, so a `connector/` folder there (`/etc` holds
`/etc/connector`) cannot shadow the package.

A child says it runs by writing a byte on a pipe (fd in $CONNECTOR_READY_FD)
once its store is open and its configuration loaded. One that dies within
STABLE_AFTER seconds of starting is restarted after a delay that doubles
from RESTART_DELAY up to RESTART_DELAY_MAX; from CRASH_LOOP_AFTER such deaths
in a row it is crash-looping: `child.crash_loop` at error level on every
death, `connector status` degraded. One that ran longer is restarted after
RESTART_DELAY and starts counting afresh.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from connector.log import get_logger

log = get_logger("daemon")

RESTART_DELAY = 1.0        # seconds before the first restart
RESTART_DELAY_MAX = 60.0   # the backoff's cap
STABLE_AFTER = 30.0        # a child that ran this long was not crash-looping
CRASH_LOOP_AFTER = 3       # quick deaths in a row that make a crash loop
STOP_TIMEOUT = 12.0
READY_FD_ENV = "CONNECTOR_READY_FD"
PARENT_ENV = "CONNECTOR_DAEMON_PID"  # the daemon's pid: a child that starts after the daemon died knows it
SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
BOOTSTRAP = ("import sys; root = {root!r}; root in sys.path or sys.path.insert(0, root); "
             "from connector.cli import main; sys.exit(main())")

# Child states, as `connector status` shows them.
STARTING, RUNNING, RESTARTING, STOPPED = "starting", "running", "restarting", "stopped"


def restart_delay(quick_deaths):
    """Seconds to wait before restarting a child after `quick_deaths` quick deaths in a row."""
    return min(RESTART_DELAY * 2 ** max(quick_deaths - 1, 0), RESTART_DELAY_MAX)


def child_argv(ini_path, command):
    """The command line of a child running `command` (a tuple: the subcommand and its options)."""
    return [sys.executable, "-P", "-c", BOOTSTRAP.format(root=PACKAGE_ROOT), "-c", str(ini_path), *command]


def parent_pid():
    """In a child: the pid of the daemon that started it (read from the environment, so a
    child the daemon started just before it was killed sees that), else its parent's."""
    pid = os.environ.pop(PARENT_ENV, "")
    return int(pid) if pid.isdigit() else os.getppid()


def announce_ready():
    """In a child: tell the daemon that started it that it runs (nothing when started otherwise)."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if fd.isdigit():
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except OSError:
            pass


class Child:
    def __init__(self, name, command):
        self.name = name
        self.command = command  # the subcommand and its options
        self.proc = None
        self.ready_fd = None
        self.state = STOPPED
        self.restarts = 0
        self.quick_deaths = 0
        self.started_at = None      # monotonic, for the backoff
        self.started_wall = None    # wall clock, for status
        self.restart_at = None
        self.last_exit = None

    @property
    def crash_loop(self):
        return self.quick_deaths >= CRASH_LOOP_AFTER

    def snapshot(self):
        return {"pid": self.proc.pid if self.proc and self.state in (STARTING, RUNNING) else None,
                "state": self.state, "restarts": self.restarts, "crash_loop": self.crash_loop,
                "started_at": self.started_wall, "last_exit": self.last_exit,
                "retry_in": (round(max(self.restart_at - time.monotonic(), 0), 1)
                             if self.state == RESTARTING else None)}


class Children:
    """The daemon's children; `poll()` is called from the daemon's event loop a few times a second."""

    def __init__(self, ini_path, commands, clock=time.monotonic, wall=time.time):
        """`commands`: {name: command tuple}, the children to run."""
        self.ini_path = ini_path
        self.clock = clock
        self.wall = wall
        self.children = {name: Child(name, command) for name, command in commands.items()}
        self.stopping = False

    def start_all(self):
        for child in self.children.values():
            self._spawn(child)

    def _spawn(self, child):
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ONLY}  # only the daemon speaks to systemd
        env[READY_FD_ENV] = str(write_fd)
        env[PARENT_ENV] = str(os.getpid())
        # SIGHUP asks a running child to reload: the child starts with it blocked (the mask is
        # inherited) and unblocks it once its handler is in place. No preexec_fn: it can
        # deadlock a child forked from a process with threads.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            child.proc = subprocess.Popen(child_argv(self.ini_path, child.command), env=env, pass_fds=(write_fd,))
        except OSError as exc:  # no process could be made (EAGAIN, ENOMEM): try again later
            os.close(read_fd)
            now = self.clock()
            child.quick_deaths += 1
            delay = restart_delay(child.quick_deaths)
            child.state, child.restart_at = RESTARTING, now + delay
            log.error("child.spawn_failed", command=child.name, error=str(exc), retry_in=delay)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            os.close(write_fd)
        child.ready_fd = read_fd
        child.state, child.started_at, child.started_wall = STARTING, self.clock(), self.wall()
        log.info("child.spawned", command=child.name, pid=child.proc.pid, restarts=child.restarts)

    def poll(self):
        """Reap, restart when due, note readiness; returns whether anything changed."""
        changed = False
        now = self.clock()
        for child in self.children.values():
            if child.state in (STARTING, RUNNING) and child.proc.poll() is not None:
                self._exited(child, now)
                changed = True
            elif child.state == STARTING and self._read_ready(child):
                child.state = RUNNING
                log.info("child.running", command=child.name, pid=child.proc.pid)
                changed = True
            elif child.state == RUNNING and child.quick_deaths and now - child.started_at >= STABLE_AFTER:
                child.quick_deaths = 0
                changed = True
            elif child.state == RESTARTING and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                self._spawn(child)
                changed = True
        return changed

    def _read_ready(self, child):
        if child.ready_fd is None:  # closed without a byte: its exit is reaped next
            return False
        try:
            data = os.read(child.ready_fd, 1)
        except BlockingIOError:
            return False
        self._close_ready(child)
        return bool(data)

    def _close_ready(self, child):
        if child.ready_fd is not None:
            os.close(child.ready_fd)
            child.ready_fd = None

    def _exited(self, child, now):
        self._close_ready(child)
        code = child.proc.returncode
        child.last_exit = {"returncode": code, "at": self.wall()}
        if self.stopping:
            child.state = STOPPED
            return
        quick = now - child.started_at < STABLE_AFTER
        child.quick_deaths = child.quick_deaths + 1 if quick else 0
        delay = restart_delay(child.quick_deaths)
        child.state, child.restart_at = RESTARTING, now + delay
        log.error("child.exited", command=child.name, pid=child.proc.pid, returncode=code, retry_in=delay)
        if child.crash_loop:
            log.error("child.crash_loop", command=child.name, returncode=code, restarts=child.restarts,
                      deaths_in_a_row=child.quick_deaths, retry_in=delay,
                      hint=f"see the lines the child wrote before it died; `connector {' '.join(child.command)}` "
                           "runs it in the foreground")

    def all_running(self):
        return all(child.state == RUNNING for child in self.children.values())

    def only_starting(self):
        """The names of the children still starting, when every other one runs and none has
        died since the daemon started (a crash loop is no slow start); [] otherwise."""
        children = self.children.values()
        if all(child.state in (STARTING, RUNNING) and child.last_exit is None for child in children):
            return sorted(child.name for child in children if child.state == STARTING)
        return []

    def signal_running(self, sig):
        for child in self.children.values():
            if child.state in (STARTING, RUNNING) and child.proc.poll() is None:
                child.proc.send_signal(sig)

    def snapshot(self):
        return {name: child.snapshot() for name, child in self.children.items()}

    def stop(self):
        self.stopping = True
        self.signal_running(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT  # one wait for all: they stop side by side
        for child in self.children.values():
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            self._close_ready(child)
            child.state = STOPPED
