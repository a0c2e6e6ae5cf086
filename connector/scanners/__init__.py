"""IMAP mail scanners (seed 003): which mailboxes to read and the rules that
decide what becomes of each message. Nothing here speaks IMAP.

    schema.py      every key of config/scanners.yaml: type, default, doc (the example and docs tables)
    config.py      config/scanners.yaml -> ScannerConfig (validated; ConfigError otherwise),
                   read by its users: connector.checks and the scanners' commands
    conditions.py  the condition tree (any/all, fields, operators): parse and evaluate
    rules.py       first matching rule -> a Decision (import? hints, mailbox actions)
    service.py     the daemon's scanner threads: connect, scan, wait, reload

The IMAP client loop lives in `connector.intake.imap`; it stores what a
decision imports with `connector.store.spool.store_messages` and only then
flags, moves or deletes. What the scanners remember (UIDVALIDITY and last UID
per folder, status, the outcome per UID) is the store's: the models in
`connector.store.models`, the queries in `connector.store.scanners`.
"""
