"""Regenerate tests/data/store-9f567d5.sql and store-9f567d5-spool.sql: a store written by
the code of commit 9f567d5, the last release before schema migrations existed.

    .venv/bin/python tests/data/make_store_9f567d5.py

It checks that commit out into a temporary git worktree, runs that code's daemon
(`connector run`, with its worker and delivery processes) against a loopback relay,
files a few mails (new tickets, a customer's reply, a staff reply, an internal note,
mail to the notifications address, an auto-reply, a non-ASCII sender) and, with the
relay stopped, one more, so the outbox holds sent rows and pending ones already tried; then it writes
`sqlite3 .dump` of the database and of the spool next to this script.
test_migrations.py upgrades that store with the current code.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COMMIT = "9f567d5"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def mails(make_mail):
    """(mail, relay up) in the order they are sent."""
    return [
        (make_mail(subject="Printer broken", sender="ann@acme.example", name="Ann Archer"), True),
        (make_mail(subject="Re: [Ticket #1] Printer broken", sender="ann@acme.example",
                   body="It still prints blank pages.\n"), True),
        (make_mail(subject="Re: [Ticket #1] Printer broken", sender="jane@example.com", name="Jane Doe",
                   body="Please try a new cartridge.\n"), True),
        (make_mail(subject="*123* [Ticket #1] Printer broken", sender="bob@example.com",
                   body="Cartridges are in the second drawer.\n"), True),
        (make_mail(subject="Your invoice", sender="billing@vendor.example", to="notifications@example.com"), True),
        (make_mail(subject="Out of office", sender="robot@beta.example",
                   headers={"Auto-Submitted": "auto-replied"}), True),
        (make_mail(subject="Zähler defekt", sender="jörg@beta.example", name="Jörg Müller",
                   body="Der Zähler zählt nicht.\n"), False),
    ]


def file_mail(site):
    """In the old code's process: run its daemon over `site` and file the mails."""
    import time

    from conftest import Instance, Sink, make_mail, wait_for
    sink = Sink()
    sink.start()
    inst = Instance(site, sink.port)
    inst.start()
    try:
        for count, (mail, relay_up) in enumerate(mails(make_mail), 1):
            if not relay_up and sink.controller:
                inst.wait_delivered()
                sink.stop()
            inst.send(mail)
            inst.wait_processed(count)
        wait_for(lambda: any(row["status"] == "pending" and row["attempts"] for row in inst.json("outbox", "list")), 30,
                 what="an outgoing mail tried and still pending")
        time.sleep(0.5)
    finally:
        inst.stop()
        sink.stop()


def dump(database, target):
    result = subprocess.run(["sqlite3", str(database), ".dump"], capture_output=True, check=True)
    target.write_bytes(result.stdout)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--file-mail":
        file_mail(Path(sys.argv[2]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="store-9f567d5-"))
    old = work / "code"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), COMMIT], check=True)
    try:
        env = dict(os.environ, PYTHONPATH=f"{old}{os.pathsep}{old / 'tests'}")
        subprocess.run([sys.executable, __file__, "--file-mail", str(work / "site")], env=env, cwd=old,
                       check=True)
        dump(work / "site" / "var" / "connector.db", HERE / f"store-{COMMIT}.sql")
        dump(work / "site" / "var" / "connector-spool.db", HERE / f"store-{COMMIT}-spool.sql")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
