"""A large store: idle cost, listing and size, built through the real daemon.

The store (default 200,000 messages in 50,000 tickets: a new request from
each customer, then follow-ups with the ticket tag from the same customer)
is built once over SMTP through `connector run` (worker and delivery to
Postfix's smtp-sink) and cached in --cache; later runs reuse it. Then, for
each --python given (this checkout's and, say, an older checkout's, in the
same run), a daemon runs on the cached store and the bench prints:
  idle CPU       share of one core used by the daemon and its children
                 over --idle seconds with no mail arriving
  tickets list   wall time of `tickets list --limit 100 --json` (the whole
                 list for a connector without --limit), and `tickets show`
  size           bytes of the store files per message
Targets (issue 14): idle < 1% of a core; `tickets list --limit 100 --json`
< 0.3 s at 50,000 tickets.

    python bench/store_bench.py [--messages 200000] [--tickets 50000] [--python PY ...]
"""

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_bench import Client  # noqa: E402
from smtp_bench import SMTP_SINK, Progress, free_port, wait_port, write_config  # noqa: E402

CONCURRENCY = 32
TICKS = os.sysconf("SC_CLK_TCK")


def body(sender, subject, index):
    return (f"From: {sender}\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{index}.store@client.test>\r\n\r\n"
            f"Hello,\r\nmessage {index} about this problem.\r\n" + "Some detail of the case.\r\n" * 30).encode()


async def send_all(port, mails):
    queue = asyncio.Queue()
    for mail in mails:
        queue.put_nowait(mail)

    async def sender():
        client = await Client.open(port)
        while not queue.empty():
            await client.send(queue.get_nowait())
        client.writer.close()

    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))


def start_daemon(python, workdir, port):
    relay_port = free_port()
    write_config(workdir, port, relay_port, python)
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{relay_port}", "256"])
    daemon = subprocess.Popen([python, "-m", "connector", "-c", str(workdir / "connector.ini"), "run"],
                              stdout=open(workdir / "daemon.log", "ab"), stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_port(relay_port, sink)
        wait_port(port, daemon, timeout=120)
    except BaseException:
        stop(daemon, sink)
        raise
    return daemon, sink


def stop(*procs):
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


def wait_drained(db, messages):
    progress = Progress(db)
    while not progress.drained(messages, 0)[0]:
        time.sleep(1)
    while progress.one("select 1 from outbox where status = 'pending' limit 1"):
        time.sleep(1)
    progress.close()


def build(cache, messages, tickets):
    if (cache / "built").exists():
        return
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    port = free_port()
    daemon, sink = start_daemon(sys.executable, cache, port)
    db = cache / "var" / "connector.db"
    try:
        start = time.perf_counter()
        asyncio.run(send_all(port, [body(f"customer{i}@acme.example", f"Problem {i}", i) for i in range(tickets)]))
        wait_drained(db, tickets)
        with sqlite3.connect(db) as conn:
            numbers = conn.execute("select t.number, c.email from ticket t join contact c on c.id = t.contact_id"
                                   ).fetchall()
        follow = [body(email, f"Re: [Ticket #{number}] Problem", tickets + k * len(numbers) + n)
                  for k in range((messages - tickets) // max(1, len(numbers)))
                  for n, (number, email) in enumerate(numbers)]
        asyncio.run(send_all(port, follow))
        wait_drained(db, tickets + len(follow))
        print(f"built {tickets + len(follow)} messages in {len(numbers)} tickets in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    finally:
        stop(daemon, sink)
    (cache / "built").write_text("yes\n")


def family_cpu(pid):
    """CPU seconds used so far by `pid` and its children."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def timed(cmd, cwd):
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True)
    return time.perf_counter() - start, done


def measure(python, cache, args):
    port = free_port()
    daemon, sink = start_daemon(python, cache, port)
    ini = str(cache / "connector.ini")
    connector = [python, "-m", "connector", "-c", ini]
    try:
        time.sleep(args.settle)
        before = family_cpu(daemon.pid)
        time.sleep(args.idle)
        idle = (family_cpu(daemon.pid) - before) / args.idle
        listed, done = timed(connector + ["tickets", "list", "--limit", "100", "--json"], cache)
        what = "tickets list --limit 100 --json"
        if done.returncode != 0:
            listed, done = timed(connector + ["tickets", "list", "--json"], cache)
            what = "tickets list --json (no --limit in this version)"
        count = len(json.loads(done.stdout or b"[]"))
        shown, _ = timed(connector + ["tickets", "show", "1", "--json"], cache)
    finally:
        stop(daemon, sink)
    files = [p for p in (cache / "var").glob("connector*.db*") if ".bak-" not in p.name]  # not migration backups
    size = sum(p.stat().st_size for p in files)
    with sqlite3.connect(cache / "var" / "connector.db") as conn:
        messages = conn.execute("select count(*) from message where direction = 'in'").fetchone()[0]
        tickets = conn.execute("select count(*) from ticket").fetchone()[0]
    print(f"{python}: {messages} messages in {tickets} tickets | idle CPU {idle * 100:.2f}% of a core | "
          f"{what}: {listed:.2f} s ({count} rows) | tickets show 1: {shown:.2f} s | "
          f"store {size / messages / 1024:.1f} KiB per message", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the built store is kept (default /var/tmp/connector-store-MESSAGES)")
    parser.add_argument("--python", action="append", help="interpreter(s) whose connector is measured")
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle CPU measured")
    parser.add_argument("--settle", type=float, default=5, help="seconds after start before measuring")
    args = parser.parse_args()
    cache = args.cache or Path(f"/var/tmp/connector-store-{args.messages}-{args.tickets}")
    build(cache, args.messages, args.tickets)
    for python in args.python or [sys.executable]:
        measure(str(Path(python).absolute()), cache, args)


if __name__ == "__main__":
    main()
