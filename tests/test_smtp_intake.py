"""SMTP sessions as Postfix's smtpd keeps them, over real SMTP to the real daemon:
long lines stored as received, an idle (not a total) timeout, a listen backlog
that greets a burst of senders, and 421 to open sessions on shutdown."""

import socket
import sqlite3
import subprocess
import threading
import time

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from conftest import Instance, make_mail, wait_for
from connector.intake.smtp import LINE_SLACK, IntakeLMTP, IntakeSMTP


class Client:
    """A raw SMTP client on a socket: says lines, reads replies (multi-line as one list)."""

    def __init__(self, port, timeout=20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.stream = self.sock.makefile("rwb")

    def say(self, data):
        self.stream.write(data if data.endswith(b"\r\n") else data + b"\r\n")
        self.stream.flush()

    def reply(self):
        lines = []
        while True:
            line = self.stream.readline()
            if not line:
                return lines or [b""]
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def envelope(self):
        assert self.reply()[0].startswith(b"220")
        for command in (b"EHLO client.example", b"MAIL FROM:<ann@acme.example>", b"RCPT TO:<support@example.com>"):
            self.say(command)
            assert self.reply()[-1].startswith(b"250"), command
        self.say(b"DATA")
        assert self.reply()[0].startswith(b"354")

    def close(self):
        self.sock.close()


def spool_raw(inst):
    return [bytes(row[0]) for row in inst.rows("select raw from spool.spool order by id")]


def test_a_5000_character_line_is_accepted_and_stored_byte_exact(daemon):
    line = b"<p>" + b"x" * 4993 + b"</p>"      # 5,000 characters, no CRLF inside
    raw = (b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: Long line\r\n"
           b"Message-ID: <long@acme.example>\r\nContent-Type: text/html\r\n\r\n" + line + b"\r\n.dot first\r\n")
    client = Client(daemon.port)
    client.envelope()
    client.say(raw.replace(b"\r\n.", b"\r\n..") + b".")
    assert client.reply()[0].startswith(b"250")
    client.close()
    assert spool_raw(daemon) == [raw]


def test_a_line_longer_than_the_size_limit_is_refused_552_and_not_stored(daemon):
    client = Client(daemon.port)
    client.envelope()
    client.say(b"Subject: huge\r\n\r\n" + b"y" * 300_000 + b"\r\n.")    # max_message_size is 200000
    assert client.reply()[0][:3] in (b"552", b"500")                   # can never be accepted
    client.close()
    assert spool_raw(daemon) == []


def test_a_slow_sender_that_never_goes_silent_is_accepted(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, smtp__idle_timeout="1.5").start()
    try:
        client = Client(inst.port)
        client.envelope()
        body = make_mail(subject="Trickled").as_bytes().replace(b"\n", b"\r\n")
        step = max(1, len(body) // 12)
        pieces = range(0, len(body), step)
        assert len(pieces) * 0.4 > 4         # by construction, not measured: DATA lasts past idle_timeout
        for start in pieces:
            client.stream.write(body[start:start + step])
            client.stream.flush()
            time.sleep(0.4)                  # never silent for 1.5 s, 5 s in DATA in all
        client.say(b"\r\n.")
        assert client.reply()[0].startswith(b"250")
        client.close()
        assert len(spool_raw(inst)) == 1

        idle = Client(inst.port)             # a client that goes silent is told, then closed
        assert idle.reply()[0].startswith(b"220")
        idle.say(b"EHLO client.example")
        idle.reply()
        assert idle.reply()[0].startswith(b"421 4.4.2")
        assert idle.stream.readline() == b""
        idle.close()
    finally:
        inst.stop()


def listen_backlog(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(out.split()[2])


def test_500_simultaneous_connects_are_all_greeted(daemon):
    assert listen_backlog(daemon.port) >= 1024
    count, greeted, errors = 500, [], []
    start = threading.Barrier(count)

    def connect():
        try:
            start.wait(timeout=30)
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=20) as sock:
                greeted.append(sock.makefile("rb").readline())
                time.sleep(2)                   # senders hold their sessions (backlog 100: 108 never greeted)
                sock.sendall(b"QUIT\r\n")
        except Exception as exc:                # noqa: BLE001 - counted below
            errors.append(repr(exc))
    threads = [threading.Thread(target=connect) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(greeted) == count and all(g.startswith(b"220") for g in greeted)


@pytest.mark.sqlite_only("an SQLite file lock")
def test_shutdown_answers_421_and_an_inflight_commit_still_gets_its_250(daemon):
    idle = Client(daemon.port)
    assert idle.reply()[0].startswith(b"220")
    idle.say(b"EHLO client.example")
    idle.reply()

    locker = sqlite3.connect(daemon.path / "var" / "connector-spool.db", timeout=1)
    locker.execute("BEGIN EXCLUSIVE")           # the commit of the next DATA waits for this lock
    busy = Client(daemon.port)
    busy.envelope()
    busy.say(make_mail(subject="In flight").as_bytes().replace(b"\n", b"\r\n") + b"\r\n.")
    answers = []
    reader = threading.Thread(target=lambda: answers.extend([busy.reply(), busy.reply()]))
    reader.start()
    time.sleep(2.0)   # the DATA reaches the spool writer, which waits for the lock (no event tells it)
    daemon.proc.send_signal(15)
    assert idle.reply()[0].startswith(b"421 4.3.2 Service shutting down")
    time.sleep(1.0)
    locker.rollback()
    locker.close()
    reader.join(timeout=20)
    assert answers and answers[0][0].startswith(b"250"), answers
    assert answers[1][0].startswith(b"421 4.3.2"), answers
    wait_for(lambda: daemon.proc.poll() is not None, 30, what="daemon to stop")
    assert len(spool_raw(daemon)) == 1
    idle.close()
    busy.close()


def test_lmtp_sessions_get_421_on_shutdown_too(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, smtp__protocol="lmtp").start()
    client = Client(inst.port)
    assert client.reply()[0].startswith(b"220")
    inst.proc.send_signal(15)
    assert client.reply()[0].startswith(b"421 4.3.2")
    inst.proc.wait(timeout=30)
    client.close()


def test_a_command_line_cannot_buffer_a_message_worth_of_memory(daemon):
    """Outside DATA a line is a command: a megabyte without a newline gets 500, the session goes on."""
    import socket
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        sock.sendall(b"EHLO " + b"x" * 1_000_000 + b"\r\n")
        assert reader.readline().startswith(b"500")
        sock.sendall(b"NOOP\r\n")
        assert reader.readline().startswith(b"250")


@pytest.mark.parametrize("session_class", [IntakeSMTP, IntakeLMTP])
def test_a_session_dispatches_commands_auth_and_hooks_as_aiosmtpd_builds_them(session_class):
    """A session lists only its command and AUTH methods to aiosmtpd's per-connection
    introspection (the cost of every connect); what it dispatches stays what aiosmtpd finds
    on a plain session: the same commands, mechanisms and handler hooks, each its own method."""
    import asyncio

    from connector.health.metrics import CountingHandler
    from connector.intake.smtp import IntakeHandler

    plain = LMTP if session_class is IntakeLMTP else SMTP

    async def tables():
        handler = IntakeHandler(lambda address: True, None, "smtp")
        for wrapped in (handler, CountingHandler(handler, None)):
            ours = session_class(wrapped, sessions=set(), idle_timeout=300, data_size_limit=1000, hostname="x")
            theirs = plain(wrapped, data_size_limit=1000, hostname="x")
            assert ours._smtp_methods.keys() == theirs._smtp_methods.keys()
            assert {name: method.__func__ for name, method in ours._smtp_methods.items()} == {
                name: getattr(session_class, f"smtp_{name}") for name in theirs._smtp_methods}
            assert ours._auth_methods == {name: entry._replace(method=getattr(ours, entry.method.__name__))
                                          for name, entry in theirs._auth_methods.items()}
            assert ours._handle_hooks == theirs._handle_hooks
            assert ours._ehlo_hook_ver == theirs._ehlo_hook_ver
        # the handler lists only its hooks to dir(): the same ones a plain object lists
        assert dir(handler) == sorted(name for name in object.__dir__(handler) if name.startswith("handle_"))
        assert dir(handler)

    asyncio.run(tables())


def test_a_multi_line_reply_is_aiosmtpd_s_lines_in_one_write():
    """EHLO's six lines were six writes (six segments for the client to wake up for): now one,
    with the same bytes as a plain aiosmtpd session's, and the replies after it as before."""
    import asyncio

    from connector.intake.smtp import IntakeHandler

    async def ehlo(session_class, **options):
        loop = asyncio.get_running_loop()
        writes = []

        def factory():
            session = session_class(IntakeHandler(lambda address: True, None, "smtp"), data_size_limit=1000,
                                    hostname="x.test", ident="connector", enable_SMTPUTF8=True, **options)
            made = session.connection_made

            def counted(transport):
                write = transport.write
                transport.write = lambda data: (writes.append(data), write(data))[1]
                made(transport)
            session.connection_made = counted
            return session

        server = await loop.create_server(factory, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        replies = [await reader.readline()]
        writer.write(b"EHLO client.test\r\nNOOP\r\n")
        while not replies[-1].startswith(b"250 OK"):
            replies.append(await reader.readline())
        writer.close()
        server.close()
        return replies, writes

    async def both():
        return await ehlo(IntakeSMTP, sessions=set(), idle_timeout=300), await ehlo(SMTP)

    (ours, our_writes), (theirs, their_writes) = asyncio.run(both())
    assert ours == theirs
    assert [line[:4] for line in ours] == [b"220 ", b"250-", b"250-", b"250-", b"250-", b"250 ", b"250 "]
    assert len(their_writes) == 7 and len(our_writes) == 3  # greeting, EHLO, NOOP
    assert our_writes[1] == b"".join(ours[1:6])


def plain_angle_addresses(rng, count):
    """`<local@domain> PARAMS` the way clients write them, and their near misses."""
    atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    atom = lambda: "".join(rng.choice(atext) for _ in range(rng.randint(1, 4)))  # noqa: E731
    dot_atom = lambda: ".".join(atom() for _ in range(rng.randint(1, 3)))  # noqa: E731
    odd = ["", ".", "..", " ", "\t", "(c)", '"', "@", "[1.2.3.4]", "é", ">", "<", "\\", ","]
    for _ in range(count):
        local, domain = dot_atom(), dot_atom()
        if rng.random() < 0.3:  # a near miss somewhere
            where = rng.choice(["local", "domain"])
            extra = rng.choice(odd)
            local, domain = (local + extra, domain) if where == "local" else (local, extra + domain)
        yield (rng.choice(["", " ", "\t"]) + f"<{local}@{domain}>"
               + rng.choice(["", " SIZE=4096", "  BODY=8BITMIME SIZE=1 ", "\tSMTPUTF8", "x", " (comment) SIZE=1"]))


def test_plain_envelope_addresses_are_read_as_the_parser_reads_them():
    """MAIL FROM / RCPT TO's common `<local@domain>` is taken by a regular expression: for
    every argument it takes, the answer is the email parser's (aiosmtpd's own reading)."""
    import random

    from email._header_value_parser import get_angle_addr
    from email.errors import HeaderParseError

    from connector.intake.smtp import PLAIN_ANGLE_ADDR_RE

    taken = 0
    for arg in plain_angle_addresses(random.Random(14), 20000):
        match = PLAIN_ANGLE_ADDR_RE.fullmatch(arg)
        if match is None:
            continue
        taken += 1
        try:
            address, rest = get_angle_addr(arg)
        except HeaderParseError:
            address = None
        assert address is not None and match.groups() == (address.addr_spec, rest), arg
    assert taken > 10000


DATA_CASES = [
    b"Subject: a\r\n\r\nbody\r\n",
    b"",                                       # the end at once
    b"\r\n",                                   # one empty line
    b"..\r\n",                                 # a line holding one dot
    b"..leading\r\n..\r\nx\r\n\r\n",           # dot-stuffed lines, an empty line before the end
    b"a\n.\r\nb\r\n",                          # a bare LF before dot CRLF: one line, not the end
    b"a\r.\r\nb\r\n",                          # a bare CR before it
    b"end of a sentence.\r\n...\r\n",
    b"x" * 5000 + b"\r\n" + b".y\r\n" * 50,
    b"y" * 10500 + b"\r\n",                    # over the 10,000-byte limit: 552
    b"z\r\n" * 4000,                           # over it in short lines: 552
    b"." + b"w" * 10500 + b"\r\n",             # over it in a dot-stuffed line
]


def test_data_reads_every_body_as_aiosmtpd_does():
    """The body is read in one piece instead of line by line: each of these bodies, sent
    whole or a few bytes at a time, with the next command right behind it, is taken with the
    same bytes and the same replies as by a plain aiosmtpd session."""
    import asyncio

    class Recorder:
        def __init__(self):
            self.bodies = []

        async def handle_DATA(self, server, session, envelope):
            self.bodies.append(envelope.original_content)
            return "250 taken"

    async def exchange(session_class, options, chunk):
        recorder, loop = Recorder(), asyncio.get_running_loop()
        server = await loop.create_server(lambda: session_class(recorder, data_size_limit=10000, hostname="x",
                                                                **options), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        replies = [await reader.readline()]
        writer.write(b"HELO c\r\n")
        replies.append(await reader.readline())
        for body in DATA_CASES:
            writer.write(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n")
            for _ in range(3):
                replies.append(await reader.readline())
            stream = body + b".\r\nNOOP\r\n"
            for start in range(0, len(stream), chunk):
                writer.write(stream[start:start + chunk])
                await writer.drain()
                if chunk < 50:
                    await asyncio.sleep(0)
            replies += [await reader.readline(), await reader.readline()]
        writer.close()
        server.close()
        return replies, recorder.bodies

    class Plain(SMTP):  # aiosmtpd with our line limit (a line may be as long as a message)
        line_length_limit = 10000 + LINE_SLACK

    async def both(chunk):
        return (await asyncio.wait_for(exchange(IntakeSMTP, {"sessions": set(), "idle_timeout": 300}, chunk), 30),
                await asyncio.wait_for(exchange(Plain, {"decode_data": False}, chunk), 30))

    for chunk in (1, 7, 1 << 20):
        ours, theirs = asyncio.run(both(chunk))
        assert ours == theirs, chunk
    replies, bodies = ours
    assert len(bodies) == len(DATA_CASES) - 3 and bodies[4] == b".leading\r\n.\r\nx\r\n\r\n"
    assert [replies[index][:3] for index in (-12, -7, -2)] == [b"552"] * 3  # each DATA reply, before its NOOP
