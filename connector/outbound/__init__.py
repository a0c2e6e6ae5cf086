"""Outbound: compose outgoing mail, keep it in the outbox, deliver it."""
