"""SMTP and LMTP intake (aiosmtpd).

RCPT is accepted only for our own addresses (public, notifications and their
+tag forms): never an open relay. DATA is answered 250 only after the spool
has committed the raw bytes and the envelope; an internal error answers 451
so the sender retries. aiosmtpd itself answers 552 above max_message_size.
"""

import asyncio

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from connector.intake import header_message_id
from connector.log import get_logger

log = get_logger("intake")

# Replies (RFC 5321 / RFC 3463 codes).
R_OK = "250 2.1.5 OK"
R_NOT_OURS = "550 5.1.1 <{}>: recipient not accepted here (this is not a relay)"
R_QUEUED = "250 2.0.0 OK: queued as {}"
R_TEMPFAIL = "451 4.3.0 Temporary failure storing the message; try again later"


def null_path(mail_from):
    """The envelope sender, with the null return path `<>` as ''."""
    return "" if not mail_from or mail_from.strip() == "<>" else mail_from


class IntakeHandler:
    """aiosmtpd handler: RCPT check and durable DATA."""

    def __init__(self, is_own_address, committer, protocol):
        self.is_own_address = is_own_address
        self.committer = committer
        self.protocol = protocol

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.is_own_address(address):
            log.warning("intake.rcpt_rejected", rcpt=address, mail_from=envelope.mail_from,
                        peer=session.peer[0] if session.peer else None)
            return R_NOT_OURS.format(address)
        envelope.rcpt_tos.append(address)
        return R_OK

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        try:
            spool_id = await self.committer.submit(
                asyncio.get_running_loop(), raw, mail_from=null_path(envelope.mail_from),
                rcpt_to=list(envelope.rcpt_tos), intake=self.protocol)
        except Exception as exc:
            log.error("intake.store_failed", error=f"{type(exc).__name__}: {exc}", size=len(raw))
            reply = R_TEMPFAIL
        else:
            log.info("intake.accepted", spool_id=spool_id, message_id=header_message_id(raw), size=len(raw),
                     mail_from=envelope.mail_from, rcpt=envelope.rcpt_tos, intake=self.protocol)
            reply = R_QUEUED.format(spool_id)
        if self.protocol == "lmtp":  # one reply per accepted recipient
            return "\r\n".join([reply] * len(envelope.rcpt_tos))
        return reply


async def start_server(settings, handler):
    """Listen on [smtp] listen; returns the asyncio server."""
    cls = LMTP if settings.protocol == "lmtp" else SMTP
    loop = asyncio.get_running_loop()

    def factory():
        return cls(handler, data_size_limit=settings.max_message_size, hostname=settings.hostname,
                   ident="connector", enable_SMTPUTF8=True, decode_data=False)

    return await loop.create_server(factory, host=settings.listen_host, port=settings.listen_port,
                                    reuse_address=True)
