"""What the IMAP scanners remember between scans: the queries on their state tables
(`ScannerFolder`, `ScannerStatus`, `ScannerMessage` in `connector.store.models`).

`connector.intake.imap` writes rows only after the spool has committed what they
refer to; `scanners status` reads them (`status_json`).
"""

import time

from connector.store import dialect
from connector.store.models import (
    SCANNER_DONE, SCANNER_FAILED, SCANNER_FINAL, SCANNER_GIVEN_UP, SCANNER_IMPORTED, ScannerFolder, ScannerMessage,
    ScannerStatus, database)

MAX_ATTEMPTS = 5  # a message that failed this often is given up: kept on the server, reported


# ScannerState.record's upsert of `count` rows, its SQL built once per count (peewee built
# it anew for every batch, which cost more than the first scan's fetch; one statement of
# many rows, not executemany: each row's step would give up and wait for the GIL again).
# An existing row keeps its rule, spool id and sha256 when the new outcome has none (a
# `done` after `imported`), and counts attempts.
RECORD_ROWS = 500
_RECORD = {}


def _record_sql(count):
    sql = _RECORD.get(count)
    if sql is None:
        sql = _RECORD[count] = (
            'INSERT INTO "scanner_message" (scanner, folder, uidvalidity, uid, state, rule, spool_id, sha256, '
            'error, attempts, updated_at) VALUES ' + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count) +
            ' ON CONFLICT (scanner, folder, uidvalidity, uid) DO UPDATE SET state = excluded.state, '
            'error = excluded.error, updated_at = excluded.updated_at, '
            'attempts = "scanner_message".attempts + excluded.attempts, '
            'rule = COALESCE(excluded.rule, "scanner_message".rule), '
            'spool_id = COALESCE(excluded.spool_id, "scanner_message".spool_id), '
            'sha256 = COALESCE(excluded.sha256, "scanner_message".sha256)')
    return sql


class ScannerState:
    """State access for one scanner (`clock` injectable for tests)."""

    def __init__(self, name, clock=time.time):
        self.name = name
        self.clock = clock

    def folder(self, folder):
        row = ScannerFolder.get_or_none((ScannerFolder.scanner == self.name) & (ScannerFolder.folder == folder))
        return row or ScannerFolder(scanner=self.name, folder=folder, uidvalidity=None, last_uid=0)

    def reset_folder(self, folder, uidvalidity):
        """A new UIDVALIDITY: UIDs start over; what was imported is still known by its sha256."""
        ScannerFolder.insert(scanner=self.name, folder=folder, uidvalidity=uidvalidity, last_uid=0,
                             updated_at=self.clock()).on_conflict(
            conflict_target=[ScannerFolder.scanner, ScannerFolder.folder],
            update={ScannerFolder.uidvalidity: uidvalidity, ScannerFolder.last_uid: 0,
                    ScannerFolder.updated_at: self.clock()}).execute()

    def advance(self, folder, uidvalidity, last_uid):
        ScannerFolder.insert(scanner=self.name, folder=folder, uidvalidity=uidvalidity, last_uid=last_uid,
                             updated_at=self.clock()).on_conflict(
            conflict_target=[ScannerFolder.scanner, ScannerFolder.folder],
            update={ScannerFolder.uidvalidity: uidvalidity,
                    ScannerFolder.last_uid: dialect.greatest(ScannerFolder.last_uid, last_uid),
                    ScannerFolder.updated_at: self.clock()}).execute()

    def rows(self, folder, uidvalidity, uids=None, states=None):
        query = ScannerMessage.select().where((ScannerMessage.scanner == self.name)
                                              & (ScannerMessage.folder == folder)
                                              & (ScannerMessage.uidvalidity == uidvalidity))
        if states is not None:
            query = query.where(ScannerMessage.state.in_(states))
        if uids is not None:
            # a range, not `uid IN (...)` of a whole chunk: peewee builds that list value by value
            uids = set(uids)
            if not uids:
                return {}
            query = query.where(ScannerMessage.uid.between(min(uids), max(uids)))
        return {row.uid: row for row in query if uids is None or row.uid in uids}

    def final_uids(self, folder, uidvalidity):
        query = (ScannerMessage.select(ScannerMessage.uid)
                 .where((ScannerMessage.scanner == self.name) & (ScannerMessage.folder == folder)
                        & (ScannerMessage.uidvalidity == uidvalidity) & ScannerMessage.state.in_(SCANNER_FINAL)))
        return {row.uid for row in query}

    def pending_uids(self, folder, uidvalidity):
        """Imported but not finished, or failed and to be retried."""
        return set(self.rows(folder, uidvalidity, states=(SCANNER_IMPORTED, SCANNER_FAILED)))

    def known_imports(self, sha256s):
        """sha256 -> spool id of messages this scanner already imported."""
        sha256s, known = list(sha256s), {}
        for start in range(0, len(sha256s), 500):  # SQL text built here: a chunk asks for a thousand
            part = sha256s[start:start + 500]
            known.update(database.execute_sql(
                f'SELECT sha256, spool_id FROM "scanner_message" WHERE scanner = ? AND state IN (?, ?) '
                f'AND sha256 IN ({", ".join("?" * len(part))})',
                [self.name, SCANNER_IMPORTED, SCANNER_DONE, *part]).fetchall())
        return known

    def record(self, folder, uidvalidity, rows):
        """Upsert outcome rows: dicts with uid, state and optional rule, spool_id, sha256, error.

        One prepared statement for the batch (a first scan records thousands); a `failed` row
        counts an attempt.
        """
        now = self.clock()
        for start in range(0, len(rows), RECORD_ROWS):
            part = rows[start:start + RECORD_ROWS]
            database.execute_sql(_record_sql(len(part)), [
                value for row in part for value in (
                    self.name, folder, uidvalidity, row["uid"], row["state"], row.get("rule"), row.get("spool_id"),
                    row.get("sha256"), row.get("error"), 1 if row["state"] == SCANNER_FAILED else 0, now)])
        if any(row["state"] == SCANNER_FAILED for row in rows):
            # A message that keeps failing is given up: kept on the server, reported in status.
            ScannerMessage.update(state=SCANNER_GIVEN_UP).where(
                (ScannerMessage.scanner == self.name) & (ScannerMessage.state == SCANNER_FAILED)
                & (ScannerMessage.attempts >= MAX_ATTEMPTS)).execute()

    def finish(self, folder, uidvalidity, uids):
        """Imported messages whose mailbox actions are done (their rows exist): `done`, their
        rule, spool id and sha256 kept. An UPDATE: an upsert's conflict path costs ~6x more."""
        now = self.clock()
        for start in range(0, len(uids), RECORD_ROWS):
            part = uids[start:start + RECORD_ROWS]
            database.execute_sql(
                'UPDATE "scanner_message" SET state = ?, error = NULL, updated_at = ? WHERE scanner = ? '
                f'AND folder = ? AND uidvalidity = ? AND uid IN ({", ".join("?" * len(part))})',
                [SCANNER_DONE, now, self.name, folder, uidvalidity, *part])

    def count_imported(self, count):
        if count:
            self._status().execute()
            ScannerStatus.update(imported=ScannerStatus.imported + count).where(
                ScannerStatus.scanner == self.name).execute()

    def success(self):
        self._status().execute()
        ScannerStatus.update(last_success=self.clock()).where(ScannerStatus.scanner == self.name).execute()

    def error(self, text):
        self._status().execute()
        ScannerStatus.update(last_error=text[:2000], last_error_at=self.clock()).where(
            ScannerStatus.scanner == self.name).execute()

    def _status(self):
        return ScannerStatus.insert(scanner=self.name, imported=0).on_conflict_ignore()


def status_json(scanner, iso):
    """`scanners status --json` for one configured scanner (`iso` formats a timestamp)."""
    name = scanner.name
    status = ScannerStatus.get_or_none(ScannerStatus.scanner == name)
    folders = {row.folder: row for row in ScannerFolder.select().where(ScannerFolder.scanner == name)}
    failed = (ScannerMessage.select().where((ScannerMessage.scanner == name)
                                            & ScannerMessage.state.in_((SCANNER_FAILED, SCANNER_GIVEN_UP)))
              .order_by(ScannerMessage.id))
    return {
        "name": name,
        "active": scanner.active,
        "host": scanner.host,
        "scan": scanner.scan,
        "last_success": iso(status.last_success) if status else None,
        "last_error": ({"text": status.last_error, "time": iso(status.last_error_at)}
                       if status and status.last_error else None),
        "last_uid": {f: (folders[f].last_uid if f in folders else None) for f in scanner.folders},
        "uidvalidity": {f: (folders[f].uidvalidity if f in folders else None) for f in scanner.folders},
        "imported": status.imported if status else 0,
        "failed": [{"folder": m.folder, "uid": m.uid, "state": m.state, "attempts": m.attempts,
                    "error": m.error} for m in failed],
    }
