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
spool writer without SQLite, the envelope or the RCPT check. What the
connector's acceptance tail has beyond this one is the connector's; what
this one has too is the disk's.

    python bench/noop_sink.py PORT [--durable FILE]
"""

import argparse
import asyncio
import os
import queue
import threading

from aiosmtpd.smtp import SMTP

RING = 64 << 20  # bytes of the durable sink's file, written round and round


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
        self.offset = 0
        self.todo = queue.SimpleQueue()
        threading.Thread(target=self.write, daemon=True).start()

    async def handle_DATA(self, server, session, envelope):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.todo.put((envelope.original_content, loop, done))
        await done
        return "250 2.0.0 OK"

    def write(self):
        while True:
            batch = [self.todo.get()]
            while not self.todo.empty():
                batch.append(self.todo.get_nowait())
            for raw, _, _ in batch:
                if self.offset + len(raw) > RING:
                    self.offset = 0
                os.pwrite(self.fd, raw, self.offset)
                self.offset += len(raw)
            os.fdatasync(self.fd)
            for _, loop, done in batch:
                loop.call_soon_threadsafe(done.set_result, None)


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
