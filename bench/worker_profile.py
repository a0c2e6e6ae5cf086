"""The filing worker's cost per message, in-process: `Runner.process` over stored messages.

Spools N smtp-source-like messages (4 KiB body, one sender, each a new ticket with
an auto-response and a distribution copy, as `smtp_bench` sends) into a fresh store
with `smtp_bench`'s configuration, then files them with the worker's own Runner,
printing CPU milliseconds per message; `--profile` adds cProfile's top functions.

    python bench/worker_profile.py [--messages 1500] [--profile] [--top 40]
"""

import argparse
import cProfile
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    from connector.checks import load_checked
    from connector.log import setup_logging
    from connector.worker import FILING_CHECKPOINT_PAGES
    from connector.pipeline.runner import Runner
    from connector.pipeline.services import Services
    from connector.store.db import load_hmac_key, open_store
    from connector.store.spool import store_message
    from connector.workqueue import triage

    workdir = Path(tempfile.mkdtemp(prefix="connector-profile-"))
    write_config(workdir, 2525, 2526)
    settings = load_checked(workdir / "connector.ini")
    log = open(workdir / "worker.log", "w")
    setup_logging(settings.log_level, stream=log, json=True)   # as the daemon's worker logs
    open_store(settings.database, synchronous="normal", checkpoint_pages=FILING_CHECKPOINT_PAGES)
    ids = [store_message(message(i), mail_from="a@client.test", rcpt_to=["support@example.test"], intake="smtp")
           for i in range(args.messages)]
    runner = Runner(Services(settings, load_hmac_key(settings.data_dir), triage=triage))
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
