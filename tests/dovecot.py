"""A private Dovecot for the scanner tests and the benchmark (recipe: TESTING.md).

One instance listens on loopback with a throwaway self-signed certificate:
`port` speaks plain IMAP and offers STARTTLS, `ssl_port` is implicit TLS.
Users live in a passwd-file that Dovecot re-reads when it changes, so every
test gets a fresh mailbox (`new_user`). XOAUTH2 goes through Dovecot's oauth2
passdb to a small token-introspection server started here (`Introspection`).
"""

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from imapclient import IMAPClient

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
PASSWORD = "secret"
USERS = 500  # users box1..box500 and shared1..shared500


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def available():
    """None when Dovecot can run here, else the reason it cannot."""
    if not os.path.exists(DOVECOT):
        return "dovecot is not installed (make test installs dovecot-imapd; needs root)"
    if os.geteuid() != 0:
        return "a private dovecot needs root here (mail store owned by the dovecot user)"
    if not shutil.which("openssl"):
        return "openssl is not installed"
    return None


class Introspection:
    """OAuth2 token introspection (RFC 7662) on loopback: token -> username."""

    def __init__(self):
        self.tokens = {}
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                token = (parse_qs(body).get("token") or [""])[0]
                outer.requests.append(token)
                user = outer.tokens.get(token)
                data = {"active": True, "username": user} if user else {"active": False}
                payload = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


CONF = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_location = maildir:{d}/mail/%u
first_valid_uid = 1
mailbox_idle_check_interval = 1 secs
auth_cache_size = 0
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u
}}
"""

OAUTH2 = """\
introspection_mode = post
introspection_url = http://127.0.0.1:{port}/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""


class Dovecot:
    def __init__(self, root=None):
        # Not under pytest's tmp dirs: they are 0700, and Dovecot's processes run as `dovecot`.
        self.own_dir = root is None
        self.dir = Path(root or tempfile.mkdtemp(prefix="connector-dovecot-"))
        self.port = free_port()
        self.ssl_port = free_port()
        self.introspection = Introspection()
        self._ids = itertools.count(1)
        self.conf = self.dir / "dovecot.conf"

    def start(self):
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        for sub in ("run", "mail", "state"):
            (d / sub).mkdir(exist_ok=True)
        shutil.chown(d / "mail", "dovecot", "dovecot")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                       check=True, capture_output=True)
        # Dovecot caches the passwd-file: every user a test may ask for is listed now.
        (d / "users").write_text("".join(f"{p}{n}@example.test:{{PLAIN}}{PASSWORD}\n"
                                         for p in ("box", "shared") for n in range(1, USERS + 1)))
        (d / "oauth2.conf.ext").write_text(OAUTH2.format(port=self.introspection.port))
        self.conf.write_text(CONF.format(d=d, port=self.port, ssl_port=self.ssl_port))
        subprocess.run([DOVECOT, "-c", str(self.conf)], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("dovecot did not start: " + self.log())
                time.sleep(0.05)

    def stop(self):
        subprocess.run([DOVEADM, "-c", str(self.conf), "stop"], capture_output=True)
        self.introspection.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        path = self.dir / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def new_user(self, prefix="box"):
        """A fresh user (and mailbox) with password PASSWORD; `prefix` is box or shared."""
        return f"{prefix}{next(self._ids)}@example.test"

    def maildir(self, user):
        return self.dir / "mail" / user

    def client(self, user):
        client = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=30)
        client.login(user, PASSWORD)
        return client

    def append(self, user, raw, folder="INBOX", flags=()):
        """Deliver like another client would; returns the new UID."""
        if not isinstance(raw, bytes):
            raw = raw.as_bytes()
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=flags)
        match = re.search(rb"APPENDUID \d+ (\d+)", response)
        return int(match.group(1))

    def messages(self, user, folder="INBOX"):
        """{uid: (flags, raw)} of a folder, read without changing flags."""
        with self.client(user) as client:
            if not client.folder_exists(folder):
                return {}
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            if not uids:
                return {}
            data = client.fetch(uids, [b"FLAGS", b"BODY.PEEK[]"])
        return {uid: (set(item[b"FLAGS"]), item[b"BODY[]"]) for uid, item in data.items()}

    def flags(self, user, folder="INBOX"):
        return {uid: flags for uid, (flags, _) in self.messages(user, folder).items()}

    def uidvalidity(self, user, folder="INBOX"):
        with self.client(user) as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def recreate(self, user, folder):
        """Delete and create `folder` again: a new UIDVALIDITY, UIDs start over."""
        with self.client(user) as client:
            client.delete_folder(folder)
            client.create_folder(folder)


# --- for the tests: a connector site next to the server --------------------


def dovecot_fixture():
    """Body of a pytest fixture: a running Dovecot, or a skip with the reason."""
    import pytest
    reason = available()
    if reason:
        pytest.skip(reason)
    server = Dovecot().start()
    yield server
    server.stop()


def scanner(dovecot, user, name="support", **keys):
    """A scanners.yaml entry for `user` on the private Dovecot (plain IMAP unless told)."""
    entry = {"name": name, "host": "127.0.0.1", "port": dovecot.port, "security": "none",
             "username": user, "password_file": "secrets/imap.pass", "interval": 60, "idle": False,
             "unmatched": "pipeline"}
    entry.update(keys)
    return entry


class Site:
    """A connector site (conftest.Instance) with config/scanners.yaml; scans and files in this process."""

    def __init__(self, path, scanners):
        from conftest import Instance
        self.inst = Instance(path, free_port())
        self.path = path
        (path / "secrets").mkdir(exist_ok=True)
        (path / "secrets" / "imap.pass").write_text(PASSWORD + "\n")
        self.write(scanners)
        from connector.settings import load_settings
        from connector.store.db import open_store
        self.settings = load_settings(self.inst.ini)
        open_store(self.settings.database)

    def write(self, scanners):
        import yaml
        (self.path / "config" / "scanners.yaml").write_text(yaml.safe_dump({"scanners": scanners}, sort_keys=False))

    def cfg(self, name="support"):
        from connector.scanners.config import scanners_of
        return next(c for c in scanners_of(self.settings) if c.name == name)

    def scan(self, name="support"):
        from connector.intake.imap import Scanner, connect, logout
        scanner = Scanner(self.cfg(name))
        try:
            return scanner.scan(connect(self.cfg(name)))
        finally:
            if scanner.client is not None:
                logout(scanner.client)

    def file(self):
        from connector.app import open_services
        from connector.pipeline.runner import Runner
        return Runner(open_services(self.settings)).drain()

    def spool(self):
        from connector.store.models import Processing, SpoolEntry
        rows = []
        for entry in SpoolEntry.select().order_by(SpoolEntry.id):
            done = Processing.get_or_none(Processing.spool_id == entry.id)
            rows.append({"id": entry.id, "intake": entry.intake, "hints": entry.hints,
                         "action": done.action if done else None,
                         "reason": done.reason if done else None, "raw": bytes(entry.raw)})
        return rows

    def tickets(self):
        from connector.store.models import Ticket
        return list(Ticket.select().order_by(Ticket.number))
