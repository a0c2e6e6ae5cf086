"""IMAP scanner benchmark against a private Dovecot (needs root and dovecot-imapd).

    .venv/bin/python bench/imap_bench.py [--messages 10000] [--new 10] [--chunk 500] [--rounds 3]
                                         [--python OTHER/.venv/bin/python]

Per round (other processes load a shared machine: the median of the rounds'
ratios is the figure, each ratio measured side by side in its round):

1. fills three identical mailboxes with N messages each (written straight into
   Dovecot's maildir),
2. the ceiling: a raw imapclient client logs in to the second mailbox, selects
   it, runs UID SEARCH and, per `--chunk` UIDs, FETCH BODY.PEEK[] then
   STORE +FLAGS.SILENT \\Seen -- the least any scanner must do,
3. times the scanner's first scan of the first mailbox: fetch, rules, spool
   commit, state rows, \\Seen for every message,
4. the ceiling again, on the third mailbox; prints scanner/ceiling (the
   scanner's rate as a share of the raw client's, the mean of the two ceiling
   runs around the scan: the load moves within seconds; 1.0 = as fast),
   with `--python`, another checkout's scanner (that interpreter's installed
   connector, in its own process) scans a fourth mailbox in the same round,
   before or after this one's (alternating), for a before/after in one run,
5. after the last round, delivers `--new` more messages over IMAP and times the
   incremental scan, which must fetch only the new UIDs (it exits 1 otherwise),
6. times IMAP IDLE: from an APPEND to the wake-up of a scanner idling on the
   mailbox (tests only check that IDLE, not the interval, files the mail).

The pipeline (filing tickets) is not part of the figures: it runs in the
daemon's worker process and is measured by bench/smtp_bench.py.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dovecot import PASSWORD, Dovecot, available  # noqa: E402

RULES = [
    {"name": "invoices", "conditions": {"any": [
        {"field": "subject", "op": "contains", "value": "invoice"},
        {"all": [{"field": "from", "op": "ends_with", "value": "@billing.test"},
                 {"field": "has_attachment", "op": "equals", "value": True}]}]},
     "actions": ["create_contact", {"create_or_update_ticket": {"status": "Billing"}}]},
    {"name": "newsletters", "conditions": {"field": "header:List-Id", "op": "not_matches", "value": "^$"},
     "actions": ["mark_read"]},
]


def message(number):
    msg = EmailMessage()
    msg["From"] = f"Customer {number} <customer{number % 500}@acme.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"{'Invoice' if number % 10 == 0 else 'Question'} number {number}"
    msg["Message-ID"] = f"<bench.{number}.{time.time_ns()}@acme.example>"
    msg.set_content(f"Hello,\n\nthis is message {number}.\n" + "Some text to read. " * 80 + "\n")
    return msg.as_bytes(policy=SMTP)


def fill_maildirs(dovecot, users, count):
    """Write the same `count` messages into each user's maildir new/, as the dovecot user owns it."""
    boxes = [dovecot.maildir(user) for user in users]
    for box in boxes:
        for sub in ("new", "cur", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    for number in range(count):
        raw = message(number)
        for box in boxes:
            (box / "new" / f"{stamp}.M{number}P{os.getpid()}.bench").write_bytes(raw)
    for box in boxes:
        for path in [box, *box.rglob("*")]:
            shutil.chown(path, "dovecot", "dovecot")


def site(root, dovecot, user):
    root = Path(root)
    (root / "config").mkdir(parents=True)
    (root / "secrets").mkdir()
    (root / "secrets" / "imap.pass").write_text(PASSWORD + "\n")
    (root / "config" / "staff.yaml").write_text("staff:\n  - name: Jane Doe\n    emails: [jane@example.com]\n")
    import yaml
    (root / "config" / "scanners.yaml").write_text(yaml.safe_dump({"scanners": [{
        "name": "bench", "host": "127.0.0.1", "port": dovecot.port, "security": "none", "username": user,
        "password_file": "secrets/imap.pass", "scan": "all_since_last", "idle": False,
        "unmatched": "pipeline", "rules": RULES}]}))
    ini = root / "connector.ini"
    ini.write_text("[connector]\npublic_address = support@example.com\n"
                   "notifications_address = notifications@example.com\ndatabase = var/connector.db\n"
                   "log_level = warning\n[outbound]\nmode = maildir\nmaildir = var/outgoing\n")
    return ini


def ceiling_scan(dovecot, user, chunk):
    """The raw client: (seconds, messages fetched and flagged \\Seen)."""
    from imapclient import SEEN, IMAPClient
    start = time.perf_counter()
    client = IMAPClient("127.0.0.1", dovecot.port, ssl=False, timeout=60)
    client.login(user, PASSWORD)
    client.select_folder("INBOX")
    uids = client.search(["UID", "1:*"])
    fetched = 0
    for first in range(0, len(uids), chunk):
        part = uids[first:first + chunk]
        data = client.fetch(part, [b"BODY.PEEK[]"])
        fetched += sum(1 for item in data.values() if item.get(b"BODY[]"))
        client.add_flags(part, [SEEN], silent=True)
    client.logout()
    return time.perf_counter() - start, fetched


def timed_ceiling(dovecot, user, chunk):
    seconds, count = ceiling_scan(dovecot, user, chunk)
    print(f"  ceiling (raw imapclient, {chunk} per FETCH/STORE): {seconds:7.2f}s  "
          f"fetched {count:6d}  ({count / seconds:,.0f} messages/s)")
    return seconds, count


def timed_scan(settings):
    from connector.intake.imap import Scanner, connect, logout
    from connector.scanners.config import scanners_of
    cfg = scanners_of(settings)[0]
    scanner = Scanner(cfg)
    start = time.perf_counter()
    try:
        result = scanner.scan(connect(cfg))
    finally:
        if scanner.client is not None:
            logout(scanner.client)
    return time.perf_counter() - start, result


# The first scan of another checkout's connector, in a process of its interpreter: only
# APIs an older checkout has too; prints the seconds of the scan alone.
OTHER_SCAN = """
import sys, time
from connector.intake.imap import Scanner, connect, logout
from connector.log import setup_logging
from connector.scanners.config import scanners_of
from connector.settings import load_settings
from connector.store.db import open_store
setup_logging("warning", stream=sys.stderr)
settings = load_settings(sys.argv[1])
open_store(settings.database)
cfg = scanners_of(settings)[0]
scanner = Scanner(cfg)
start = time.perf_counter()
result = scanner.scan(connect(cfg))
print(time.perf_counter() - start, result.fetched)
logout(scanner.client)
"""


def other_scan(python, settings_ini):
    """(seconds, fetched) of another checkout's first scan of the site at `settings_ini`."""
    done = subprocess.run([python, "-c", OTHER_SCAN, str(settings_ini)], capture_output=True, text=True,
                          cwd="/", check=True)
    seconds, fetched = done.stdout.split()
    return float(seconds), int(fetched)


def idle_wakeup(settings, dovecot, user, raw, last_uid):
    """Seconds from an APPEND to the IDLE wake-up of a connected scanner, and the reason it woke."""
    import dataclasses
    import threading

    from connector.intake.imap import connect, logout, wait_for_mail
    from connector.scanners.config import scanners_of
    cfg = dataclasses.replace(scanners_of(settings)[0], idle=True, interval=60)
    client = connect(cfg)
    woke = {}

    def idle():  # a wake-up before the APPEND (\\Recent of the earlier mail) does not count
        while "at" not in woke:
            reason = wait_for_mail(client, cfg, threading.Event(), last_uid)
            if "appended" in woke:
                woke.update(reason=reason, at=time.perf_counter())

    thread = threading.Thread(target=idle)
    thread.start()
    time.sleep(1.0)  # the scanner is in IDLE
    woke["appended"] = time.perf_counter()
    dovecot.append(user, raw)
    thread.join(70)
    logout(client)
    return woke["at"] - woke["appended"], woke["reason"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=500, help="UIDs per FETCH and STORE of the raw client")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling and first scan, side by side, this often")
    parser.add_argument("--python", help="another checkout's .venv/bin/python: its scanner is timed in each round too")
    args = parser.parse_args()
    reason = available()
    if reason:
        print(f"imap_bench: cannot run: {reason}", file=sys.stderr)
        return 2
    from connector.log import setup_logging
    from connector.store.models import ScannerFolder
    from connector.settings import load_settings
    from connector.store.db import open_store
    from connector.store.models import SpoolEntry
    setup_logging("warning", stream=sys.stderr)
    dovecot = Dovecot().start()
    work = tempfile.mkdtemp(prefix="imap-bench-")
    try:
        ratios, others, ok = [], [], True
        for number in range(1, args.rounds + 1):
            user, raw_users = dovecot.new_user(), (dovecot.new_user(), dovecot.new_user())
            other_user = dovecot.new_user() if args.python else None
            started = time.perf_counter()
            fill_maildirs(dovecot, (user, *raw_users, *([other_user] if other_user else [])), args.messages)
            print(f"round {number}: {3 + bool(other_user)} mailboxes filled with {args.messages} messages each in "
                  f"{time.perf_counter() - started:.1f}s  (load average {os.getloadavg()[0]:.2f})")
            ceiling_time, ceiling_count = timed_ceiling(dovecot, raw_users[0], args.chunk)
            root = Path(work) / f"round{number}"
            ini = site(root, dovecot, user)
            settings = load_settings(ini)
            open_store(settings.database)
            scans = ["this", "other"] if number % 2 else ["other", "this"]
            for which in scans if other_user else ["this"]:
                if which == "other":
                    other_time, other_count = other_scan(args.python, site(Path(work) / f"other{number}", dovecot,
                                                                           other_user))
                    print(f"  other checkout:   {other_time:7.2f}s  fetched {other_count:6d}")
                    continue
                first_time, first = timed_scan(settings)
                print(f"  first scan:       {first_time:7.2f}s  fetched {first.fetched:6d}  "
                      f"imported {first.imported:6d}  ({first.fetched / first_time:,.0f} messages/s)")
            after_time, after_count = timed_ceiling(dovecot, raw_users[1], args.chunk)
            ratios.append((ceiling_time + after_time) / 2 / first_time)
            print(f"  scanner/ceiling:  {ratios[-1]:.2f}" + (
                f"   other checkout/ceiling: {(ceiling_time + after_time) / 2 / other_time:.2f}" if other_user else ""))
            if other_user:
                others.append((ceiling_time + after_time) / 2 / other_time)
            ceiling_count = min(ceiling_count, after_count)
            if ceiling_count != args.messages or first.fetched != args.messages:
                print(f"imap_bench: FAILED: fetched {ceiling_count} (raw client) and {first.fetched} (scanner) "
                      f"of {args.messages}", file=sys.stderr)
                ok = False
        for number in range(args.new):
            dovecot.append(user, message(args.messages + number))
        second_time, second = timed_scan(settings)
        print(f"incremental scan: {second_time:7.2f}s  fetched {second.fetched:6d}  imported {second.imported:6d}")
        stored = SpoolEntry.select().count()
        print(f"spool entries: {stored}  (load average {os.getloadavg()[0]:.2f})")
        print(f"scanner/ceiling, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}  "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
        if others:
            print(f"other checkout/ceiling, median of {len(others)} rounds: {statistics.median(others):.2f}  "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in others)})")
        last_uid = max(item.last_uid for item in ScannerFolder.select())
        wakeup, reason = idle_wakeup(settings, dovecot, user, message(args.messages + args.new), last_uid)
        print(f"IDLE wake-up after an APPEND: {wakeup:.3f}s ({reason})")
        if second.fetched != args.new or stored != args.messages + args.new:
            print("imap_bench: FAILED: the incremental scan must fetch only the new UIDs", file=sys.stderr)
            ok = False
        return 0 if ok else 1
    finally:
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
