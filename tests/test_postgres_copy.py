"""`connector db copy --to postgresql://...` (issue 13): an SQLite store with tickets,
replies, outgoing mail and triage moves into an empty PostgreSQL database, verified by
counts and checksums; the daemon then runs on it and carries on where SQLite stopped
(ticket numbers, threads). A non-empty target, or a running daemon, is refused."""

import psycopg

from conftest import Instance, make_mail


def test_copy_moves_the_store_and_the_daemon_carries_on_from_postgresql(tmp_path, sink, pg_url):
    inst = Instance(tmp_path, sink.port, connector__triage_notice_to="triage@example.com")
    inst.start()
    try:
        inst.send(make_mail(subject="Printer broken", sender="ann@acme.example", message_id="<first@acme.example>"))
        inst.send(make_mail(subject="Second", sender="bert@beta.example"))
        inst.send(make_mail(subject="To nobody", sender="x@acme.example", to="notifications@example.com"),
                  rcpts=["notifications@example.com"])
        inst.wait_processed(3)
        inst.wait_delivered()
        before = {"tickets": inst.tickets(), "inbound": inst.inbound(), "outbox": inst.outbox(),
                  "history": inst.json("tickets", "history", "1")}
        refused = inst.cli("db", "copy", "--to", pg_url, check=False)
        assert refused.returncode == 1 and b"stop it first" in refused.stderr
    finally:
        inst.stop()

    report = inst.json("db", "copy", "--to", pg_url)
    assert report["verified"] is True
    tables = report["tables"]
    assert tables["spool.spool"]["rows"] == 3 and tables["ticket"]["rows"] == 2
    assert tables["outbox"]["rows"] == len(before["outbox"]) and tables["triage"]["rows"] == 1
    assert all(t["verified"] and t["rows"] == t["source_rows"] for t in tables.values())

    again = inst.cli("db", "copy", "--to", pg_url, check=False)  # the target has rows now
    assert again.returncode == 1 and b"is not empty" in again.stderr

    moved = Instance(tmp_path / "pg", sink.port, connector__database=pg_url, connector__data_dir=str(inst.path / "var"),
                     connector__triage_notice_to="triage@example.com")
    assert moved.tickets() == before["tickets"] and moved.inbound() == before["inbound"]
    assert moved.outbox() == before["outbox"] and moved.json("tickets", "history", "1") == before["history"]
    moved.start()
    try:
        moved.send(make_mail(subject="Re: Printer broken", sender="ann@acme.example",
                             headers={"In-Reply-To": "<first@acme.example>"}))
        moved.send(make_mail(subject="Third", sender="carla@acme.example"))
        moved.wait_processed(5)
        numbers = sorted(t["number"] for t in moved.tickets())
        assert numbers == [1, 2, 3]  # the new ticket continues the numbers; the reply threads into #1
        inbound = [m for m in moved.ticket(1)["messages"] if m["direction"] == "in"]
        assert [m["from"] for m in inbound] == ["ann@acme.example"] * 2
    finally:
        moved.stop()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM spool.spool").fetchone()[0] == 5


def test_copy_reports_a_row_that_arrived_changed(tmp_path, pg_url):
    """The check compares what PostgreSQL holds with the source: a target that alters a row
    on the way (here a trigger) is reported, and the command exits 1."""
    from connector.settings.values import PostgresURL
    from connector.store.copy import copy
    from connector.store.db import open_store
    from connector.store.spool import store_message
    open_store(tmp_path / "c.db")
    for n in range(3):
        store_message(make_mail(subject=f"Copy {n}").as_bytes(), rcpt_to=["support@example.com"], intake="test")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        open_store(PostgresURL(pg_url))  # the schema, still empty
        conn.execute("CREATE FUNCTION nibble() RETURNS trigger AS $$ BEGIN NEW.size = NEW.size - 1; RETURN NEW; "
                     "END $$ LANGUAGE plpgsql")
        conn.execute("CREATE TRIGGER nibble BEFORE INSERT ON spool.spool FOR EACH ROW EXECUTE FUNCTION nibble()")
    report = copy(tmp_path / "c.db", PostgresURL(pg_url))
    assert report["verified"] is False
    assert report["tables"]["spool.spool"]["verified"] is False and report["tables"]["spool.spool"]["rows"] == 3
    assert all(entry["verified"] for name, entry in report["tables"].items() if name != "spool.spool")


def test_a_store_that_filed_a_nul_copies_and_verifies(tmp_path, sink, pg_url):
    """SQLite keeps a NUL in a mail's text; PostgreSQL holds U+FFFD for it: the check counts
    them as one value, so such a store can move (it was reported as differing)."""
    inst = Instance(tmp_path, sink.port)
    inst.start()
    try:
        raw = (b"From: Ann <ann@acme.example>\r\nTo: support@example.com\r\nSubject: Bad\x00byte\r\n"
               b"Message-ID: <nul-copy@acme.example>\r\n\r\nraw \x00 NUL\r\n")
        inst.send(raw, sender="ann@acme.example", rcpts=["support@example.com"])
        inst.wait_processed(1)
        inst.wait_delivered()
    finally:
        inst.stop()
    assert "\x00" in inst.rows("SELECT text FROM message")[0][0]
    report = inst.json("db", "copy", "--to", pg_url)
    assert report["verified"] is True, {t: v for t, v in report["tables"].items() if not v["verified"]}
