"""A private PostgreSQL for the tests (recipe: TESTING.md, "A real PostgreSQL, throwaway").

One cluster per test session: `initdb` into a temp dir as the unprivileged
`postgres` user, listening on a free loopback port (and a socket in the temp
dir, never the system's). Each test gets its own database (`new_database`),
made from the cluster's empty template1 (a file copy: tens of milliseconds).
`stop()` / `start()` take the server away and back, for the fault tests.
"""

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

USER = "postgres"  # the unprivileged user Debian's package creates; the cluster's superuser too


def _bin_dir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def available():
    """None when a private PostgreSQL can run here, else the reason it cannot."""
    if _bin_dir() is None:
        return "postgresql is not installed (make test installs it via tests/install-system-deps.sh; needs root)"
    if os.geteuid() != 0:
        return "a private PostgreSQL is started as the postgres user, which needs root here"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER} user (Debian's postgresql package creates it)"
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = _bin_dir()
        self.dir = tempfile.mkdtemp(prefix="connector-pg-")
        shutil.chown(self.dir, USER)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.names = itertools.count(1)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")

    def _run(self, tool, *args, check=True):
        return subprocess.run(["runuser", "-u", USER, "--", os.path.join(self.bin, tool), *args],
                              capture_output=True, text=True, check=check, timeout=60)

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        return self

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-w", "-m", mode, "stop", check=False)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, name):
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def sql(self, statement, database="postgres"):
        """Run one statement as the superuser (psycopg, autocommit); returns the rows, if any."""
        import psycopg
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else None

    def new_database(self):
        """A fresh, empty database: its URL."""
        name = f"t{os.getpid()}_{next(self.names)}_{int(time.time() * 1000) % 100000}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE template1')
        return self.url(name)
