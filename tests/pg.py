"""A private PostgreSQL for the tests (recipe: TESTING.md, "A real PostgreSQL, throwaway").

One cluster per test session (per xdist worker): `initdb` into a temp dir as
the unprivileged `postgres` user, listening on a free loopback port (and a
socket in the temp dir, never the system's). Each test gets its own database
(`new_database`), a file copy of a template (tens of milliseconds): the
cluster's empty template1, or with `migrated=True` a template already at the
latest schema (made once per cluster by `connector.store.db.open_store` in a
child process, and named after a digest of the migration list, so a changed
list never reuses an older one). `stop()` / `start()` take the server away and
back, for the fault tests.

What the cluster gives up for speed (`FAST`), and why the tests still mean what
they say: fsync and full-page writes protect against the machine losing power,
which no test does. Every commit is still written to the OS before it returns
(synchronous_commit stays on): a connector killed at any point, and a server
stopped in any mode (`-m immediate` too), keep all that PostgreSQL answered
COMMIT for, as a durable server would. What a durability test checks is the
connector's order (committed, then 250): fsync does not change that order.
"""

import glob
import hashlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

USER = "postgres"  # the unprivileged user Debian's package creates; the cluster's superuser too
FAST = ("fsync=off", "full_page_writes=off", "max_connections=200", "shared_buffers=32MB")


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
        self.template = None  # the migrated template's name, once made
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")

    def _run(self, tool, *args, check=True):
        return subprocess.run(["runuser", "-u", USER, "--", os.path.join(self.bin, tool), *args],
                              capture_output=True, text=True, check=check, timeout=60)

    def start(self):
        options = " ".join(f"-c {setting}" for setting in FAST)
        self._run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {options}", "start")
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

    def new_database(self, migrated=False):
        """A fresh database: its URL. Empty, or with `migrated` at the latest schema (as a
        store the connector made and nobody wrote to)."""
        name = f"t{os.getpid()}_{next(self.names)}_{int(time.time() * 1000) % 100000}"
        template = self.migrated_template() if migrated else "template1"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def migrated_template(self):
        """The name of this cluster's template at the latest schema, made the first time."""
        if self.template is None:
            from connector.store.migrations import MIGRATIONS
            digest = hashlib.sha256("\n".join(name for name, _ in MIGRATIONS).encode()).hexdigest()[:12]
            name = f"migrated_{digest}"
            self.sql(f'CREATE DATABASE "{name}" TEMPLATE template1')
            # a child process, so this one's models stay unbound; it exits, so no session
            # is left on the template (CREATE DATABASE ... TEMPLATE refuses while one is)
            subprocess.run([sys.executable, "-c", "import sys\nfrom connector.settings.values import PostgresURL\n"
                            "from connector.store.db import open_store\nopen_store(PostgresURL.of(sys.argv[1])).close()",
                            self.url(name)], check=True, capture_output=True, timeout=120)
            self.template = name
        return self.template
