"""SMTP and LMTP intake (aiosmtpd).

RCPT is accepted only for our own addresses (public, notifications and their
+tag forms): never an open relay. DATA is answered 250 only after the spool
has committed the raw bytes and the envelope; an internal error answers 451
so the sender retries. aiosmtpd itself answers 552 above max_message_size.

Sessions, as Postfix's smtpd treats them:

- lines of any length are accepted and stored as received (RFC 5322's 998
  is what senders should write; broken clients write longer ones every day):
  inside DATA the line limit is the message size limit, so only a mail too
  big to be accepted at all is refused (permanently); outside DATA a command
  line may buffer COMMAND_LINE_LIMIT bytes, so an idle stranger holds little;
- the session times out after `[smtp] idle_timeout` seconds of silence, in
  a command or inside DATA (aiosmtpd's own timer counts from the last
  command, which cut a slow DATA while bytes kept arriving), with a 421;
- the listen backlog is `[smtp] backlog`, not asyncio's 100;
- `IntakeServer.close()` (shutdown) answers every open session
  `421 4.3.2 Service shutting down` instead of dropping it; a DATA whose
  spool commit is under way is first answered (250, or 451), within
  SHUTDOWN_GRACE seconds.
"""

import asyncio
import functools
import re
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, syntax

from connector.intake import header_message_id
from connector.log import get_logger
from connector.store.faults import describe, transient_fault

log = get_logger("intake")

# Replies (RFC 5321 / RFC 3463 codes).
R_OK = "250 2.1.5 OK"
R_NOT_OURS = "550 5.1.1 <{}>: recipient not accepted here (this is not a relay)"
R_QUEUED = "250 2.0.0 OK: queued as {}"
R_TEMPFAIL = "451 4.3.0 Temporary failure storing the message; try again later"
R_SHUTDOWN = "421 4.3.2 Service shutting down"
R_IDLE = "421 4.4.2 Error: timeout exceeded"
R_TOO_MUCH = "552 Error: Too much mail data"  # aiosmtpd's words

SHUTDOWN_GRACE = 10.0   # seconds a DATA whose commit is under way may take to be answered at shutdown
LINE_SLACK = 1024       # a line may be as long as the largest message, plus its CRLF and dot-stuffing
COMMAND_LINE_LIMIT = 4096  # bytes a command line may buffer (RFC 5321: 512; extensions add some)
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
# `<dot-atom@dot-atom>` and the parameters after it (not starting with a comment): the parser's
# addr_spec is the text between the brackets, its rest what follows the blanks
PLAIN_ANGLE_ADDR_RE = re.compile(rf"[ \t]*<({_DOT_ATOM}@{_DOT_ATOM})>[ \t]*((?:[^ \t(].*)?)", re.S)


def null_path(mail_from):
    """The envelope sender, with the null return path `<>` as ''."""
    return "" if not mail_from or mail_from.strip() == "<>" else mail_from


class IntakeHandler:
    """aiosmtpd handler: RCPT check and durable DATA."""

    def __init__(self, is_own_address, committer, protocol):
        self.is_own_address = is_own_address
        self.committer = committer
        self.protocol = protocol

    def __dir__(self):
        """Only the hooks: aiosmtpd looks for `handle_*` and `auth_*` members in `dir()` of the
        handler of every new session, which over a whole object's ~30 names cost 10 us a connection."""
        return _dispatch_names(type(self), ("handle_", "auth_"))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.is_own_address(address):
            log.warning("intake.rcpt_rejected", rcpt=address, mail_from=envelope.mail_from,
                        peer=session.peer[0] if session.peer else None)
            return R_NOT_OURS.format(address)
        envelope.rcpt_tos.append(address)
        return R_OK

    async def handle_DATA(self, server, session, envelope):
        server.storing = True   # a shutdown waits for this answer (aiosmtpd writes it as we return)
        try:
            reply = await self._store(envelope)
        finally:
            server.storing = False
        if self.protocol == "lmtp":  # one reply per accepted recipient
            return "\r\n".join([reply] * len(envelope.rcpt_tos))
        return reply

    async def _store(self, envelope):
        """The spool commit of one DATA; returns the reply."""
        raw = envelope.original_content or envelope.content
        try:
            spool_id = await self.committer.submit(
                asyncio.get_running_loop(), raw, mail_from=null_path(envelope.mail_from),
                rcpt_to=list(envelope.rcpt_tos), intake=self.protocol)
        except Exception as exc:
            log.error("intake.store_failed", error=describe(transient_fault(exc) or exc), size=len(raw))
            return R_TEMPFAIL
        log.info("intake.accepted", spool_id=spool_id, message_id=header_message_id(raw), size=len(raw),
                 mail_from=envelope.mail_from, rcpt=envelope.rcpt_tos, intake=self.protocol)
        return R_QUEUED.format(spool_id)


class _Session:
    """What the intake adds to aiosmtpd's SMTP and LMTP sessions (mixed in before them)."""

    def __init__(self, handler, *, sessions, idle_timeout, data_size_limit, **options):
        # aiosmtpd sizes its stream reader and its DATA line check by this attribute
        self.line_length_limit = data_size_limit + LINE_SLACK
        super().__init__(handler, data_size_limit=data_size_limit, timeout=idle_timeout, **options)
        self.sessions = sessions
        self.storing = False
        self.last_heard = self.loop.time()
        self.continued = []  # lines of a multi-line reply not written yet (see push)

    def connection_made(self, transport):
        self.sessions.add(self)
        super().connection_made(transport)
        self._command_lines()

    def __dir__(self):
        """Only the command (`smtp_*`) and AUTH (`auth_*`) methods. aiosmtpd builds its
        dispatch tables from `dir()` and `inspect.getmembers()` of every new session, and over
        the ~150 names of a whole session object that cost more than the rest of a message's
        commands (0.2 ms a connection, and smtp-source, like many MTAs, connects per message);
        the tables come out the same."""
        return _dispatch_names(type(self), ("smtp_", "auth_"))

    async def push(self, status):
        """aiosmtpd's reply, but the lines of a multi-line reply (EHLO's six) go out in one write:
        each write is a send(2), and a segment the client wakes up for, so EHLO cost more than
        the rest of a message's replies together. Every line ends up on the wire as before."""
        line = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) else status
        if line[3:4] == b"-":  # a continuation: its final line follows in this command
            self.continued.append(line)
            return
        if self.continued:
            line = b"\r\n".join([*self.continued, line])
            self.continued.clear()
        self._writer.write(line + b"\r\n")
        await self._writer.drain()

    def _command_lines(self):
        """Outside DATA a line buffers at most COMMAND_LINE_LIMIT bytes: a stranger must not make
        every session hold a message's worth of memory before it even said RCPT."""
        self._reader._limit = COMMAND_LINE_LIMIT  # asyncio.StreamReader's buffer limit (aiosmtpd reads lines)

    @syntax("DATA")
    async def smtp_DATA(self, arg):
        """aiosmtpd's DATA, with the same checks and answers, reading the body in one piece:
        aiosmtpd awaits each line and copies it twice (a 4 KiB mail, 52 lines, cost more
        than all its other commands together). A body larger than max_message_size (the
        reader's limit is that and LINE_SLACK) is read to its end, dropped and answered 552."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._reader._limit = self.line_length_limit  # any line a message may hold, stored as received
        try:
            stuffed = await self._read_body()
        except asyncio.CancelledError:  # the connection was lost during DATA
            self._writer.close()
            raise
        finally:
            self._command_lines()
        if stuffed is None or len(stuffed) > self.data_size_limit:
            self._set_post_data_state()
            await self.push(R_TOO_MUCH)
            return
        # RFC 5321 4.5.2: a line's leading dot is the sender's transparency, not the mail's
        body = stuffed.replace(b"\r\n.", b"\r\n")
        self.envelope.content = self.envelope.original_content = body[1:] if body[:1] == b"." else body
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_body(self):
        """The body as sent (dot-stuffed, every line with its CRLF) up to the line holding only a
        dot, which is consumed; None when it was longer than the reader's limit (drained).
        aiosmtpd's lines end in CRLF, so only a CRLF before `.` CRLF ends the body."""
        reader, body = self._reader, bytearray()
        while len(body) <= self.line_length_limit:  # here: at the start of a line
            try:
                first = await reader.readexactly(1)
                if first == b".":
                    line = await reader.readuntil(b"\r\n")
                    if line == b"\r\n":
                        return bytes(body)
                    body += first + line
                    continue
                # the end is after a line's LF: found in what follows this line's first byte even
                # when that was the CR of an empty line
                body += first + await reader.readuntil(b"\n.\r\n")
            except asyncio.LimitOverrunError:
                await self._drain_body(mid_line=True)
                return None
            if body[-5:-4] == b"\r":
                del body[-3:]
                return bytes(body)
            # a bare LF before `.` CRLF: one line that ends there, not the end
        await self._drain_body(mid_line=False)
        return None

    async def _drain_body(self, mid_line):
        """Read and drop the rest of a body too large to take, line by line to its end (the
        reply comes after it); `mid_line`: part of the current line was read already."""
        while True:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:  # a CR that may start the CRLF stays buffered
                await self._reader.read(exc.consumed)
                mid_line = True
                continue
            if line == b".\r\n" and not mid_line:
                return
            mid_line = False

    def _getaddr(self, arg):
        """aiosmtpd 1.4's `_getaddr` (MAIL FROM, RCPT TO) without the typing.Protocol class it
        defines on every call, which cost more than parsing the address: same parser, same answers.
        The common `<local@domain>` of dot-atoms is taken by a regular expression first (what
        the parser answers for it, at a tenth of its cost; tested against the parser)."""
        if not arg:
            return "", ""
        plain = PLAIN_ANGLE_ADDR_RE.fullmatch(arg)
        if plain:
            addr, rest = plain.groups()
        else:
            try:
                address, rest = (get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec)(arg)
            except HeaderParseError:
                return None, None
            addr = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    def connection_lost(self, error):
        self.sessions.discard(self)
        super().connection_lost(error)

    def data_received(self, data):
        self.last_heard = self.loop.time()
        super().data_received(data)

    def _reset_timeout(self, duration=None):
        """aiosmtpd re-arms its timer after every command, leaving a cancelled timer in the
        loop's heap each time; ours counts from the last bytes heard (`_timeout_cb` re-arms
        it for the silence left), so the running one stays."""
        if duration is None and self._timeout_handle is not None and not self._timeout_handle.cancelled():
            return
        super()._reset_timeout(duration)

    def _timeout_cb(self):
        """aiosmtpd's timer, counted from the last bytes heard instead of the last command."""
        self._timeout_handle = None  # it fired: the next reset arms a new one
        silent = self.loop.time() - self.last_heard
        if self.storing or silent < self._timeout_duration:
            self._reset_timeout(max(self._timeout_duration - silent, 0.01))
            return
        log.info("intake.idle_timeout", peer=self.session.peer[0] if self.session.peer else None,
                 seconds=self._timeout_duration)
        self.goodbye(R_IDLE)

    def goodbye(self, reply):
        """Send `reply` and close: the client sees why the session ends."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode("ascii") + b"\r\n")
            self.transport.close()


@functools.lru_cache(maxsize=None)
def _dispatch_names(cls, prefixes):
    """The names aiosmtpd looks up on an object of `cls`: those starting with `prefixes`
    (a session's SMTP commands and AUTH mechanisms, a handler's hooks)."""
    return sorted(name for name in dir(cls) if name.startswith(prefixes))


class IntakeSMTP(_Session, SMTP):
    pass


class IntakeLMTP(_Session, LMTP):
    pass


class IntakeServer:
    """The listening socket and the sessions open on it; app.py closes it on shutdown."""

    def __init__(self, server, sessions):
        self.server = server
        self.sessions = sessions

    def close(self):
        """Stop listening; every session not waiting for its spool commit gets 421 now."""
        self.server.close()
        for session in list(self.sessions):
            if not session.storing:
                session.goodbye(R_SHUTDOWN)

    async def wait_closed(self):
        """Answer the DATAs whose commit is under way (bounded), then 421 to what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while any(session.storing for session in self.sessions) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = list(self.sessions)
        for session in left:
            session.goodbye(R_SHUTDOWN)
        log.info("intake.closed", sessions=len(left))
        await self.server.wait_closed()


async def start_server(settings, handler):
    """Listen on [smtp] listen; returns the `IntakeServer`."""
    cls = IntakeLMTP if settings.protocol == "lmtp" else IntakeSMTP
    loop = asyncio.get_running_loop()
    sessions = set()

    def factory():
        return cls(handler, sessions=sessions, idle_timeout=max(settings.idle_timeout, 1.0),
                   data_size_limit=settings.max_message_size, hostname=settings.hostname,
                   ident="connector", enable_SMTPUTF8=True, decode_data=False)

    server = await loop.create_server(factory, host=settings.listen_host, port=settings.listen_port,
                                      reuse_address=True, backlog=settings.backlog)
    return IntakeServer(server, sessions)
