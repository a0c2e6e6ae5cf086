"""IMAP mail scanners (seed 003): which mailboxes to read and the rules that
decide what becomes of each message.

    config.py      config/scanners.yaml -> ScannerConfig (validated; ConfigError otherwise)
    conditions.py  the condition tree (any/all, fields, operators): parse and evaluate
    rules.py       first matching rule -> a Decision (import? hints, mailbox actions)
    state.py       per-scanner state: UIDVALIDITY + last UID per folder, status, per-UID outcome

The IMAP client loop lives in `connector.intake.imap`; it stores what a
decision imports with `connector.store.spool.store_message` and only then
flags, moves or deletes.
"""
