"""Edges of the work-queue actions an outside review found: each failed before its fix.

- `inbound replay --force` of an item staff already filed would file it twice;
- `inbound replay --force` of a triaged item added a second item for the same mail;
- a deleted triage item's id was given to the next item (SQLite reuses the
  highest rowid), so a notice or a command naming the deleted item acted on
  another mail, and deleting that one crashed on the tombstone;
- a customer's mail to an inbox address with the notifications address in Cc
  went to triage instead of becoming a ticket;
- an operator action held the spool's write lock (intake waited);
- with `auto_upgrade = no` the inbox and inbound commands upgraded anyway;
- a triage action by an employee's second address recorded that alias;
- a new ticket's inbox was chosen while writing, so a dry run did not show it.
"""

import subprocess
import sys

import pytest

from conftest import Instance, make_mail, wait_for
from test_inbox import write_inboxes
from test_triage_actions import item_of, refused, to_notifications


def test_replay_force_of_a_filed_item_is_refused_and_files_nothing(daemon):
    to_notifications(daemon, make_mail(subject="Lost order", sender="nobody@random.example"))
    daemon.wait_processed(1)
    item = item_of(daemon, "Lost order")
    daemon.cli("inbound", "create-ticket", str(item["id"]), "--as", "bob@example.com")
    line = refused(daemon, "inbound", "replay", str(item["id"]), "--force")
    assert "filed already" in line
    assert len(daemon.tickets()) == 1 and len(daemon.inbound()) == 1


def test_replay_force_of_a_triaged_item_keeps_one_item_with_its_id(daemon):
    to_notifications(daemon, make_mail(subject="Lost order", sender="nobody@random.example"))
    daemon.wait_processed(1)
    item = item_of(daemon, "Lost order")
    processed = daemon.rows("SELECT processed_at FROM processing")[0][0]
    daemon.cli("inbound", "replay", str(item["id"]), "--force")
    wait_for(lambda: daemon.rows("SELECT processed_at, state FROM processing")[0] != (processed, "done")
             and daemon.rows("SELECT state FROM processing")[0][0] == "done", what="the replay")
    items = daemon.inbound()
    assert [(i["id"], i["status"], i["reason"]) for i in items] == [(item["id"], item["status"], item["reason"])]


def test_a_deleted_items_id_is_never_given_again(daemon):
    to_notifications(daemon, make_mail(subject="Win a prize", sender="spam@bad.example"))
    daemon.wait_processed(1)
    first = item_of(daemon, "Win a prize")["id"]
    daemon.cli("inbound", "delete", str(first), "--as", "bob@example.com")
    to_notifications(daemon, make_mail(subject="Another prize", sender="spam@worse.example"))
    daemon.wait_processed(2)
    second = item_of(daemon, "Another prize")["id"]
    assert second > first
    daemon.cli("inbound", "delete", str(second), "--as", "bob@example.com")   # no tombstone clash
    assert daemon.inbound() == []


def test_mail_to_an_inbox_address_with_notifications_in_cc_is_a_request(instance):
    write_inboxes(instance)
    instance.start()
    instance.send(make_mail(subject="VPN down", sender="ann@acme.example", to="tech@example.com",
                            cc="notifications@example.com"),
                  rcpts=["tech@example.com", "notifications@example.com"])
    instance.wait_processed(1)
    assert [t["subject"] for t in instance.tickets()] == ["VPN down"]
    assert instance.inbound() == []


def test_the_plan_names_the_inbox_a_new_ticket_lands_in(instance, tmp_path):
    write_inboxes(instance)
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_mail(subject="VPN down", sender="ann@acme.example", to="tech@example.com").as_bytes())
    plan = instance.json("replay", "--dry-run", str(eml), "--recipient", "tech@example.com")
    assert plan["inboxes"] == [{"inbox": "Technical", "placed_by": "address"}]
    instance.cli("replay", str(eml), "--recipient", "tech@example.com")
    assert [e["inbox"] for e in instance.json("inbox", "list")] == ["Technical"]


@pytest.mark.sqlite_only("an SQLite file lock")
def test_an_operator_action_leaves_the_spool_writable(instance):
    """While an operator transaction holds the main file, the intake can still commit."""
    instance.open_store()  # makes the store, as a first `connector run` does
    code = (
        "import sqlite3, sys\n"
        "from connector.store.db import open_store\n"
        "from connector.store.queries import write_transaction\n"
        f"open_store({str(instance.path / 'var' / 'connector.db')!r})\n"
        "with write_transaction():\n"
        "    spool = sqlite3.connect(sys.argv[1], timeout=0.2)\n"
        "    spool.execute('insert into spool (received_at, intake, rcpt_to, raw, size, sha256) '\n"
        "                  'values (0, ?, ?, ?, 1, ?)', ('test', '[]', b'x', 'x'))\n"
        "    spool.commit()\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code, str(instance.path / "var" / "connector-spool.db")],
                            capture_output=True, cwd=instance.path, timeout=30)
    assert result.stdout.strip() == b"ok", result.stderr.decode()


def test_auto_upgrade_no_is_honoured_by_the_inbox_and_inbound_commands(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__auto_upgrade="no")
    write_inboxes(inst)
    inst.open_store()  # a store at the latest schema
    with inst.connect() as conn:   # as if the last migration had not run yet
        last = conn.execute("select name from schema_migration order by name desc limit 1").fetchone()[0]
        conn.execute("delete from schema_migration where name = ?", (last,))
    for args in (("inbox", "list"), ("inbound", "list")):
        result = inst.cli(*args, check=False)
        assert result.returncode != 0 and b"connector db upgrade" in result.stderr, (args, result.stderr)
    with inst.connect() as conn:
        assert conn.execute("select count(*) from schema_migration where name = ?", (last,)).fetchone()[0] == 0


def test_a_triage_action_records_the_employees_first_address(daemon):
    to_notifications(daemon, make_mail(subject="Refund", sender="ann@acme.example"))
    daemon.wait_processed(1)
    item = item_of(daemon, "Refund")
    number = int(daemon.cli("inbound", "create-ticket", str(item["id"]), "--as",
                            "Jane.Doe@home.example").stdout.decode().strip())
    created = daemon.json("tickets", "history", str(number))[0]
    assert (created["event"], created["by"]) == ("ticket_created", "jane@example.com")
