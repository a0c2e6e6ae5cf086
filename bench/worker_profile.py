"""The filing worker's cost per message, in-process: `Runner.process` over stored messages.

Spools N smtp-source-like messages (4 KiB body, one sender, each a new ticket with
an auto-response and a distribution copy, as `smtp_bench` sends) into a fresh store
with `smtp_bench`'s configuration, then files them with the worker's own Runner,
printing CPU milliseconds per message; `--profile` adds cProfile's top functions.
`--processes 1,2` instead files a fresh store each time with that many worker
processes (Runners with their partitions, as `[worker] processes` runs them), in
the same run: messages/s of wall time (the filing alone, nothing else running
but what loads the machine) and CPU ms per message of all of them together.

    python bench/worker_profile.py [--messages 1500] [--profile] [--top 40] [--processes 1,2]

Another checkout's connector: PYTHONPATH=/path/to/checkout python bench/worker_profile.py
"""

import argparse
import cProfile
import multiprocessing
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smtp_bench import write_config  # noqa: E402


def message(index, size=4096):
    lines, length, n = [], 0, 1
    while length < size:
        line = f"{n}" + "X" * (78 - len(str(n)))
        lines.append(line)
        length += len(line) + 2
        n += 1
    return (f"From: <a@client.test>\r\nTo: <support@example.test>\r\nDate: Tue, 1 Dec 2026 16:29:22 +0000\r\n"
            f"Message-Id: <{index:x}.0003.0000@vm>\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()


def open_world(workdir):
    """The settings of a store in `workdir`, opened as the daemon's worker opens it, logging as it does."""
    from connector.checks import load_checked
    from connector.log import setup_logging
    from connector.store.db import open_store
    from connector.worker import FILING_CHECKPOINT_PAGES
    settings = load_checked(workdir / "connector.ini")
    setup_logging(settings.log_level, stream=open(workdir / f"worker-{os.getpid()}.log", "w"), json=True)
    open_store(settings.database, synchronous="normal", checkpoint_pages=FILING_CHECKPOINT_PAGES)
    return settings


def runner_for(settings, partition=None):
    from connector.pipeline.runner import Runner
    from connector.pipeline.services import Services
    from connector.store.db import load_hmac_key
    from connector.workqueue import triage
    options = {"partition": partition} if partition else {}  # a checkout before [worker] processes has none
    return Runner(Services(settings, load_hmac_key(settings.data_dir), triage=triage), **options)


def spooled_world(count):
    from connector.store.db import load_hmac_key
    from connector.store.spool import store_message
    workdir = Path(tempfile.mkdtemp(prefix="connector-profile-"))
    write_config(workdir, 2525, 2526)
    settings = open_world(workdir)
    load_hmac_key(settings.data_dir)  # before the worker processes start, as the daemon makes it
    ids = [store_message(message(i), mail_from="a@client.test", rcpt_to=["support@example.test"], intake="smtp")
           for i in range(count)]
    return workdir, settings, ids


def _file_share(workdir, partition, start, results):
    from connector.store.queries import unprocessed_spool_ids
    runner = runner_for(open_world(workdir), partition)
    start.wait()
    cpu = time.process_time()
    while unprocessed_spool_ids(0, 1, partition):
        runner.drain()
    results.put(time.process_time() - cpu)


def parallel(args, count):
    """Messages/s and CPU ms/message of `count` worker processes filing the same stored burst."""
    workdir, _, _ = spooled_world(args.messages)
    start, results = multiprocessing.Event(), multiprocessing.Queue()
    partitions = [(index, count) for index in range(1, count + 1)] if count > 1 else [None]
    procs = [multiprocessing.Process(target=_file_share, args=(workdir, p, start, results)) for p in partitions]
    for proc in procs:
        proc.start()
    time.sleep(2)  # imports and the store opened in each
    began = time.perf_counter()
    start.set()
    cpu = sum(results.get() for _ in procs)
    wall = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return args.messages / wall, 1000 * cpu / args.messages


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--processes", help="comma-separated worker counts to compare, e.g. 1,2")
    args = parser.parse_args()
    if args.processes:
        print(f"load average before: {open('/proc/loadavg').read().split()[0]}")
        for count in map(int, args.processes.split(",")):
            rate, ms = parallel(args, count)
            print(f"{count} worker process(es): {rate:5.0f} msg/s filed, {ms:.2f} ms CPU per message (all together)",
                  flush=True)
        print(f"load average after: {open('/proc/loadavg').read().split()[0]}")
        return
    workdir, settings, ids = spooled_world(args.messages)
    runner = runner_for(settings)
    runner.process(ids[0])  # imports, rule files and templates loaded on first use
    profile = cProfile.Profile() if args.profile else None
    start = time.process_time()
    if profile:
        profile.enable()
    for spool_id in ids[1:]:
        runner.process(spool_id)
    if profile:
        profile.disable()
    used = time.process_time() - start
    print(f"{1000 * used / (len(ids) - 1):.2f} ms CPU per message ({len(ids) - 1} filed"
          f"{', under cProfile' if profile else ''})")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
