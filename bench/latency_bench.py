"""Acceptance latency at a fixed offered rate: the connector (worker filing at
once) against the no-op aiosmtpd sink and the durable sink, in the same run.

A rate-controlled client schedules message i at t0 + i/RATE and sends it on
the first free connection of a pool; a message's latency runs from its
scheduled time to the 250 after DATA, so time spent waiting for a free
connection counts (no coordinated omission). Printed per server and rate:
p50, p99 and max in milliseconds, and for the connector the backlog (spooled
but not yet filed) at the end of the load and how long it took to drain.
Targets (issue 14): p99 at 200 msg/s < 15 ms and within 3x the sink's p99; at
400 msg/s the backlog stays bounded and drains.

The durable sink (noop_sink.py --durable) answers 250 only once the message
is fdatasync'd, as any server that keeps the no-loss rule must: a disk whose
flushes stall shows in its tail as in the connector's. `over 15 ms` counts
the answers slower than the target, and `disk stalls` the flushes slower
than the target that a watcher thread saw while the load ran (512 bytes
written and fdatasync'd every 20 ms beside the server's files). The three
servers run one after the other, 10 s each, and the stalls come and go: the
connector's tail compares with the durable sink's in rounds where neither
load saw a stall. The watcher's flushes wait behind the server's own writes,
so a stall it sees may be the server's doing as well as the disk's; and they
are 50 more fdatasyncs a second beside the durable sink and the connector
(not beside the no-op sink, which has none): `--no-disk-watch` leaves it out.

    python bench/latency_bench.py [--rates 200,400] [--seconds 10] [--size 4096] [--rounds 1] [--no-disk-watch]
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_bench import ROOT, SMTP_SINK, Progress, free_port, wait_port, wait_ready, write_config  # noqa: E402

POOL = 64


class Client:
    """One SMTP connection, reused for many messages."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        await client.reply()
        await client.command(b"EHLO bench.test")
        return client

    async def reply(self):
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != b"-":
                return int(line[:3])

    async def command(self, line):
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def send(self, body):
        await self.command(b"MAIL FROM:<a@client.test>")
        await self.command(b"RCPT TO:<support@example.test>")
        await self.command(b"DATA")
        self.writer.write(body + b"\r\n.\r\n")
        code = await self.reply()
        if code != 250:
            raise RuntimeError(f"DATA answered {code}")


def message(index, size):
    head = (f"From: a@client.test\r\nTo: support@example.test\r\nSubject: latency {index}\r\n"
            f"Message-ID: <{index}.{time.time_ns()}@client.test>\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def offer(port, rate, seconds, size):
    """Latencies (seconds) of rate*seconds messages offered at `rate` per second."""
    free = asyncio.Queue()
    for client in await asyncio.gather(*(Client.open(port) for _ in range(POOL))):
        free.put_nowait(client)
    latencies = []

    async def one(index, due):
        client = await free.get()
        try:
            await client.send(message(index, size))
        finally:
            free.put_nowait(client)
        latencies.append(time.perf_counter() - due)

    tasks, start = [], time.perf_counter()
    for index in range(int(rate * seconds)):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait().writer.close()
    return latencies


SLOW = 0.015  # seconds: the p99 target at 200 msg/s; answers slower than this are counted


def summary(latencies):
    """p50, p99 and max in milliseconds, and how many answers took longer than SLOW."""
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return pick(0.5), pick(0.99), ordered[-1] * 1000, sum(1 for latency in ordered if latency > SLOW)


class DiskWatch:
    """A thread that fdatasyncs a small write every WATCH_EVERY seconds while the load runs and
    keeps the flushes that took longer than SLOW: the disk's stalls, which no durable server hides."""

    WATCH_EVERY = 0.02

    def __init__(self, directory):
        self.fd = os.open(directory / "disk-watch", os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self.fd, b"\0" * 4096, 0)
        os.fsync(self.fd)
        self.stalls, self.done, self.failed = [], threading.Event(), None
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self):
        try:
            while not self.done.wait(self.WATCH_EVERY):
                os.pwrite(self.fd, os.urandom(512), 0)
                start = time.perf_counter()
                os.fdatasync(self.fd)
                took = time.perf_counter() - start
                if took > SLOW:
                    self.stalls.append(took)
        except OSError as exc:  # counted as far as it got, and said so
            self.failed = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        os.close(self.fd)

    def stall_figures(self):
        if self.failed:
            print(f"the disk watcher stopped: {self.failed}", flush=True)
        return len(self.stalls), max(self.stalls, default=0) * 1000


def measured(port, rate, args, workdir):
    """The summary of the load offered to `port`, and the disk's stalls while it ran (None, None
    with --no-disk-watch)."""
    if args.no_disk_watch:
        return summary(asyncio.run(offer(port, rate, args.seconds, args.size))) + (None, None)
    with DiskWatch(workdir) as watch:
        latencies = asyncio.run(offer(port, rate, args.seconds, args.size))
    return summary(latencies) + watch.stall_figures()


def measure_sink(rate, args, durable=False):
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="connector-latency-sink-"))  # beside the connector's store
    command = [sys.executable, str(ROOT / "bench" / "noop_sink.py"), str(port)]
    proc = subprocess.Popen(command + (["--durable", str(workdir / "ring")] if durable else []),
                            stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        return measured(port, rate, args, workdir)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def measure_connector(rate, args):
    workdir = Path(tempfile.mkdtemp(prefix="connector-latency-"))
    port, relay_port = free_port(), free_port()
    write_config(workdir, port, relay_port, args.python)
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{relay_port}", "256"])
    daemon = subprocess.Popen([args.python, "-m", "connector", "-c", str(workdir / "connector.ini"), "run"],
                              stdout=open(workdir / "daemon.log", "wb"), stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_port(relay_port, sink)
        wait_port(port, daemon)
        wait_ready(workdir, daemon)  # the steady state: the first half second after a start is the children's start-up
        result = measured(port, rate, args, workdir)
        progress = Progress(workdir / "var" / "connector.db")
        offered = int(rate * args.seconds)
        _, spooled, filed, _ = progress.drained(offered, 0)
        backlog, start = spooled - filed, time.perf_counter()
        while not progress.drained(offered, 2 * offered)[0]:
            if time.perf_counter() - start > 300:
                break
            time.sleep(0.2)
        progress.close()
        return result, (backlog, time.perf_counter() - start)
    finally:
        daemon.terminate()
        daemon.wait()
        sink.terminate()
        sink.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="200,400", help="offered messages per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose connector is measured")
    parser.add_argument("--rounds", type=int, default=1, help="measure the three servers this many times")
    parser.add_argument("--no-disk-watch", action="store_true", help="no watcher thread counting the disk's stalls")
    args = parser.parse_args()
    args.python = str(Path(args.python).absolute())
    for _ in range(args.rounds):
        for rate in (int(r) for r in args.rates.split(",")):
            sink = measure_sink(rate, args)
            durable = measure_sink(rate, args, durable=True)
            connector, (backlog, drain) = measure_connector(rate, args)
            print(f"{rate} msg/s offered for {args.seconds:g} s: no-op sink {describe(sink)} "
                  f"| durable sink {describe(durable)} | connector {describe(connector)} "
                  f"(p99 {connector[1] / sink[1]:.1f}x the sink, {connector[1] / durable[1]:.1f}x the durable sink) "
                  f"| backlog at the end {backlog}, drained {drain:.1f} s later", flush=True)


def describe(result):
    p50, p99, most, slow, stalls, longest = result
    text = f"p50 {p50:.1f} p99 {p99:.1f} max {most:.1f} ms, over {SLOW * 1000:g} ms {slow}"
    if stalls is None:
        return text
    return text + f", disk stalls {stalls}" + (f" (longest {longest:.0f} ms)" if stalls else "")


if __name__ == "__main__":
    main()
