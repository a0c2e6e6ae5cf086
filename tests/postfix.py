"""A private Postfix in front of the connector, on loopback (recipe: TESTING.md).

What a site runs: Postfix accepts the customer's mail over SMTP, checks the
recipient against `virtual_mailbox_maps`, and hands the support and
notifications addresses to the connector through `transport_maps`, either
over LMTP or through the README's `pipe` service running the installed
`connector` console script as an unprivileged user. Every other address
(the customer's own) is a Maildir, so a bounce Postfix sends back lands
where a test can look for it. Its own config dir, queue and log; the system
Postfix is never touched.
"""

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
PIPE_USER = "nobody"  # the README's `user=connector`; Postfix never runs a pipe as root

MASTER_CF = """\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available():
    """None when a private Postfix can run here, else the reason it cannot."""
    if not os.path.exists(POSTFIX):
        return "postfix is not installed (make test installs it; needs root)"
    if os.geteuid() != 0:
        return "a private postfix needs root (its master runs as root)"
    return None


def runs_as_pipe_user(python):
    return subprocess.run(["runuser", "-u", PIPE_USER, "--", str(python), "-c", "pass"],
                          capture_output=True).returncode == 0


def site_venv(root):
    """A venv the pipe's user can run, holding the project's installed `connector` console
    script; returns the venv's bin directory.

    The test's own interpreter may live where that user cannot go (a pyenv under /root),
    so the venv is made with one it can run, of the same Python version, and reaches the
    project and its dependencies (already installed in the test's venv) through a .pth
    file. The console script is the one pip installed for the test's venv, its `#!` line
    pointed at the new venv: building a wheel here would need the network.
    """
    base = Path(sys.executable)
    if not runs_as_pipe_user(base):
        base = Path(shutil.which("python3", path="/usr/bin:/usr/local/bin") or "/usr/bin/python3")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    probe = subprocess.run([str(base), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != version or not runs_as_pipe_user(base):
        return None
    venv = Path(tempfile.mkdtemp(prefix="connector-venv-"))
    venv.chmod(0o755)
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{version}" / "site-packages"
    site.joinpath("connector-test.pth").write_text(f"{root}\n{sysconfig.get_paths()['purelib']}\n")
    installed = Path(sys.executable).with_name("connector").read_text()
    script = venv / "bin" / "connector"
    script.write_text(f"#!{venv / 'bin' / 'python'}\n" + installed.split("\n", 1)[1])
    script.chmod(0o755)
    return venv / "bin"


class Postfix:
    """One private Postfix instance in a temp dir (world-traversable, so that the pipe's
    user reaches the connector's files inside it)."""

    def __init__(self, port, connector_port=None, pipe_service=None):
        self.dir = Path(tempfile.mkdtemp(prefix="postfix-"))
        self.dir.chmod(0o755)
        self.port = port
        self.log = self.dir / "postfix.log"
        self.mail = self.dir / "mail"
        nobody = pwd.getpwnam(PIPE_USER)
        for name in ("queue", "data", "mail"):
            self.dir.joinpath(name).mkdir()
        os.chown(self.dir / "data", pwd.getpwnam("postfix").pw_uid, -1)
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        d = self.dir
        (d / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
myhostname = mx.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
virtual_mailbox_domains = example.com, acme.example
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = hash:{d}/vmailbox
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
transport_maps = hash:{d}/transport
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        (d / "master.cf").write_text(MASTER_CF.replace("smtp      inet", f"127.0.0.1:{port} inet", 1)
                                     + (pipe_service or ""))

    def maps(self, vmailbox, transport):
        """Write and postmap the two tables: {address: maildir} and {address: transport}."""
        for name, table in (("vmailbox", vmailbox), ("transport", transport)):
            path = self.dir / name
            path.write_text("".join(f"{key} {value}\n" for key, value in table.items()))
            subprocess.run([POSTMAP, "-c", str(self.dir), f"hash:{path}"], check=True)

    def postconf(self, *settings):
        subprocess.run(["postconf", "-c", str(self.dir), "-e", *settings], check=True)

    def start(self):
        subprocess.run([POSTFIX, "-c", str(self.dir), "check"], check=True, capture_output=True)
        subprocess.run([POSTFIX, "-c", str(self.dir), "start"], check=True, capture_output=True)
        return self

    def stop(self):
        subprocess.run([POSTFIX, "-c", str(self.dir), "stop"], capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(self.dir, ignore_errors=True)

    def flush(self):
        subprocess.run([POSTQUEUE, "-c", str(self.dir), "-f"], capture_output=True)

    def queue(self):
        """The queue IDs Postfix still holds (deferred or active)."""
        out = subprocess.run([POSTQUEUE, "-c", str(self.dir), "-j"], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def maildir(self, address):
        """Messages delivered to `address`'s Maildir (a bounce to the customer lands here)."""
        new = self.mail / address / "new"
        return sorted(new.iterdir()) if new.exists() else []
