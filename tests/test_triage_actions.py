"""Seed 000 triage actions by CLI, over the real daemon: create a ticket from an
item, attach it to a ticket, close, set status, delete as spam (tombstone), and
the notice's Cc. Every refusal exits 1 with one line and changes nothing."""

import json
from email import message_from_bytes, policy

import pytest

from conftest import Instance, make_mail

NOTICE_TO, NOTICE_CC = "desk@example.com", "lead@example.com"


def to_notifications(inst, msg):
    """A mail to the notifications address only: a triage item (notifications_address)."""
    inst.send(msg, rcpts=["notifications@example.com"])


def item_of(inst, subject):
    return next(i for i in inst.inbound() if i["subject"] == subject)


def with_attachment(subject, sender="ann@acme.example"):
    msg = make_mail(subject=subject, sender=sender, to="notifications@example.com",
                    body="Hello,\nthe invoice is attached.\n")
    msg.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg


def history(inst, number):
    return [(e["event"], e["via"], e["by"]) for e in inst.json("tickets", "history", str(number))]


def refused(inst, *args):
    result = inst.cli(*args, check=False)
    assert result.returncode == 1, (args, result.returncode, result.stderr)
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connector: "), lines
    return lines[0]


def state(inst):
    """Everything an action could change, to show a refusal changed nothing."""
    tickets = [inst.ticket(t["number"]) for t in inst.tickets()]
    return inst.inbound(), tickets, inst.outbox(), [inst.json("tickets", "history", str(t["number"])) for t in tickets]


def test_create_ticket_files_the_mail_as_a_new_ticket_and_the_reply_threads(daemon, sink):
    to_notifications(daemon, with_attachment("Invoice question"))
    daemon.wait_processed(1)
    item = item_of(daemon, "Invoice question")
    assert item["reason"] == "notifications_address" and daemon.tickets() == []

    result = daemon.cli("inbound", "create-ticket", str(item["id"]), "--as", "bob@example.com")
    number = int(result.stdout.decode().strip())

    ticket = daemon.ticket(number)
    assert (ticket["contact"], ticket["account"], ticket["manager"]) == ("ann@acme.example", "Acme", "jane@example.com")
    first = ticket["messages"][0]
    assert first["direction"] == "in" and first["from"] == "ann@acme.example" and first["public"] is True
    assert first["attachments"] == ["invoice.pdf"] and "invoice is attached" in first["text"]
    assert sorted(ticket["recipients"]["employees"]) == ["bob@example.com", "jane@example.com"]
    assert ticket["recipients"]["external"] == [{"address": "ann@acme.example", "kind": "to"}]
    closed = item_of(daemon, "Invoice question")
    assert (closed["status"], closed["ticket"]) == ("closed", number)
    events = history(daemon, number)
    assert events[:2] == [("ticket_created", "cli", "bob@example.com"), ("request_by_email", "mail", "ann@acme.example")]
    created = daemon.json("tickets", "history", str(number))[0]
    assert created["detail"]["triage_item"] == item["id"]
    daemon.wait_delivered()
    kinds = {o["kind"]: o for o in daemon.outbox()}
    assert set(kinds) == {"auto_response", "distribution"}
    assert kinds["auto_response"]["rcpt"] == ["ann@acme.example"] and kinds["auto_response"]["ticket"] == number
    answer = message_from_bytes(sink.to("ann@acme.example")[0][2], policy=policy.default)
    assert f"#{number}" in answer["Subject"]
    assert sorted(a for m in sink.messages for a in m[1] if a != "ann@acme.example") == \
        ["bob@example.com", "jane@example.com"]

    # The customer answers the auto-response: it threads into the new ticket by itself.
    reply = make_mail(subject=f"Re: {answer['Subject']}", sender="ann@acme.example", body="Any news?\n",
                      headers={"In-Reply-To": answer["Message-ID"], "References": answer["Message-ID"]})
    daemon.send(reply)
    daemon.wait_processed(2)
    assert daemon.spool_states()[-1][2:] == ("follow_up", "customer")
    assert daemon.ticket(number)["messages"][-1]["reply_text"].startswith("Any news?")
    assert len(daemon.inbound()) == 1

    # The item is linked and closed: a second create-ticket is refused, nothing changes.
    before = state(daemon)
    line = refused(daemon, "inbound", "create-ticket", str(item["id"]), "--as", "bob@example.com")
    assert "closed already" in line and f"ticket {number}" in line
    assert state(daemon) == before
    # Opened again, it is still refused: its mail is in a ticket already.
    daemon.cli("inbound", "status", str(item["id"]), "awaiting_review")
    line = refused(daemon, "inbound", "create-ticket", str(item["id"]), "--as", "bob@example.com")
    assert "filed already" in line and len(daemon.tickets()) == 1


def test_create_ticket_quiet_sends_no_auto_response_and_json_names_the_ticket(daemon, sink):
    to_notifications(daemon, make_mail(subject="Quiet one", sender="zed@other.example",
                                       to="notifications@example.com"))
    daemon.wait_processed(1)
    item = item_of(daemon, "Quiet one")
    out = json.loads(daemon.cli("inbound", "create-ticket", str(item["id"]), "--as", "jane.doe@home.example",
                                "--quiet", "--json").stdout)
    assert out == {"item": item["id"], "ticket": 1}
    ticket = daemon.ticket(1)
    assert ticket["contact"] == "zed@other.example" and ticket["account"] is None
    daemon.wait_delivered()
    assert [o["kind"] for o in daemon.outbox()] == ["distribution"]     # bob (receive: all); no auto-response
    assert sink.to("zed@other.example") == []
    assert history(daemon, 1)[0] == ("ticket_created", "cli", "jane@example.com")  # her first address


def test_attach_with_add_recipient_files_a_follow_up_and_the_senders_next_mail_threads(daemon, sink):
    daemon.send(make_mail(subject="Broken printer", sender="ann@acme.example"))
    daemon.wait_processed(1)
    daemon.send(make_mail(subject="Re: [Ticket #1] Broken printer", sender="max@partner.example",
                          body="I am Ann's colleague: it is the paper tray.\n"))
    daemon.wait_processed(2)
    item = item_of(daemon, "Re: [Ticket #1] Broken printer")
    assert item["reason"] == "unknown_sender"
    daemon.wait_delivered()
    sent_before = len(sink.messages)

    daemon.cli("inbound", "attach", str(item["id"]), "1", "--as", "jane@example.com", "--add-recipient")

    ticket = daemon.ticket(1)
    last = ticket["messages"][-1]
    assert (last["from"], last["public"], last["internal"]) == ("max@partner.example", True, False)
    assert {"address": "max@partner.example", "kind": "cc"} in ticket["recipients"]["external"]
    assert ticket["in_inbox"] is True
    closed = item_of(daemon, item["subject"])
    assert (closed["status"], closed["ticket"]) == ("closed", 1)
    events = daemon.json("tickets", "history", "1")
    assert [(e["event"], e["via"], e["by"]) for e in events[-2:]] == [
        ("customer_replied", "mail", "max@partner.example"), ("triage_attached", "cli", "jane@example.com")]
    assert events[-1]["detail"]["item"] == item["id"] and events[-1]["detail"]["added_recipient"] is True
    daemon.wait_delivered()
    copies = sink.messages[sent_before:]
    assert sorted(a for m in copies for a in m[1]) == ["bob@example.com", "jane@example.com"]  # distributed

    # Max is on the ticket now: his next mail is filed without triage.
    daemon.send(make_mail(subject="Re: [Ticket #1] Broken printer", sender="max@partner.example",
                          body="Fixed it.\n"))
    daemon.wait_processed(3)
    assert daemon.spool_states()[-1][2:] == ("follow_up", "customer")
    assert len(daemon.inbound()) == 1


def test_attach_internal_and_quiet_files_not_public_and_mails_nobody(daemon, sink):
    daemon.send(make_mail(subject="Slow VPN", sender="ann@acme.example"))
    daemon.wait_processed(1)
    daemon.send(make_mail(subject="Notes about the VPN", sender="jane@example.com"))  # staff, no ticket
    daemon.wait_processed(2)
    item = item_of(daemon, "Notes about the VPN")
    assert item["reason"] == "staff_without_ticket"
    daemon.wait_delivered()
    outbox_before = len(daemon.outbox())
    daemon.cli("inbound", "attach", str(item["id"]), "1", "--as", "bob@example.com", "--internal", "--quiet")
    last = daemon.ticket(1)["messages"][-1]
    assert (last["from"], last["public"], last["internal"]) == ("jane@example.com", False, True)
    assert len(daemon.outbox()) == outbox_before
    assert history(daemon, 1)[-2:] == [("employee_replied", "mail", "jane@example.com"),
                                       ("triage_attached", "cli", "bob@example.com")]


def test_a_bounce_attached_to_its_ticket_is_filed_and_never_mailed_on(daemon, sink):
    from test_triage_and_automatic import BOUNCE
    daemon.send(make_mail(subject="Order 17", sender="ann@acme.example"))
    daemon.send(BOUNCE, "", ["support@example.com"])
    daemon.wait_processed(2)
    item = item_of(daemon, "Undelivered Mail Returned to Sender")
    assert item["reason"] == "bounce"
    daemon.wait_delivered()
    outbox_before = len(daemon.outbox())
    daemon.cli("inbound", "attach", str(item["id"]), "1", "--as", "bob@example.com")
    filed = [m for m in daemon.ticket(1)["messages"] if m["subject"] == "Undelivered Mail Returned to Sender"]
    assert [(m["direction"], m["from"].lower(), m["public"]) for m in filed] == [
        ("in", "mailer-daemon@mx.acme.example", True)]
    assert daemon.spool_states()[1][2:] == ("follow_up", "triage_attached")
    assert len(daemon.outbox()) == outbox_before                    # automatic mail: no copies


def test_close_and_status(daemon, sink):
    to_notifications(daemon, make_mail(subject="Newsletter signup", to="notifications@example.com"))
    daemon.wait_processed(1)
    item_id = str(item_of(daemon, "Newsletter signup")["id"])
    logged = []
    for status in ("needs_attention", "awaiting_review"):
        result = daemon.cli("inbound", "status", item_id, status, "--json")
        assert json.loads(result.stdout)["status"] == status
        assert daemon.inbound()[0]["status"] == status
        logged.append(result.stderr)
    logged.append(daemon.cli("inbound", "close", item_id).stderr)
    assert daemon.inbound()[0]["status"] == "closed"
    logged.append(daemon.cli("inbound", "status", item_id, "needs_attention", "--as", "bob@example.com").stderr)
    logged.append(daemon.cli("inbound", "status", item_id, "closed").stderr)
    assert daemon.inbound()[0]["status"] == "closed"
    events = [json.loads(line)["event"] for out in logged for line in out.splitlines() if line.startswith(b"{")]
    assert [e for e in events if e.startswith("triage.")] == [
        "triage.status_changed", "triage.status_changed", "triage.closed", "triage.status_changed", "triage.closed"]
    assert daemon.tickets() == []
    daemon.cli("inbound", "status", item_id, "needs_attention")
    status = daemon.cli("status", "--json", check=False)
    assert "need attention" not in status.stdout.decode()     # staff's own marking is no alarm


def test_close_and_status_as_an_employee_note_who_did_it(daemon, sink):
    """`--as` on close and status means what it means on the other actions (an active
    employee, else refused) and is recorded like theirs: on the item, in its detail."""
    to_notifications(daemon, make_mail(subject="Who closed this", to="notifications@example.com"))
    daemon.wait_processed(1)
    item_id = str(item_of(daemon, "Who closed this")["id"])
    before = state(daemon)
    assert "not an active employee" in refused(daemon, "inbound", "close", item_id, "--as", "ann@acme.example")
    assert "not an active employee" in refused(daemon, "inbound", "status", item_id, "needs_attention",
                                               "--as", "nobody@example.com")
    assert state(daemon) == before
    marked = json.loads(daemon.cli("inbound", "status", item_id, "needs_attention", "--as", "jane@example.com",
                                   "--json").stdout)
    assert marked["status"] == "needs_attention" and "marked needs_attention by jane@example.com" in marked["detail"]
    result = daemon.cli("inbound", "close", item_id, "--as", "bob@example.com", "--json")
    closed = json.loads(result.stdout)
    assert closed["status"] == "closed"
    assert closed["detail"].endswith("marked needs_attention by jane@example.com; marked closed by bob@example.com")
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith(b"{")]
    assert [(e["event"], e["by"]) for e in logged if e["event"].startswith("triage.")] == \
        [("triage.closed", "bob@example.com")]
    assert "marked closed by bob@example.com" in refused(daemon, "inbound", "attach", item_id, "1", "--as",
                                                         "bob@example.com")   # "closed already (its detail)"


def test_every_refusal_exits_1_with_one_line_and_changes_nothing(daemon, sink):
    daemon.send(make_mail(subject="Existing", sender="ann@acme.example"))
    to_notifications(daemon, make_mail(subject="From a stranger", sender="eve@else.example",
                                       to="notifications@example.com"))
    daemon.send(make_mail(subject="Staff memo", sender="bob@example.com"))
    daemon.wait_processed(3)
    daemon.wait_delivered()
    stranger = str(item_of(daemon, "From a stranger")["id"])
    staff = str(item_of(daemon, "Staff memo")["id"])
    before = state(daemon)
    cases = [
        (("inbound", "create-ticket", "99", "--as", "bob@example.com"), "no inbound item 99"),
        (("inbound", "attach", "99", "1", "--as", "bob@example.com"), "no inbound item 99"),
        (("inbound", "close", "99"), "no inbound item 99"),
        (("inbound", "status", "99", "closed"), "no inbound item 99"),
        (("inbound", "delete", "99", "--as", "bob@example.com"), "no inbound item 99"),
        (("inbound", "attach", stranger, "42", "--as", "bob@example.com"), "no ticket 42"),
        (("inbound", "create-ticket", stranger, "--as", "ina@example.com"), "not an active employee"),
        (("inbound", "create-ticket", stranger, "--as", "ann@acme.example"), "not an active employee"),
        (("inbound", "delete", stranger, "--as", "nobody@example.com"), "not an active employee"),
        (("inbound", "attach", stranger, "1", "--as", "ina@example.com"), "not an active employee"),
        (("inbound", "create-ticket", stranger), "--as (missing)"),
        (("inbound", "status", stranger, "spam"), "not a status"),
        (("inbound", "status", stranger, "awaiting_review"), "awaiting_review already"),
        (("inbound", "create-ticket", staff, "--as", "jane@example.com"), "not a customer"),
        (("inbound", "attach", staff, "1", "--as", "jane@example.com", "--add-recipient"), "--add-recipient"),
    ]
    for args, expected in cases:
        assert expected in refused(daemon, *args), args
    assert state(daemon) == before
    daemon.cli("inbound", "close", stranger)
    assert "closed already" in refused(daemon, "inbound", "close", stranger)
    assert "closed already" in refused(daemon, "inbound", "attach", stranger, "1", "--as", "bob@example.com")


def spool_raw(inst, spool_id):
    with inst.connect() as conn:
        return bytes(conn.execute("select raw from spool.spool where id = ?", (spool_id,)).fetchone()[0])


@pytest.fixture
def noticed(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__triage_notice_to=NOTICE_TO,
                    connector__triage_notice_cc=NOTICE_CC).start()
    yield inst
    inst.stop()


def test_notice_is_copied_to_triage_notice_cc(noticed, sink, tmp_path):
    msg = make_mail(subject="Who reads this", sender="eve@else.example", to="notifications@example.com")
    path = tmp_path / "m.eml"
    path.write_bytes(bytes(msg))
    plan = json.loads(noticed.cli("replay", "--dry-run", "--json", "--recipient", "notifications@example.com",
                                  str(path)).stdout)
    assert [(o["kind"], o["to"], o["cc"]) for o in plan["outgoing"]] == [("notice", [NOTICE_TO], [NOTICE_CC])]
    to_notifications(noticed, msg)
    noticed.wait_processed(1)
    noticed.wait_delivered()
    [(_, rcpts, raw)] = sink.messages
    assert sorted(rcpts) == [NOTICE_TO, NOTICE_CC]
    notice = message_from_bytes(raw, policy=policy.default)
    assert [a.addr_spec for a in notice["To"].addresses] == [NOTICE_TO]
    assert [a.addr_spec for a in notice["Cc"].addresses] == [NOTICE_CC]


def notice_bodies(sink, address=NOTICE_TO):
    return [message_from_bytes(raw, policy=policy.default).get_body().get_content().replace("\r\n", "\n")
            for _, rcpts, raw in sink.messages if address in rcpts]


def test_the_notice_names_its_item_for_inbound_show(noticed, sink):
    """Seed 000: from the New Inbound Message Notice to the item: its id in the text, and
    `connector inbound show ID` shows that item."""
    for subject in ("First stranger", "Second stranger"):
        to_notifications(noticed, make_mail(subject=subject, sender="eve@else.example", to="notifications@example.com"))
    noticed.wait_processed(2)
    noticed.wait_delivered()
    bodies = notice_bodies(sink)
    assert len(bodies) == 2
    for subject in ("First stranger", "Second stranger"):
        item = item_of(noticed, subject)
        body = next(b for b in bodies if subject in b)
        assert f"  Item:     {item['id']}\n" in body and f"connector inbound show {item['id']}\n" in body
        assert json.loads(noticed.cli("inbound", "show", str(item["id"]), "--json").stdout) == item
        assert noticed.cli("inbound", "show", str(item["id"])).stdout.decode().count(subject) == 1
    assert "no inbound item 99" in refused(noticed, "inbound", "show", "99")


OLD_NOTICE_TEMPLATE = """\
Subject: Site notice ({{ reason }}): {{ message.subject }}

Someone wrote from {{ message.from_addr }}; see connector inbound list.
"""


def test_a_site_notice_template_without_the_item_id_still_works(tmp_path, sink):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "inbound_notice.txt.j2").write_text(OLD_NOTICE_TEMPLATE)
    inst = Instance(tmp_path, sink.port, connector__triage_notice_to=NOTICE_TO)
    try:
        inst.cli("check-config")
        inst.start()
        to_notifications(inst, make_mail(subject="Old style", sender="eve@else.example", to="notifications@example.com"))
        inst.wait_processed(1)
        inst.wait_delivered()
        [body] = notice_bodies(sink)
        assert body.strip() == "Someone wrote from eve@else.example; see connector inbound list."
    finally:
        inst.stop()


def test_delete_removes_the_bytes_keeps_a_tombstone_and_the_same_mail_is_not_triaged_again(noticed, sink):
    spam = make_mail(subject="You won a prize", sender="prize@spam.example", to="notifications@example.com",
                     body="Click here.\n", message_id="<prize-1@spam.example>")
    to_notifications(noticed, spam)
    noticed.wait_processed(1)
    item = item_of(noticed, "You won a prize")
    spool_id = item["spool_id"]
    noticed.wait_delivered()
    assert len(sink.messages) == 1 and spool_raw(noticed, spool_id)

    result = noticed.cli("inbound", "delete", str(item["id"]), "--as", "bob@example.com", "--json")
    out = json.loads(result.stdout)
    assert out["deleted"] == item["id"] and out["by"] == "bob@example.com"
    assert b'"event": "triage.deleted"' in result.stderr

    assert noticed.inbound() == []
    assert spool_raw(noticed, spool_id) == b""
    with noticed.connect() as conn:
        stone = conn.execute("select item_id, spool_id, message_id, from_addr, subject, deleted_by, sha256 "
                             "from triage_tombstone").fetchall()
    assert stone[0][:6] == (item["id"], spool_id, "<prize-1@spam.example>", "prize@spam.example",
                            "You won a prize", "bob@example.com") and len(stone[0][6]) == 64
    export = noticed.cli("message", "export", "--spool", str(spool_id), check=False)
    assert export.returncode == 1 and export.stdout == b""
    assert b"deleted as spam or phishing" in export.stderr and b"bob@example.com" in export.stderr

    # The same mail again: the same bytes, and relayed once more (a new Received line).
    to_notifications(noticed, spam)
    relayed = b"Received: from mx2.spam.example by mx.example.com; Tue, 1 Dec 2026 10:00:00 +0000\r\n" + \
        spam.as_bytes().replace(b"\n", b"\r\n")
    noticed.send(relayed, "prize@spam.example", ["notifications@example.com"])
    noticed.wait_processed(3)
    states = noticed.spool_states()
    assert [row[2] for row in states[1:]] == ["duplicate", "duplicate"]
    assert all("deleted" in row[3] for row in states[1:])
    assert noticed.inbound() == []
    noticed.wait_delivered()
    assert len(sink.messages) == 1                                # no new notice
    assert spool_raw(noticed, states[-1][0])                      # the copy is kept, as every duplicate


def test_delete_refuses_a_mail_that_is_filed_in_a_ticket(daemon, sink):
    to_notifications(daemon, make_mail(subject="Real question", to="notifications@example.com"))
    daemon.wait_processed(1)
    item = str(item_of(daemon, "Real question")["id"])
    daemon.cli("inbound", "create-ticket", item, "--as", "bob@example.com")
    assert "filed in a ticket" in refused(daemon, "inbound", "delete", item, "--as", "bob@example.com")
    assert daemon.ticket(1)["message_count"] >= 1 and len(daemon.inbound()) == 1


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_from_before_tombstones_opens_and_keeps_its_items(tmp_path):
    from connector.store import migrations
    from connector.store.db import open_store
    path = tmp_path / "c.db"
    db = open_store(path)
    db.execute_sql('DROP TABLE "triage_tombstone"')
    db.execute_sql('DELETE FROM "schema_migration" WHERE "name" = ?', ("0007_triage_tombstones",))
    db.execute_sql('INSERT INTO "triage" ("spool_id", "status", "reason", "detail", "from_addr", "subject", '
                   '"received_at") VALUES (1, ?, ?, ?, ?, ?, 1.0)',
                   ("awaiting_review", "unknown_sender", "", "a@b.example", "old"))
    db.close()
    db = open_store(path)
    assert migrations.status(db)["pending"] == []
    tables = {row[0] for row in db.execute_sql("select name from sqlite_master where type = 'table'").fetchall()}
    assert "triage_tombstone" in tables
    assert db.execute_sql('SELECT "subject" FROM "triage"').fetchall() == [("old",)]
