"""The delivery process's cost per outgoing mail, in-process: `Delivery.run_once` to smtp-sink.

Spools and files N smtp-source-like messages with `worker_profile`'s world (each a new
ticket with an auto-response and a distribution copy: 2N due outbox rows), then
delivers them with the delivery process's own `Delivery` to Postfix's smtp-sink over
loopback, printing CPU and wall milliseconds per outgoing mail, the main file's WAL
frames (4 KiB pages) written per outgoing mail, and the store's size per filed
message; `--profile` adds cProfile's top functions.

    python bench/delivery_profile.py [--messages 2000] [--profile] [--top 40]

Another checkout's connector: PYTHONPATH=/path/to/checkout python bench/delivery_profile.py
"""

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smtp_bench import SMTP_SINK, free_port, wait_port  # noqa: E402
from worker_profile import runner_for, spooled_world  # noqa: E402


def wal_frames(main_file, page_size=4096):
    """Frames in the main file's WAL (no checkpoint runs while delivery is measured)."""
    wal = main_file.with_name(main_file.name + "-wal")
    return wal.stat().st_size // (page_size + 24) if wal.exists() else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime", help="cProfile order: tottime, cumulative, ...")
    args = parser.parse_args()
    from connector.outbound.delivery import Delivery
    from connector.store.models import database
    workdir, settings, ids = spooled_world(args.messages)
    runner = runner_for(settings)
    for spool_id in ids:
        runner.process(spool_id)
    database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    main_file = Path(settings.database)
    spool_file = main_file.with_name(main_file.stem + "-spool.db")
    size = main_file.stat().st_size + spool_file.stat().st_size
    print(f"store after filing {args.messages}: {size / args.messages / 1024:.1f} KiB per message "
          f"(main {main_file.stat().st_size / args.messages / 1024:.1f}, "
          f"spool {spool_file.stat().st_size / args.messages / 1024:.1f})")
    relay_port = free_port()
    settings.relay_host, settings.relay_port = "127.0.0.1", relay_port
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{relay_port}", "256"])
    try:
        wait_port(relay_port, sink)
        delivery = Delivery(settings)
        database.execute_sql("PRAGMA wal_autocheckpoint = 0")  # count every frame delivery writes
        profile = cProfile.Profile() if args.profile else None
        frames_before = wal_frames(main_file)
        times, wall = os.times(), time.perf_counter()
        if profile:
            profile.enable()
        sent = 0
        while True:
            done = delivery.run_once()
            if not done:
                break
            sent += done
        if profile:
            profile.disable()
        after, wall = os.times(), time.perf_counter() - wall
        user, system = after.user - times.user, after.system - times.system
        frames = wal_frames(main_file) - frames_before
        delivery.close()
    finally:
        sink.terminate()
        sink.wait()
    print(f"{sent} outgoing mails: {1000 * (user + system) / sent:.3f} ms CPU ({1000 * user / sent:.3f} user, "
          f"{1000 * system / sent:.3f} system), {1000 * wall / sent:.3f} ms wall, "
          f"{frames / sent:.2f} WAL frames per mail{' (under cProfile)' if profile else ''}; "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    if profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
