"""Fixtures that run the real thing: the daemon as a process, an aiosmtpd
relay sink on loopback, SQLite files in a temp dir (or a database of a
private PostgreSQL, tests/pg.py), the CLI as a subprocess.

The store's backend is a parameter: every test that uses the store (an
`Instance`, the `instance` or `daemon` fixture, `open_store`, or a helper or
fixture that does, found by `store_users` in the test's code) runs once per
backend of `--backends` (or CONNECTOR_TEST_BACKENDS; default
sqlite,postgresql); on PostgreSQL an `Instance` gets a fresh database,
already at the latest schema, unless the test names its own. A test about
SQLite's own files, locks or WAL is marked `sqlite_only`; tests/test_postgres*.py
name their PostgreSQL databases themselves and run once.
"""

import ast
import functools
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")
STORE_WORDS = {"Instance", "open_store"}  # what uses a store; `instance` and `daemon` use Instance
_backend = {}  # the running module group's: {"name", "new_database"} (set by the `backend` fixture)

STAFF_YAML = """\
staff:
  - name: Jane Doe
    emails: [jane@example.com, jane.doe@home.example]
    receive: manager
  - name: Bob Tech
    emails: [bob@example.com]
    receive: all
  - name: Carl Sub
    emails: [carl@example.com]
    receive: subscribed
  - name: Olga Off
    emails: [olga@example.com]
    receive: "off"
  - name: Ina Inactive
    emails: [ina@example.com]
    active: false
    receive: all
  - name: Amy Accounts
    emails: [amy@example.com]
    receive: account_manager
"""

ACCOUNTS_YAML = """\
accounts:
  - name: Acme
    domains: [acme.example]
    manager: jane@example.com
  - name: Beta
    domains: [beta.example]
    manager: amy@example.com
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def policy(pid):
    """The scheduling policy of a process's main thread, from /proc (field 41 of stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[38])


def children_of(pid):
    """{pid: the command word after the ini path} of the processes whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                argv = (entry / "cmdline").read_bytes().decode().split("\0")
                found[int(entry.name)] = argv[argv.index("-c", argv.index("-P") + 2) + 2]
        except (OSError, ValueError, IndexError):
            continue
    return found


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def make_mail(subject="Hello", sender="ann@acme.example", to="support@example.com", cc=None,
              body="Hello,\nplease help.\n", message_id=None, headers=None, name=None):
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>" if name else sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<{time.time_ns()}.{os.getpid()}@test.example>"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg


class Sink:
    """A real SMTP relay on loopback that records what it receives."""

    class Handler:
        def __init__(self, sink):
            self.sink = sink

        async def handle_DATA(self, server, session, envelope):
            self.sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            return "250 OK"

    def __init__(self, port=None):
        self.port = port or free_port()
        self.messages = []
        self.controller = None

    def start(self):
        self.controller = Controller(self.Handler(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None

    def to(self, address):
        return [m for m in self.messages if address in m[1]]


class PostgresConnection:
    """psycopg with sqlite3's manners, for `Instance.connect`: `?` placeholders, and a
    `with` block that commits (rolls back on an exception) and closes."""

    def __init__(self, url):
        import psycopg
        self.conn = psycopg.connect(url)

    def execute(self, sql, params=()):
        from connector.store.dialect import placeholders
        return self.conn.execute(placeholders(sql), params or None)

    def executemany(self, sql, rows):
        from connector.store.dialect import placeholders
        with self.conn.cursor() as cursor:
            cursor.executemany(placeholders(sql), rows)

    def commit(self):
        self.conn.commit()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.conn.commit()
        else:
            self.conn.rollback()
        self.conn.close()


class Instance:
    """A connector installation in a temp dir: ini, config/, database; CLI and daemon."""

    def __init__(self, path, relay_port, **ini):
        self.path = Path(path)
        self.port = free_port()
        self.path.joinpath("config").mkdir(parents=True, exist_ok=True)
        self.path.joinpath("config", "staff.yaml").write_text(STAFF_YAML)
        self.path.joinpath("config", "accounts.yaml").write_text(ACCOUNTS_YAML)
        if _backend.get("new_database") and "connector__database" not in ini:
            ini = {"connector__database": _backend["new_database"](), "connector__data_dir": "var", **ini}
        sections = {
            "connector": {"public_address": "support@example.com",
                          "notifications_address": "notifications@example.com",
                          "database": "var/connector.db", "log_level": "debug"},
            "smtp": {"listen": f"127.0.0.1:{self.port}", "max_message_size": "200000"},
            "outbound": {"mode": "smtp", "relay": f"127.0.0.1:{relay_port}", "retry_initial": "0.2",
                         "retry_max": "0.5", "timeout": "5"},
        }
        for key, value in ini.items():
            section, _, name = key.partition("__")
            sections.setdefault(section, {})[name] = value
        self.database = sections["connector"]["database"]
        self.ini = self.path / "connector.ini"
        self.ini.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                                    for s, keys in sections.items()))
        self.proc = None
        self.log = self.path / "daemon.log"
        self.run_as = None  # a user name: the daemon and the CLI run as it (the site behind Postfix)
        self.python = sys.executable

    def cli(self, *args, input=None, check=True):
        result = subprocess.run([self.python, "-m", "connector", "-c", str(self.ini), *args],
                                input=input, capture_output=True, cwd=self.path, timeout=60, user=self.run_as)
        if check and result.returncode != 0:
            raise AssertionError(f"connector {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def json(self, *args):
        return json.loads(self.cli(*args, "--json").stdout)

    def start(self):
        self.proc = subprocess.Popen([self.python, "-m", "connector", "-c", str(self.ini), "run"],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     cwd=self.path, start_new_session=True, user=self.run_as)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, 15, what="daemon to listen")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc = None

    def kill9(self):
        """SIGKILL the daemon and its worker at once (the whole process group)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def send(self, msg, sender=None, rcpts=None):
        """Send an EmailMessage, or raw bytes (then `sender` and `rcpts` are needed)."""
        import smtplib
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            if isinstance(msg, bytes):
                return smtp.sendmail(sender, rcpts, msg)
            return smtp.send_message(msg, from_addr=sender, to_addrs=rcpts)

    def tickets(self):
        return self.json("tickets", "list")

    def ticket(self, number):
        return self.json("tickets", "show", str(number))

    def inbound(self):
        return self.json("inbound", "list")

    def outbox(self):
        return self.json("outbox", "list")

    def open_store(self, **options):
        """Bind this process's models to the instance's store (either backend), as its processes do."""
        from connector.settings.values import PostgresURL
        from connector.store.db import open_store
        return open_store(PostgresURL.of(self.database) or self.path / "var" / "connector.db", **options)

    def connect(self):
        """A connection to the store for what a test reads or sets up behind the daemon's back,
        on either backend: `?` placeholders, the spool as schema `spool`, committed when the
        `with` block ends (as sqlite3's connections are)."""
        if self.database.startswith("postgresql://"):
            return PostgresConnection(self.database)
        import sqlite3
        conn = sqlite3.connect(self.path / "var" / "connector.db")
        conn.execute(f"attach database '{self.path / 'var' / 'connector-spool.db'}' as spool")
        return conn

    def rows(self, sql):
        """Rows of a query on the store, read-only; [] while the store does not exist yet."""
        if not self.database.startswith("postgresql://") and not (self.path / "var" / "connector.db").exists():
            return []
        with self.connect() as conn:
            try:
                return conn.execute(sql).fetchall()
            except Exception as exc:
                if "spool" in str(exc):  # the daemon has not made its tables yet
                    return []
                raise

    def spool_states(self):
        return self.rows("select s.id, coalesce(p.state, 'queued'), p.action, p.reason from spool.spool s "
                         "left join processing p on p.spool_id = s.id order by s.id")

    def wait_processed(self, count, timeout=15):
        return wait_for(lambda: (s := self.spool_states()) and len(s) >= count
                        and all(row[1] != "queued" for row in s) and s, timeout, what=f"{count} processed")

    def wait_delivered(self, timeout=15):
        """Every outbox row attempted to the end (none pending or deferred). Polled with a query
        on the store, not `outbox list` (a CLI process per look cost the suite a core)."""
        def waiting():
            try:
                return self.rows("SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'deferred')")
            except Exception as exc:
                if "no such table" in str(exc):  # the daemon has not made its store yet
                    return []
                raise
        return wait_for(lambda: waiting() in ([], [(0,)]), timeout, what="outbox delivered")


@pytest.fixture
def sink():
    s = Sink()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def instance(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    yield inst
    inst.stop()


@pytest.fixture
def daemon(instance):
    return instance.start()


def pytest_addoption(parser):
    parser.addoption("--backends", default=os.environ.get("CONNECTOR_TEST_BACKENDS", "sqlite,postgresql"),
                     help="comma-separated store backends (sqlite,postgresql) the store-using tests run on")


def pytest_configure(config):
    config.addinivalue_line("markers", "empty_store: on PostgreSQL, the test's database starts without the "
                            "connector's tables (the default is a database already at the latest schema)")
    config.addinivalue_line("markers", "sqlite_only(reason): about SQLite's own files, locks or WAL; not run on "
                            "PostgreSQL (tests/test_postgres*.py has the PostgreSQL side)")


def pytest_generate_tests(metafunc):
    names = [b.strip() for b in metafunc.config.getoption("backends").split(",") if b.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"--backends: unknown {', '.join(sorted(unknown))} (known: {', '.join(BACKENDS)})")
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only")
    if sqlite_only and not sqlite_only.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs its reason, "
                                "@pytest.mark.sqlite_only(\"what of SQLite it is about\")")
    if "backend" not in metafunc.fixturenames or names == ["sqlite"]:
        return
    if sqlite_only or metafunc.module.__name__.startswith("test_postgres"):
        return  # SQLite's own files; the PostgreSQL tests name their database themselves
    if uses_store(metafunc.function, metafunc.fixturenames, Path(metafunc.module.__file__)):
        metafunc.parametrize("backend", names, indirect=True)


def _identifiers(tree):
    """The names a piece of code mentions: variables, attributes, arguments (fixtures)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
    return found


@functools.cache
def store_users(path):
    """The top-level names of a test file (or helper module beside this one) that use the
    store, directly or through another such name, one imported from a helper module, or a
    fixture of this file."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    inherited = set() if Path(path) == Path(__file__) else store_users(Path(__file__))
    uses, imported = {}, set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and (Path(path).parent / f"{node.module}.py").exists():
            helper = store_users(Path(path).parent / f"{node.module}.py")
            imported |= {alias.asname or alias.name for alias in node.names if alias.name in helper}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            uses[node.name] = _identifiers(node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    uses[target.id] = _identifiers(node.value)
    found = STORE_WORDS | imported | (inherited - set(uses))
    while True:
        more = {name for name, words in uses.items() if name not in found and words & found}
        if not more:
            return found & (set(uses) | imported | inherited)
        found |= more


def uses_store(function, fixturenames, path):
    """Whether a test uses the store: its fixtures or its code reach a store user."""
    users = store_users(path) | STORE_WORDS
    if users & set(fixturenames):
        return True
    try:
        words = _identifiers(ast.parse(textwrap.dedent(inspect.getsource(function))))
    except (OSError, TypeError, SyntaxError):
        return True  # cannot tell: run it on each backend
    return bool(words & users)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL for the session (tests/pg.py); skipped with the reason when it cannot run."""
    import pg
    reason = pg.available()
    if reason:
        pytest.skip(reason)
    server = pg.PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(postgres_server):
    """The URL of a fresh, empty PostgreSQL database."""
    return postgres_server.new_database()


@pytest.fixture(scope="module", autouse=True)
def backend(request):
    """The store backend of this test: "sqlite", or "postgresql" for its second run.

    Module-scoped, so pytest runs a module's tests backend by backend, and a module-scoped
    fixture that makes an `Instance` (a world of the module's tests) takes `backend` as
    an argument to be made once per backend."""
    name = getattr(request, "param", "sqlite")
    if name == "postgresql":
        server = request.getfixturevalue("postgres_server")
        _backend.update(name=name, new_database=functools.partial(server.new_database, migrated=True))
    yield name
    _backend.clear()
    from connector.store.models import database
    if database.obj is not None:  # what a test bound in this process is not the next module's store
        database.close()
        database.initialize(None)


@pytest.fixture(autouse=True)
def empty_store(request, backend):
    """A test marked `empty_store` gets, on PostgreSQL, a database without the connector's
    tables (no store yet), as an SQLite test gets no file."""
    made = _backend.get("new_database")
    if made and request.node.get_closest_marker("empty_store"):
        _backend["new_database"] = request.getfixturevalue("postgres_server").new_database
    yield
    if made:
        _backend["new_database"] = made
