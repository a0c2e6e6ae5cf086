"""Intake: the ways mail arrives (SMTP/LMTP, pipe, IMAP). Each one answers
success only after `connector.store.spool` has committed the message."""

import re

MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(?:\r?\n[ \t]+)?(<[^>\r\n]*>)", re.I | re.M)


def header_message_id(raw):
    """The Message-ID of raw message bytes, for an intake's log line ('' when it has none):
    a scan of the header bytes, no parsing on the path to the reply."""
    end = raw.find(b"\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    match = MESSAGE_ID_RE.search(raw if end < 0 else raw[:end + 1])
    return match.group(1).decode("ascii", "replace") if match else ""
