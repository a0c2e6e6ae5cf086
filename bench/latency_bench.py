"""Acceptance latency at a fixed offered rate: the connector (worker filing at
once) against the no-op aiosmtpd sink, in the same run.

A rate-controlled client schedules message i at t0 + i/RATE and sends it on
the first free connection of a pool; a message's latency runs from its
scheduled time to the 250 after DATA, so time spent waiting for a free
connection counts (no coordinated omission). Printed per server and rate:
p50, p99 and max in milliseconds, and for the connector the backlog (spooled
but not yet filed) at the end of the load and how long it took to drain.
Targets (issue 14): p99 at 200 msg/s < 15 ms and within 3x the sink's p99; at
400 msg/s the backlog stays bounded and drains.

    python bench/latency_bench.py [--rates 200,400] [--seconds 10] [--size 4096]
"""

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_bench import ROOT, SMTP_SINK, Progress, free_port, wait_port, write_config  # noqa: E402

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


def summary(latencies):
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return pick(0.5), pick(0.99), ordered[-1] * 1000


def measure_sink(rate, args):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "noop_sink.py"), str(port)],
                            stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        return summary(asyncio.run(offer(port, rate, args.seconds, args.size))), None
    finally:
        proc.terminate()
        proc.wait()


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
        latencies = asyncio.run(offer(port, rate, args.seconds, args.size))
        progress = Progress(workdir / "var" / "connector.db")
        offered = int(rate * args.seconds)
        _, spooled, filed, _ = progress.drained(offered, 0)
        backlog, start = spooled - filed, time.perf_counter()
        while not progress.drained(offered, 2 * offered)[0]:
            if time.perf_counter() - start > 300:
                break
            time.sleep(0.2)
        progress.close()
        return summary(latencies), (backlog, time.perf_counter() - start)
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
    args = parser.parse_args()
    args.python = str(Path(args.python).absolute())
    for rate in (int(r) for r in args.rates.split(",")):
        (s50, s99, smax), _ = measure_sink(rate, args)
        (c50, c99, cmax), (backlog, drain) = measure_connector(rate, args)
        print(f"{rate} msg/s offered for {args.seconds:g} s: no-op sink p50 {s50:.1f} p99 {s99:.1f} "
              f"max {smax:.1f} ms | connector p50 {c50:.1f} p99 {c99:.1f} max {cmax:.1f} ms "
              f"(p99 {c99 / s99:.1f}x the sink) | backlog at the end {backlog}, drained {drain:.1f} s later",
              flush=True)


if __name__ == "__main__":
    main()
