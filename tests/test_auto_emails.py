"""Automatic e-mails on ticket events (seed 002) over the real daemon, real SMTP and the CLI:
each event and recipient group, one mail per (event, recipient), the causing person left
out, the requester not confirmed twice, `auto-emails preview`, deadlines firing once and
escalating, and a kill -9 during delivery sending nothing twice."""

import email
import email.policy
import sqlite3
import time

import pytest

from conftest import make_mail, wait_for

INBOXES_YAML = """\
inboxes:
  - name: Technical
    members: [bob@example.com, carl@example.com]
    address: tech@example.com
    sender: {address: techdesk@example.com, name: Tech Desk}
    escalate_to: Finance
  - name: Finance
    members: [jane@example.com]
default_inbox: Technical
"""

AUTO_EMAILS_YAML = """\
default_sender: {address: helpdesk@example.com, name: Helpdesk}
dispatchers: [disp1@example.com, disp2@example.com]
server_url: https://hd.example
auto_emails:
  - name: ack
    event: ticket_created
    to: [requester]
    template: ticket_created.txt.j2
  - name: forwarded
    event: ticket_forwarded
    to: [resource, dispatchers]
    template: ticket_forwarded.txt.j2
  - name: forwarded-copy
    event: ticket_forwarded
    to: [resource, boss@example.com, manager]
    template: ticket_forwarded.txt.j2
  - name: overdue
    event: deadline_passed
    to: [resource, dispatchers]
    template: deadline_passed.txt.j2
  - name: escalated
    event: ticket_escalated
    to: [resource]
    template: ticket_forwarded.txt.j2
  - name: taken
    event: ticket_taken
    to: [owner, requester, external]
    template: ticket_forwarded.txt.j2
"""


def configure(instance, auto_emails=AUTO_EMAILS_YAML, inboxes=INBOXES_YAML):
    instance.path.joinpath("config", "inboxes.yaml").write_text(inboxes)
    if auto_emails is not None:
        instance.path.joinpath("config", "auto_emails.yaml").write_text(auto_emails)
    return instance


@pytest.fixture
def desk(instance):
    return configure(instance).start()


def new_ticket(daemon, subject="Printer jammed", sender="ann@acme.example", to="support@example.com", cc=None):
    before = len(daemon.spool_states())
    daemon.send(make_mail(subject=subject, sender=sender, to=to, cc=cc))
    daemon.wait_processed(before + 1)
    return max(t["number"] for t in daemon.tickets())


def auto_rows(instance):
    with instance.connect() as conn:
        return conn.execute("select o.rcpt, o.auto_key, o.status, o.subject from outbox o "
                            "where o.kind = 'auto_email' order by o.id").fetchall()


def auto_to(instance):
    return sorted(row[0].strip('[]"') for row in auto_rows(instance))


def entry_of(instance, number):
    return next(e for e in instance.json("inbox", "list") if e["ticket"] == number)


def received(sink, address):
    """The automatic mails (not the copies of the ticket's mail) the relay got for `address`."""
    mails = [email.message_from_bytes(raw, policy=email.policy.default) for _, _, raw in sink.to(address)]
    return [m for m in mails if m["Precedence"] == "bulk"]


def test_ticket_created_goes_to_the_requester_once_with_our_headers(instance, sink):
    configure(instance)
    instance.ini.write_text(instance.ini.read_text().replace("[connector]\n",
                                                            "[connector]\nauto_responses_per_hour = 0\n"))
    instance.start()
    number = new_ticket(instance)
    wait_for(lambda: received(sink, "ann@acme.example"), what="the ticket_created mail")
    instance.wait_delivered()
    mails = received(sink, "ann@acme.example")
    assert len(mails) == 1
    mail = mails[0]
    assert f"[Ticket #{number}]" in mail["Subject"]
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Precedence"] == "bulk"
    assert mail["X-Connector-Loop"] and mail["X-Loop"] == "support@example.com"
    # made before it is placed in an inbox: from default_sender
    assert mail["From"].addresses[0].addr_spec == "helpdesk@example.com"
    assert "https://hd.example/ticketlist/ticket/" in mail.get_content()
    assert auto_to(instance) == ["ann@acme.example"]


def test_requester_with_an_auto_response_gets_no_ticket_created_mail(desk, sink):
    number = new_ticket(desk)
    desk.wait_delivered()
    kinds = [o["kind"] for o in desk.outbox()]
    assert "auto_response" in kinds and "auto_email" not in kinds
    preview = desk.json("auto-emails", "preview", "ticket_created", "--ticket", str(number))
    assert preview["mails"] == []
    assert preview["skipped"] == [{"to": "ann@acme.example", "rule": "ack", "kind": "requester",
                                   "reason": "confirmed"}]
    assert len(sink.to("ann@acme.example")) == 1 and not received(sink, "ann@acme.example")


def test_forward_mails_resource_dispatcher_and_address_once_each_not_the_forwarder(desk, sink):
    number = new_ticket(desk)
    entry = entry_of(desk, number)
    desk.cli("inbox", "forward", str(entry["id"]), "--to", "Finance", "--due-type", "response",
             "--due", "2099-01-01", "--as", "bob@example.com")
    desk.wait_delivered()
    # resource = Finance (where the ticket is now); dispatchers = the acting dispatcher, bob,
    # who caused the event; boss named by one rule; jane named by two rules (resource, manager)
    assert auto_to(desk) == ["boss@example.com", "jane@example.com"]
    assert len(received(sink, "jane@example.com")) == 1 and len(received(sink, "boss@example.com")) == 1
    assert not received(sink, "bob@example.com") and not received(sink, "disp1@example.com")
    keys = [row[1] for row in auto_rows(desk)]
    assert len(set(keys)) == 2 and all(k.endswith(("jane@example.com", "boss@example.com")) for k in keys)


def test_dispatchers_group_when_no_employee_assigned(desk, sink):
    number = new_ticket(desk)
    preview = desk.json("auto-emails", "preview", "deadline_passed", "--ticket", str(number))
    assert [m["to"] for m in preview["mails"]] == ["bob@example.com", "carl@example.com",
                                                   "disp1@example.com", "disp2@example.com"]
    assert {m["rule"] for m in preview["mails"]} == {"overdue"}


def test_take_mails_requester_once_not_the_taker(desk, sink):
    number = new_ticket(desk)
    entry = entry_of(desk, number)
    before = len(auto_rows(desk))
    desk.cli("inbox", "take", str(entry["id"]), "--as", "carl@example.com")
    desk.wait_delivered()
    rows = auto_rows(desk)[before:]
    # the requester is also the ticket's external recipient: one mail
    assert [r[0].strip('[]"') for r in rows] == ["ann@acme.example"]
    assert len(received(sink, "ann@acme.example")) == 1 and not received(sink, "carl@example.com")
    preview = desk.json("auto-emails", "preview", "ticket_taken", "--ticket", str(number),
                        "--by", "carl@example.com")
    assert preview["skipped"] == [
        {"to": "carl@example.com", "rule": "taken", "kind": "owner", "reason": "causing_person"},
        {"to": "ann@acme.example", "rule": "taken", "kind": "external", "reason": "duplicate"}]


@pytest.mark.sqlite_only("compares the SQLite file's bytes")
def test_preview_changes_nothing_and_rejects_an_unknown_event(desk):
    number = new_ticket(desk)
    db = desk.path / "var" / "connector.db"
    before = db.read_bytes()
    text = desk.cli("auto-emails", "preview", "ticket_forwarded", "--ticket", str(number)).stdout.decode()
    assert "bob@example.com" in text and "would not send" in text
    assert db.read_bytes() == before
    bad = desk.cli("auto-emails", "preview", "ticket_exploded", "--ticket", str(number), check=False)
    assert bad.returncode != 0 and "ticket_exploded" in bad.stderr.decode()


def history(instance, number):
    return [(e["event"], e["via"], e["by"]) for e in instance.json("tickets", "history", str(number))]


def set_due(instance, entry_id, due_at):
    """An entry's due date in the near past (the CLI refuses one in the past): the injected clock."""
    with instance.connect() as conn:
        conn.execute("update inbox_entry set due_at = ? where id = ?", (due_at, entry_id))


def test_deadline_fires_once_then_escalates_and_a_new_due_date_fires_again(desk, sink):
    number = new_ticket(desk)
    entry = entry_of(desk, number)
    due = time.time() - 1
    set_due(desk, entry["id"], due)
    wait_for(lambda: ("ticket_escalated", "system", None) in history(desk, number), 15, what="escalation")
    desk.wait_delivered()
    events = [e for e, _, _ in history(desk, number)]
    assert events.count("deadline_passed") == 1 and events.index("deadline_passed") < events.index("ticket_escalated")
    # the warning went to the inbox the ticket was in (Technical) and the dispatcher group,
    # the escalation mail to the inbox it is in now (Finance)
    overdue = [m for m in received(sink, "bob@example.com") if "overdue" in m["Subject"]]
    assert len(overdue) == 1 and "Technical" in overdue[0]["Subject"]
    assert [len(received(sink, a)) for a in ("carl@example.com", "disp1@example.com", "disp2@example.com")] == [1, 1, 1]
    [escalated] = received(sink, "jane@example.com")
    assert "Finance" in escalated["Subject"] and "escalated" in escalated.get_content()
    now_in = entry_of(desk, number)
    assert now_in["inbox"] == "Finance" and now_in["due_at"] is None
    time.sleep(2.5)   # the worker looks every second: still once
    assert [e for e, _, _ in history(desk, number)].count("deadline_passed") == 1
    # a new due date (Finance has no escalate_to) fires again, once
    set_due(desk, now_in["id"], time.time() - 1)
    wait_for(lambda: [e for e, _, _ in history(desk, number)].count("deadline_passed") == 2, 15, what="second deadline")
    time.sleep(2.5)
    assert [e for e, _, _ in history(desk, number)].count("deadline_passed") == 2
    assert entry_of(desk, number)["inbox"] == "Finance"


def test_a_second_process_firing_the_same_deadline_does_nothing(desk):
    from connector.settings import load_settings
    from connector.store.db import open_store
    from connector.store.models import InboxEntry
    from connector.workqueue import deadlines
    number = new_ticket(desk)
    entry = entry_of(desk, number)
    set_due(desk, entry["id"], time.time() - 1)
    settings = load_settings(desk.ini)
    open_store(settings.database)
    stale = InboxEntry.get_by_id(entry["id"])        # as a second process read it before the fire
    wait_for(lambda: "deadline_passed" in [e for e, _, _ in history(desk, number)], 15, what="deadline")
    assert deadlines.fire(stale, now=time.time(), settings=settings) is False
    assert [e for e, _, _ in history(desk, number)].count("deadline_passed") == 1


class GatedSink:
    """A relay that accepts `open_for` mails, then holds the next one without answering
    until released (then refuses it with 451): what it accepted is what was sent."""

    def __init__(self, sink, open_for):
        import asyncio
        self.sink, self.open_for, self.released, self.holding = sink, open_for, False, False
        self.asyncio = asyncio
        sink.controller.handler = self

    async def handle_DATA(self, server, session, envelope):
        if len(self.sink.messages) >= self.open_for and not self.released:
            self.holding = True
            while not self.released:
                await self.asyncio.sleep(0.05)
            return "451 4.3.0 try again"
        self.sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


def test_kill_9_during_auto_email_delivery_sends_nothing_twice(instance, sink):
    configure(instance)
    instance.ini.write_text(instance.ini.read_text().replace("[connector]\n",
                                                            "[connector]\nauto_responses_per_hour = 0\n"))
    gate = GatedSink(sink, open_for=6)
    instance.start()
    senders = [f"c{i}@cust{i}.example" for i in range(12)]
    for address in senders:
        instance.send(make_mail(subject=f"Help {address}", sender=address))
    wait_for(lambda: gate.holding, 30, what="the relay to hold a mail")
    instance.kill9()                 # worker and delivery die mid-delivery
    gate.released = True
    instance.start()
    instance.wait_processed(len(senders), timeout=30)
    wait_for(lambda: all(received(sink, a) for a in senders), 30, what="every auto-email")
    instance.wait_delivered(30)
    assert [len(received(sink, a)) for a in senders] == [1] * len(senders)
    assert sorted(auto_to(instance)) == sorted(senders)


@pytest.mark.parametrize("text, file, key, problem", [
    (AUTO_EMAILS_YAML.replace("event: ticket_taken", "event: ticket_exploded"), "auto_emails.yaml",
     "auto_emails[taken].event", "'ticket_exploded' is not a ticket event"),
    (AUTO_EMAILS_YAML.replace("to: [owner, requester, external]", "to: [owner, customers]"), "auto_emails.yaml",
     "auto_emails[taken].to", "'customers' is not a recipient"),
    (AUTO_EMAILS_YAML.replace("template: deadline_passed.txt.j2", "template: overdue.txt.j2"), "auto_emails.yaml",
     "auto_emails[overdue].template", "overdue.txt.j2 is not in templates/"),
    (AUTO_EMAILS_YAML.replace("    template: ticket_created.txt.j2\n", "", 1), "auto_emails.yaml",
     "auto_emails[ack].template", "is missing"),
    (AUTO_EMAILS_YAML.replace("dispatchers: [disp1@example.com, disp2@example.com]", "dispatchers: [disp1]"),
     "auto_emails.yaml", "dispatchers", "'disp1' is not an email address"),
    (AUTO_EMAILS_YAML + "colour: red\n", "auto_emails.yaml", "colour", "unknown key"),
    ("auto_emails: [\n", "auto_emails.yaml", "line 2", "is not valid YAML"),
    (None, "inboxes.yaml", "inboxes[Technical].escalate_to", "'Nowhere' is not one of the inboxes"),
])
def test_each_problem_is_one_line_naming_file_key_what_and_a_hint(instance, text, file, key, problem):
    configure(instance, text, INBOXES_YAML.replace("escalate_to: Finance", "escalate_to: Nowhere")
              if text is None else INBOXES_YAML)
    result = instance.cli("check-config", check=False)
    assert result.returncode == 1
    [line] = result.stderr.decode().strip().splitlines()
    assert f"{instance.path / 'config' / file}: {key}: " in line and problem in line and "hint:" in line, line


def test_without_auto_emails_yaml_no_auto_email_is_planned(instance, sink):
    configure(instance, auto_emails=None).start()
    number = new_ticket(instance)
    instance.cli("inbox", "forward", str(entry_of(instance, number)["id"]), "--to", "Finance",
                 "--due-type", "response", "--due", "2099-01-01", "--as", "bob@example.com")
    instance.wait_delivered()
    assert auto_rows(instance) == []
    assert "auto_emails: (none)" in instance.cli("check-config").stdout.decode()


def test_planning_an_event_again_adds_no_mail(desk):
    from connector.settings import load_settings
    from connector.store.db import open_store
    from connector.store.models import TicketEvent, database
    from connector.workqueue.auto_emails import Planner
    number = new_ticket(desk)
    desk.cli("inbox", "forward", str(entry_of(desk, number)["id"]), "--to", "Finance",
             "--due-type", "response", "--due", "2099-01-01", "--as", "bob@example.com")
    desk.wait_delivered()  # the rows compared below keep their status while we plan again
    before = auto_rows(desk)
    assert len(before) == 2
    settings = load_settings(desk.ini)
    open_store(settings.database)
    event = TicketEvent.get(TicketEvent.event == "ticket_forwarded")
    def sent_mail():
        with desk.connect() as conn:
            return conn.execute("select count(*) from sent_mail where kind = 'auto_email'").fetchone()[0]
    counted = sent_mail()
    with database.atomic():   # as a retried or replayed planning would
        Planner(settings).plan_event(event)
    assert auto_rows(desk) == before and sent_mail() == counted


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_from_before_auto_emails_upgrades_and_plans_them(instance, sink):
    configure(instance, auto_emails=None).start()
    number = new_ticket(instance)
    instance.stop()
    db = instance.path / "var" / "connector.db"
    with sqlite3.connect(db) as conn:   # as a store written before migration 0009
        conn.execute('DROP INDEX "outboxentry_auto_key"')
        conn.execute('ALTER TABLE "outbox" DROP COLUMN "auto_key"')
        conn.execute('ALTER TABLE "inbox_entry" DROP COLUMN "deadline_fired"')
        conn.execute('DELETE FROM "schema_migration" WHERE "name" LIKE ?', ("0009%",))
    configure(instance).start()
    instance.cli("inbox", "forward", str(entry_of(instance, number)["id"]), "--to", "Finance",
                 "--due-type", "response", "--due", "2099-01-01", "--as", "bob@example.com")
    instance.wait_delivered()
    assert auto_to(instance) == ["boss@example.com", "jane@example.com"]
    with sqlite3.connect(db) as conn:
        [sql] = [r[0] for r in conn.execute("select sql from sqlite_master where name = 'outboxentry_auto_key'")]
    assert "UNIQUE" in sql


def test_a_template_using_an_unknown_value_is_refused_by_check_config(instance):
    configure(instance)
    instance.path.joinpath("templates").mkdir()
    path = instance.path / "templates" / "ticket_created.txt.j2"
    path.write_text("Subject: {{ ticket.tag }} {{ ticket.colour }}\n\nHello\n")
    result = instance.cli("check-config", check=False)
    assert result.returncode == 1
    [line] = result.stderr.decode().strip().splitlines()
    assert f"{path}: line 1: cannot be rendered" in line and "colour" in line and "hint:" in line


def test_after_a_forward_only_the_acting_dispatcher_hears_of_the_deadline(desk):
    number = new_ticket(desk)
    desk.cli("inbox", "forward", str(entry_of(desk, number)["id"]), "--to", "Finance",
             "--due-type", "response", "--due", "2099-01-01", "--as", "carl@example.com")
    preview = desk.json("auto-emails", "preview", "deadline_passed", "--ticket", str(number))
    assert [(m["to"], m["kind"]) for m in preview["mails"]] == [("jane@example.com", "resource"),
                                                                ("carl@example.com", "dispatchers")]
    assert preview["mails"][0]["from"] == "helpdesk@example.com"   # Finance has no sender: default_sender


def test_a_not_public_mail_tells_only_the_helpdesks_side(instance, sink):
    """An employee's internal mail (`*123*`) and a commands-only mail write `employee_replied`
    with public false: a rule mailing the requester, an external recipient or a plain address
    of no employee about it would tell the customer of an internal note (an outside test). They
    are skipped (`not_public`); the manager, an employee, is told."""
    configure(instance, AUTO_EMAILS_YAML + "  - name: answered\n    event: employee_replied\n"
                                           "    to: [requester, manager, someone@else.example]\n"
                                           "    template: ticket_forwarded.txt.j2\n")
    instance.ini.write_text(instance.ini.read_text().replace(   # this test's mails follow at once: no loop
        "[connector]\n", "[connector]\nloop_reply_seconds = 0\n"))
    instance.start()
    number = new_ticket(instance)
    instance.cli("tickets", "set", str(number), "--manager", "jane@example.com")
    instance.wait_delivered()
    before = len(received(sink, "ann@acme.example"))
    for subject, body in ((f"*123* Re: [Ticket #{number}] Printer jammed", "Internal: a known troll.\n"),
                          (f"Re: [Ticket #{number}] Printer jammed", "#take\n")):
        count = len(instance.spool_states())
        instance.send(make_mail(subject=subject, sender="bob@example.com", body=body))
        instance.wait_processed(count + 1)
    instance.wait_delivered()
    assert len(received(sink, "ann@acme.example")) == before + 1   # only `taken` (to the requester, public)
    assert received(sink, "someone@else.example") == []
    assert len(received(sink, "jane@example.com")) == 2            # the manager: of both mails
    skipped = [line for line in instance.log.read_text().splitlines()
               if '"auto_email.skipped"' in line and '"not_public"' in line]
    assert len(skipped) == 4, skipped                              # requester and the plain address, twice
