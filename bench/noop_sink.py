"""The ceiling: an aiosmtpd server whose handler only answers 250.

Built like the connector's intake (same class, same options) so the ratio
measures what the connector adds: the RCPT check, the durable spool commit
and its log line.  Usage: python bench/noop_sink.py PORT
"""

import asyncio
import sys

from aiosmtpd.smtp import SMTP


class NoopHandler:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(NoopHandler(), data_size_limit=26214400, hostname="sink.test", ident="sink",
                     enable_SMTPUTF8=True, decode_data=False),
        host="127.0.0.1", port=port, reuse_address=True)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
