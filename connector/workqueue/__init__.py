"""The operator side of the helpdesk (seeds 000, 001): inboxes and their
entries, triage actions, staff commands. One set of functions, called by the
CLI (`connector inbox ...`, `connector inbound ...`), by staff mail commands
(`#take`, ...) and by the pipeline; each runs inside the caller's
transaction, writes one ticket event and one log line, and refuses with
`Refused` (one line: what and why) without changing anything.
"""
