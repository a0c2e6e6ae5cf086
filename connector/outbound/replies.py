"""What the relay answered, as text: one `Reply` per recipient of an attempt.

The transports (smtp, maildir) return a `Reply` for every envelope recipient
they were given; `delivery` sorts them into accepted, refused (permanent) and
deferred (temporary). A reply is always shown as text (`550 5.1.1 no such
user`), never as the bytes smtplib hands over.
"""

from dataclasses import dataclass

ACCEPTED = "accepted"
REFUSED = "refused"       # permanent: 5xx, or a mail this relay can never take
DEFERRED = "deferred"     # temporary: 4xx, no answer, connection trouble


@dataclass(frozen=True)
class Reply:
    """An SMTP reply (`code` None: no reply at all, e.g. the connection failed)."""

    code: int | None
    text: str

    @property
    def outcome(self):
        if self.code is not None and 200 <= self.code < 300:
            return ACCEPTED
        if self.code is not None and self.code >= 500:
            return REFUSED
        return DEFERRED

    def __str__(self):
        return self.text if self.code is None else f"{self.code} {self.text}".rstrip()


def as_text(message):
    """smtplib's reply text (bytes, multi-line) as one readable line."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return " ".join(str(message).split())


def from_smtp(code, message):
    return Reply(code, as_text(message))


def no_reply(text):
    """A failure without an SMTP answer (refused connection, timeout, TLS): temporary."""
    return Reply(None, as_text(text))


ACCEPTED_LOCALLY = Reply(250, "2.0.0 written to the maildir")
