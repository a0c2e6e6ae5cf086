"""The ceilings: an aiosmtpd server whose handler only answers 250, and the
same server made durable.

Built like the connector's intake (same class, same options) so the ratio
measures what the connector adds: the RCPT check, the durable spool commit
and its log line.

`--durable FILE` is the least a server that keeps the no-loss rule must do
before its 250: the bytes written and fdatasync'd. One writer thread takes
every DATA queued so far, writes them into FILE (preallocated and reused as
a ring, so no commit changes the file's size) and makes them durable with
one fdatasync, then answers them all: the group commit of the connector's
spool writer without SQLite, the envelope or the RCPT check. A disk whose
flushes stall shows in its tail as in the connector's.

    python bench/noop_sink.py PORT [--durable FILE]
"""

import argparse
import asyncio
import os
import queue
import threading
import time

from aiosmtpd.smtp import SMTP

RING = 16 << 20  # bytes of the durable sink's file, written round and round (a 10 s load at 200/s: 8 MB)
SETTLE = 1.0     # seconds between making that file and the first DATA: its own flush is not the load's


class NoopHandler:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


class DurableHandler:
    """Answer 250 once the message's bytes are fdatasync'd in the ring file."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        chunk = b"\0" * (1 << 20)
        for offset in range(0, RING, len(chunk)):  # allocated and on disk before the load
            os.pwrite(self.fd, chunk, offset)
        os.fsync(self.fd)
        time.sleep(SETTLE)
        self.offset = 0
        self.todo = queue.SimpleQueue()
        threading.Thread(target=self.write, daemon=True).start()

    async def handle_DATA(self, server, session, envelope):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.todo.put((envelope.original_content, loop, done))
        return await done

    def write(self):
        while True:
            batch = [self.todo.get()]
            while not self.todo.empty():
                batch.append(self.todo.get_nowait())
            try:
                for raw, _, _ in batch:
                    self.put(memoryview(raw))
                os.fdatasync(self.fd)
                answer = "250 2.0.0 OK"
            except OSError as exc:  # a full disk: the sessions get a temporary failure, the bench a line
                answer = f"451 4.3.0 {exc.strerror}"
            for _, loop, done in batch:
                loop.call_soon_threadsafe(answered, done, answer)

    def put(self, data):
        """Write `data` at the ring's offset, going round at its end."""
        while data:
            if self.offset == RING:
                self.offset = 0
            count = os.pwrite(self.fd, data[:RING - self.offset], self.offset)
            self.offset += count
            data = data[count:]


def answered(done, answer):
    if not done.done():  # the session may have gone meanwhile
        done.set_result(answer)


async def main(port, durable):
    loop = asyncio.get_running_loop()
    handler = DurableHandler(durable) if durable else NoopHandler()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=26214400, hostname="sink.test", ident="sink",
                     enable_SMTPUTF8=True, decode_data=False),
        host="127.0.0.1", port=port, reuse_address=True)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--durable", metavar="FILE", help="fdatasync each message into FILE before the 250")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.durable))
