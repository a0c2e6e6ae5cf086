"""The SMTP client side of delivery: one session with the relay (smarthost), reused.

`SMTPTransport.send` runs one mail transaction and returns a `Reply` for
every recipient; it never raises for what the relay answers. After any
error the session is reset (RSET) or dropped, so the next mail starts
clean. It raises `RelayUnavailable` only when no session can be opened at
all (connection, TLS, AUTH): then no mail can go, and delivery waits.

`[outbound] tls`: `none`, `starttls` (required: a relay that does not offer
it is not used) or `tls` (implicit TLS, port 465). The certificate is
verified against the system's CAs, or `ca_file`. With `username`, the
session authenticates with the password read from `password_file` at each
connection; the password is never logged.

Mail whose envelope has a non-ASCII address is sent with SMTPUTF8 when the
relay offers it; otherwise every recipient of it is refused permanently
with that reason (RFC 6531: it cannot be downgraded).

A relay that offers PIPELINING (Postfix does) gets MAIL, every RCPT and DATA
in one write, and the body once DATA is answered 354: two round trips per
mail instead of three plus one per recipient (RFC 2920); the replies are read
in order and mean what they mean one by one.
"""

import re
import smtplib
import ssl
import time
from pathlib import Path

from connector.outbound.replies import ACCEPTED, Reply, as_text, from_smtp, no_reply

TLS_STARTTLS = "starttls"
TLS_IMPLICIT = "tls"

AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # over TLS; what Microsoft 365, Gmail and Postfix/Dovecot offer
CLOSING = 421                 # the relay ends the session after this reply
NO_SMTPUTF8 = 550             # what Postfix answers itself in that case: 5.6.7
DROPPED = (smtplib.SMTPServerDisconnected, OSError)  # socket errors, timeouts, resets, TLS
IDLE_SESSION = 5.0            # seconds an unused session is kept open (Postfix caches them 2 s)
START_INPUT = 354             # DATA accepted: the body follows
LINE_START_DOT = re.compile(rb"(?m)^\.")
END_OF_DATA = b".\r\n"


def _command(conn, verb, argument):
    """One command and its reply, as smtplib's mail() and rcpt() send them but without their
    quoteaddr(), whose email.utils.parseaddr was a fifth of delivery's CPU: our envelope
    addresses are bare addresses, and delivery refuses any with a space, <, > or a control
    character before it gets here (`delivery.UNSAFE_ADDRESS`)."""
    conn.putcmd(verb, argument)
    return conn.getreply()


def _mail(conn, mail_from, options):
    if "SMTPUTF8" in options:
        conn.command_encoding = "utf-8"  # what smtplib's mail() does for it
    extra = " " + " ".join(options) if options and conn.does_esmtp else ""
    return _command(conn, "mail", f"FROM:<{mail_from}>{extra}")


def _body(raw):
    """`raw` as DATA sends it: dot-stuffed and terminated, as smtplib's data() does."""
    body = LINE_START_DOT.sub(b"..", raw)
    return body + (END_OF_DATA if body.endswith(b"\r\n") else b"\r\n" + END_OF_DATA)


class RelayUnavailable(Exception):
    """No session could be opened with the relay; the text says why (never the password)."""


class _Dropped(Exception):
    """The session ended before MAIL FROM was accepted: nothing of this mail was sent."""


def describe(exc):
    if isinstance(exc, smtplib.SMTPResponseException):
        return str(from_smtp(exc.smtp_code, exc.smtp_error))
    return as_text(str(exc)) or type(exc).__name__


class SMTPTransport:
    def __init__(self, settings):
        self.host, self.port = settings.relay_host, settings.relay_port
        self.where = f"relay {self.host}:{self.port}"
        self.timeout = settings.timeout
        self.local_hostname = settings.hostname
        self.tls = settings.tls
        self.ca_file = settings.ca_file
        self.username = settings.username
        self.password_file = settings.password_file
        self.conn = None
        self.used_at = 0.0

    # -- the session ---------------------------------------------------------

    def _context(self):
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _open(self):
        conn = None
        try:
            if self.tls == TLS_IMPLICIT:
                conn = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                        timeout=self.timeout, context=self._context())
            else:
                conn = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname,
                                    timeout=self.timeout)
            conn.ehlo_or_helo_if_needed()
            if self.tls == TLS_STARTTLS:
                if not conn.has_extn("starttls"):
                    raise RelayUnavailable(f"{self.where} does not offer STARTTLS, which tls = starttls requires")
                conn.starttls(context=self._context())
                conn.ehlo()
            if self.username:
                self._login(conn)
            return conn
        except RelayUnavailable:
            self._quit(conn)
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self._quit(conn)
            hint = " (set [outbound] ca_file to the relay's CA)" if isinstance(exc, ssl.SSLCertVerificationError) else ""
            raise RelayUnavailable(f"{self.where}: {describe(exc)}{hint}") from None

    def _login(self, conn):
        try:
            password = Path(self.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise RelayUnavailable(f"password_file {self.password_file}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        if not conn.has_extn("auth"):
            raise RelayUnavailable(f"{self.where} does not offer AUTH (username is set)")
        offered = conn.esmtp_features["auth"].upper().split()
        mechanism = next((m for m in AUTH_MECHANISMS if m in offered), None)
        if mechanism is None:
            raise RelayUnavailable(f"{self.where} offers AUTH {' '.join(offered)}, none of "
                                   f"{', '.join(AUTH_MECHANISMS)}")
        conn.user, conn.password = self.username, password
        try:  # one mechanism, once: smtplib's login() would try each in turn with the same password
            conn.auth(mechanism, getattr(conn, f"auth_{mechanism.lower()}"), initial_response_ok=mechanism == "PLAIN")
        except smtplib.SMTPAuthenticationError as exc:
            raise RelayUnavailable(f"{self.where}: authentication as {self.username} failed: "
                                   f"{describe(exc)}") from None
        finally:
            conn.password = None

    def _session(self):
        """(connection, reused)."""
        self.used_at = time.monotonic()
        if self.conn is not None:
            return self.conn, True
        self.conn = self._open()
        return self.conn, False

    def close_idle(self):
        """Let go of a session nothing was sent on for a while (the relay would time it out)."""
        if self.conn is not None and time.monotonic() - self.used_at > IDLE_SESSION:
            self.close()

    def _reset(self, *replies):
        """After a refusal: RSET, or a new session next time when the relay is closing or RSET fails."""
        if any(reply.code == CLOSING for reply in replies):
            self.close()
            return
        try:
            code, _ = self.conn.rset()
        except DROPPED:
            code = None
        if code != 250:
            self.close()

    @staticmethod
    def _quit(conn):
        if conn is None:
            return
        try:
            conn.quit()
        except Exception:  # closing a session that is already broken: nothing to keep
            pass
        conn.close()

    def close(self):
        self._quit(self.conn)
        self.conn = None

    # -- one mail ------------------------------------------------------------

    def send(self, mail_from, rcpts, raw):
        """{recipient: Reply} for one mail; raises RelayUnavailable when no session opens."""
        conn, reused = self._session()
        try:
            return self._transaction(conn, mail_from, rcpts, raw)
        except _Dropped as exc:
            self.close()
            if not reused:
                return dict.fromkeys(rcpts, no_reply(f"{self.where}: connection lost: {exc}"))
        # the relay had closed the idle session; nothing was sent: once more on a new one
        conn, _ = self._session()
        try:
            return self._transaction(conn, mail_from, rcpts, raw)
        except _Dropped as exc:
            self.close()
            return dict.fromkeys(rcpts, no_reply(f"{self.where}: connection lost: {exc}"))

    def _transaction(self, conn, mail_from, rcpts, raw):
        unicode = [a for a in (mail_from, *rcpts) if not a.isascii()]
        if unicode and not conn.has_extn("smtputf8"):
            return dict.fromkeys(rcpts, Reply(NO_SMTPUTF8, f"5.6.7 SMTPUTF8 is required for {', '.join(unicode)}, "
                                                           f"but {self.where} does not offer it"))
        options = ["SMTPUTF8"] if unicode else []
        if not raw.isascii() and conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if conn.has_extn("pipelining"):
            return self._pipelined(conn, mail_from, rcpts, raw, options)
        try:
            reply = from_smtp(*_mail(conn, mail_from, options))
        except DROPPED as exc:
            raise _Dropped(describe(exc)) from None
        if reply.code == CLOSING:  # e.g. "421 timeout exceeded" on a session left idle
            raise _Dropped(str(reply))
        if reply.outcome != ACCEPTED:
            self._reset(reply)
            return dict.fromkeys(rcpts, reply)
        replies = {}
        try:
            for address in rcpts:
                replies[address] = from_smtp(*_command(conn, "rcpt", f"TO:<{address}>"))
            accepted = [a for a in rcpts if replies[a].outcome == ACCEPTED]
            if not accepted:
                self._reset(*replies.values())
                return replies
            try:
                final = from_smtp(*conn.data(raw))
            except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
                final = from_smtp(exc.smtp_code, exc.smtp_error)
            return self._ended(replies, accepted, final)
        except DROPPED as exc:
            return self._lost(rcpts, replies, exc)

    def _pipelined(self, conn, mail_from, rcpts, raw, options):
        """The transaction of `_transaction` with MAIL, the RCPTs and DATA in one write (RFC 2920)."""
        if "SMTPUTF8" in options:
            conn.command_encoding = "utf-8"  # what smtplib's mail() does for it
        extra = "".join(" " + option for option in options)
        commands = [f"MAIL FROM:<{mail_from}>{extra}"] + [f"RCPT TO:<{a}>" for a in rcpts] + ["DATA"]
        try:
            conn.send("".join(command + "\r\n" for command in commands))
            reply = from_smtp(*conn.getreply())
        except DROPPED as exc:
            raise _Dropped(describe(exc)) from None
        if reply.code == CLOSING:
            raise _Dropped(str(reply))
        replies = {}
        try:
            for address in rcpts:
                replies[address] = from_smtp(*conn.getreply())
            data = from_smtp(*conn.getreply())
            accepted = [a for a in rcpts if replies[a].outcome == ACCEPTED] if reply.outcome == ACCEPTED else []
            if not accepted:
                if data.code == START_INPUT:  # a relay that took DATA without a recipient: an empty end
                    conn.send(END_OF_DATA)
                    conn.getreply()
                self._reset(*replies.values(), reply)
                return replies if reply.outcome == ACCEPTED else dict.fromkeys(rcpts, reply)
            if data.code == START_INPUT:
                conn.send(_body(raw))
                final = from_smtp(*conn.getreply())
            else:  # DATA itself refused
                final = data
            return self._ended(replies, accepted, final)
        except DROPPED as exc:
            return self._lost(rcpts, replies, exc)

    def _ended(self, replies, accepted, final):
        """`replies` with the end of DATA's reply for the accepted recipients; RSET after a refusal."""
        replies.update(dict.fromkeys(accepted, final))
        if final.outcome != ACCEPTED:
            self._reset(final)
        return replies

    def _lost(self, rcpts, replies, exc):
        """The connection dropped mid-transaction: the refusals stand, every other recipient waits."""
        self.close()
        lost = no_reply(f"{self.where}: connection lost: {describe(exc)}")
        return {a: replies[a] if a in replies and replies[a].outcome != ACCEPTED else lost for a in rcpts}
