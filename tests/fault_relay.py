"""A misbehaving relay, run as its own process by tests/test_delivery_faults.py.

    python tests/fault_relay.py PORT LOG [--refuse-every N] [--drop-every N] [--hold-at N]

Refuses (550) every recipient whose number (`r<number>@...`) is a multiple
of `--refuse-every`; drops the connection at every `--drop-every`-th mail,
alternately at MAIL FROM and at the end of DATA before keeping the mail;
with `--hold-at N` never answers the N-th DATA (after keeping it). Each
recipient of each mail kept is appended to LOG (one line, written before the
250 goes out), so a test can count what was delivered even across kill -9;
each dropped connection adds a line `#drop`.
"""

import argparse
import asyncio
import os
import re
import signal
import sys

from aiosmtpd.controller import Controller

NUMBER = re.compile(r"^r(\d+)@")


class FaultyHandler:
    def __init__(self, args):
        self.args = args
        self.log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.mails = 0
        self.drops = 0
        self.kept = 0

    def _drop(self, server):
        self.drops += 1
        os.write(self.log, b"#drop\n")
        server.transport.abort()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        if self.args.drop_every and self.mails % self.args.drop_every == 0 and self.drops % 2 == 0:
            self._drop(server)
            return "421 4.4.2 dropped"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        match = NUMBER.match(address)
        if match and self.args.refuse_every and int(match.group(1)) % self.args.refuse_every == 0:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.drop_every and self.mails % self.args.drop_every == 0 and self.drops % 2 == 1:
            self._drop(server)
            return "421 4.4.2 dropped"
        os.write(self.log, "".join(f"{a}\n" for a in envelope.rcpt_tos).encode())
        self.kept += 1
        if self.kept == self.args.hold_at:
            await asyncio.sleep(3600)  # the client is killed while waiting for the 250
        return "250 2.0.0 Ok: queued"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--refuse-every", type=int, default=0)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--hold-at", type=int, default=0)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait, in every thread
    controller = Controller(FaultyHandler(args), hostname="127.0.0.1", port=args.port, enable_SMTPUTF8=False)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
