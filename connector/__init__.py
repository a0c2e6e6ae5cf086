"""connector: a self-hosted email connector for helpdesks.

The flow of one message (see README, "How a message flows"):
intake (SMTP/LMTP, pipe, IMAP) -> spool (durable) -> pipeline -> store,
and every outgoing mail through the outbox -> delivery.
"""

__version__ = "0.1.0"
