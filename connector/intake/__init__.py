"""Intake: the ways mail arrives (SMTP/LMTP, pipe, IMAP). Each one answers
success only after `connector.store.spool` has committed the message."""
