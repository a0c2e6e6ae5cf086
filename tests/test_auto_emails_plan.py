"""Auto-emails are planned like every other mail (issue 12), over the real daemon, real
SMTP and the CLI: every event and recipient group mailed once; the pipeline's own
events planned in the decision (`replay --dry-run` shows them, keyed
"<event id>:<address>" when written); `auto-emails preview` is what is planned; the
blocks stop them wherever the event comes from (a mail, the CLI, the deadline timer,
a bounce) as suppressed rows `why` shows; their mails count in the ticket loop rule;
a bounce never mails the dead address about itself, nor answers a bounce of an
automatic mail."""

import email
import email.policy
import json
import time

from conftest import make_mail, wait_for
from dsn import dsn
from test_auto_emails import configure, desk, entry_of, new_ticket, received, set_due  # noqa: F401 (a fixture)

EVENTS = ("ticket_created", "request_by_email", "customer_replied", "employee_replied", "status_changed",
          "ticket_taken", "ticket_forwarded", "ticket_completed", "ticket_cancelled", "deadline_passed",
          "ticket_escalated", "delivery_failed")
EVERY_EVENT_YAML = "default_sender: {address: helpdesk@example.com, name: Helpdesk}\nauto_emails:\n" + "".join(
    f"  - name: watch-{event}\n    event: {event}\n    to: [{event.replace('_', '-')}@watch.example]\n"
    f"    template: event.txt.j2\n" for event in EVENTS)
EVENT_TEMPLATE = "Subject: {{ event.name }} on {{ ticket.tag }}\n\n{{ event.name }} by {{ event.by }}\n"

GROUPS_YAML = """\
default_sender: {address: helpdesk@example.com, name: Helpdesk}
dispatchers: [disp1@example.com, disp2@example.com]
auto_emails:
  - name: ack
    event: request_by_email
    to: [requester, dispatchers]
    template: ticket_created.txt.j2
  - name: reply-seen
    event: customer_replied
    to: [resource, manager, owner, external]
    template: ticket_forwarded.txt.j2
  - name: answered
    event: employee_replied
    to: [requester, resource]
    template: ticket_forwarded.txt.j2
"""


def db(instance):
    return instance.connect()


def auto_rows(instance):
    with db(instance) as conn:
        cursor = conn.execute("SELECT id, ticket_id, cause_id, rcpt, subject, status, blocked, "
                              "auto_key FROM outbox WHERE kind = 'auto_email' ORDER BY id")
        return [dict(zip([c[0] for c in cursor.description], r)) for r in cursor.fetchall()]


def rcpt(row):
    return json.loads(row["rcpt"])[0]


def block(instance, kind, target, reason="userunknown", hours=168):
    """A block as a bounce leaves it (connector.store.blocks), in the daemon's store."""
    with db(instance) as conn:
        conn.execute('INSERT INTO "block" (target, kind, reason, source, created_at, until, status, hard) '
                     "VALUES (?, ?, ?, 'test', ?, ?, 'active', ?)",
                     (str(target), kind, reason, time.time(), time.time() + hours * 3600, False))


def log_events(instance, name):
    lines = [json.loads(line) for line in instance.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


def test_every_event_mails_its_rule_once(instance, sink):
    """Each of the twelve events, from where it happens (a mail, the CLI, the timer, a bounce)."""
    configure(instance, EVERY_EVENT_YAML)
    instance.path.joinpath("templates").mkdir()
    instance.path.joinpath("templates", "event.txt.j2").write_text(EVENT_TEMPLATE)
    instance.start()
    number = new_ticket(instance, sender="gone@acme.example")                 # ticket_created, request_by_email
    instance.wait_delivered()
    entry = entry_of(instance, number)
    instance.cli("inbox", "take", str(entry["id"]), "--as", "bob@example.com")           # ticket_taken
    instance.cli("tickets", "set", str(number), "--status", "Open")                       # status_changed
    instance.send(make_mail(subject=f"[Ticket #{number}] more", sender="gone@acme.example"))  # customer_replied
    instance.wait_processed(2)
    instance.send(make_mail(subject=f"Re: [Ticket #{number}] more", sender="jane@example.com"))  # employee_replied
    instance.wait_processed(3)
    instance.cli("inbox", "forward", str(entry["id"]), "--to", "Finance", "--due-type", "response",
                 "--due", "2099-01-01", "--as", "bob@example.com")                         # ticket_forwarded
    instance.cli("inbox", "complete", str(entry_of(instance, number)["id"]), "--as", "jane@example.com")  # completed
    instance.cli("inbox", "add", str(number), "--inbox", "Technical", "--as", "bob@example.com")
    instance.cli("inbox", "cancel", str(entry_of(instance, number)["id"]), "--as", "bob@example.com")  # cancelled
    instance.cli("inbox", "add", str(number), "--inbox", "Technical", "--as", "bob@example.com")
    set_due(instance, entry_of(instance, number)["id"], time.time() - 1)   # deadline_passed, ticket_escalated
    wait_for(lambda: len(received(sink, "ticket-escalated@watch.example")) == 1, 15, what="the escalation mail")
    instance.wait_delivered()
    auto_response = next(m for m in sink.messages if "gone@acme.example" in m[1])
    instance.send(dsn("gone@acme.example"), sender="", rcpts=[auto_response[0]])          # delivery_failed
    instance.wait_processed(4)
    instance.wait_delivered()
    for event in EVENTS:
        mails = received(sink, f"{event.replace('_', '-')}@watch.example")
        assert [m["Subject"] for m in mails] == [f"{event} on [Ticket #{number}]"], event
    assert len(auto_rows(instance)) == len(EVENTS)


def test_each_recipient_group_of_the_pipelines_events(tmp_path, sink):
    """requester, dispatchers (the group: nobody dispatched a mail's new ticket), resource,
    manager, owner, external: each mailed once per event, never the person who wrote."""
    from conftest import Instance
    instance = Instance(tmp_path, sink.port, connector__auto_responses_per_hour="0",
                        connector__add_recipients_from_headers="yes", connector__loop_reply_seconds="0")
    configure(instance, GROUPS_YAML).start()
    try:
        number = new_ticket(instance, cc="friend@acme.example")
        assert sorted(rcpt(r) for r in auto_rows(instance)) == [
            "ann@acme.example", "disp1@example.com", "disp2@example.com"]
        instance.cli("inbox", "take", str(entry_of(instance, number)["id"]), "--as", "carl@example.com")
        before = len(auto_rows(instance))
        instance.send(make_mail(subject=f"[Ticket #{number}] more", sender="ann@acme.example", body="Any news?\n"))
        instance.wait_processed(2)
        # resource: bob, carl (Technical); manager: jane (Acme's); owner: carl (again); external:
        # ann (who wrote: not mailed) and friend
        assert [rcpt(r) for r in auto_rows(instance)[before:]] == [
            "bob@example.com", "carl@example.com", "jane@example.com", "friend@acme.example"]
        before = len(auto_rows(instance))
        instance.send(make_mail(subject=f"Re: [Ticket #{number}] more", sender="bob@example.com", body="On it.\n"))
        instance.wait_processed(3)
        assert [rcpt(r) for r in auto_rows(instance)[before:]] == ["ann@acme.example", "carl@example.com"]
        instance.wait_delivered()
        for address in ("ann@acme.example", "friend@acme.example", "disp1@example.com", "jane@example.com"):
            assert len(received(sink, address)) == {"ann@acme.example": 2}.get(address, 1), address
        skipped = {(e["ticket_event"], e["to"], e["reason"]) for e in log_events(instance, "auto_email.skipped")}
        assert {("customer_replied", "carl@example.com", "duplicate"),
                ("customer_replied", "ann@acme.example", "causing_person"),
                ("employee_replied", "bob@example.com", "causing_person")} <= skipped
    finally:
        instance.stop()


def test_the_dry_run_shows_the_pipelines_auto_emails_and_apply_keys_them_by_event(tmp_path, sink):
    from conftest import Instance
    instance = Instance(tmp_path, sink.port, connector__auto_responses_per_hour="0")
    configure(instance, GROUPS_YAML)
    mail = tmp_path / "mail.eml"
    mail.write_bytes(make_mail(subject="Printer broken", sender="ann@acme.example").as_bytes())
    dry = json.loads(instance.cli("replay", "--dry-run", "--json", "--recipient", "support@example.com",
                                  str(mail)).stdout)
    planned = [o for o in dry["outgoing"] if o["kind"] == "auto_email"]
    assert [(o["rcpt"], o["status"]) for o in planned] == [
        (["ann@acme.example"], "pending"), (["disp1@example.com"], "pending"), (["disp2@example.com"], "pending")]
    assert [e["event"] for e in dry["events"]] == ["ticket_created", "request_by_email"]
    assert {o["event"] for o in planned} == {1}                       # about request_by_email
    real = json.loads(instance.cli("replay", "--json", "--recipient", "support@example.com", str(mail)).stdout)
    rows = auto_rows(instance)
    assert [(json.loads(r["rcpt"]), r["subject"], r["cause_id"]) for r in rows] == [
        (o["rcpt"], o["subject"], real["spool_id"]) for o in planned]
    [event] = [e for e in instance.json("tickets", "history", "1") if e["event"] == "request_by_email"]
    with db(instance) as conn:
        [event_id] = conn.execute("SELECT id FROM ticket_event WHERE event = 'request_by_email'").fetchone()
    assert [r["auto_key"] for r in rows] == [f"{event_id}:{rcpt(r)}" for r in rows]
    assert event["by"] == "ann@acme.example"


def test_preview_is_what_the_mail_then_plans(tmp_path, sink):
    """(The speed rule is off: ann answers within seconds of her auto-response, which would
    make her mail a possible loop, and its auto-emails subject to the loop budget.)"""
    from conftest import Instance
    desk = configure(Instance(tmp_path, sink.port, connector__loop_reply_seconds="0")).start()
    try:
        _preview_is_planned(desk)
    finally:
        desk.stop()


def _preview_is_planned(desk):
    number = new_ticket(desk)
    desk.cli("inbox", "forward", str(entry_of(desk, number)["id"]), "--to", "Finance", "--due-type", "response",
             "--due", "2099-01-01", "--as", "bob@example.com")
    desk.path.joinpath("config", "auto_emails.yaml").write_text(GROUPS_YAML)
    preview = desk.json("auto-emails", "preview", "customer_replied", "--ticket", str(number),
                        "--by", "ann@acme.example")
    desk.stop()
    desk.start()   # the worker plans with the file the preview read
    before = len(auto_rows(desk))
    desk.send(make_mail(subject=f"[Ticket #{number}] more", sender="ann@acme.example", body="Any news?\n"))
    desk.wait_processed(2)
    rows = auto_rows(desk)[before:]
    assert [(m["to"], m["subject"]) for m in preview["mails"]] == [(rcpt(r), r["subject"]) for r in rows]
    assert [m["to"] for m in preview["mails"]] == ["jane@example.com"]   # Finance's member, Acme's manager
    assert {s["reason"] for s in preview["skipped"]} == {"duplicate", "causing_person", "no_address"}


def test_a_blocked_address_gets_the_auto_email_of_a_cli_event_as_a_suppressed_row(desk, sink):
    number = new_ticket(desk)
    block(desk, "address", "jane@example.com")
    desk.cli("inbox", "forward", str(entry_of(desk, number)["id"]), "--to", "Finance", "--due-type", "response",
             "--due", "2099-01-01", "--as", "bob@example.com")
    desk.wait_delivered()
    rows = {rcpt(r): r for r in auto_rows(desk)}
    assert rows["jane@example.com"]["status"] == "suppressed"
    assert "jane@example.com is blocked" in rows["jane@example.com"]["blocked"]
    assert rows["boss@example.com"]["status"] == "sent"
    assert not received(sink, "jane@example.com") and len(received(sink, "boss@example.com")) == 1
    suppressed = desk.json("outbox", "list", "--status", "suppressed")
    assert [(o["kind"], o["rcpt"]) for o in suppressed] == [("auto_email", ["jane@example.com"])]
    why = desk.json("why", "jane@example.com")
    assert why["block"]["reason"] == "userunknown"
    assert [(m["kind"], m["what"]) for m in why["mail"]] == [("auto_email", "suppressed"), ("distribution", "sent")]
    assert "jane@example.com is blocked" in why["mail"][0]["why"]
    [preview] = desk.json("auto-emails", "preview", "ticket_forwarded", "--ticket", str(number))["mails"][:1]
    assert (preview["to"], preview["status"]) == ("jane@example.com", "suppressed")


def test_a_blocked_requester_gets_the_mails_auto_email_suppressed_and_the_dry_run_says_so(tmp_path, sink):
    from conftest import Instance
    instance = Instance(tmp_path, sink.port, connector__auto_responses_per_hour="0")
    configure(instance).start()
    try:
        block(instance, "address", "ann@acme.example", "mailboxfull", 3)
        mail = tmp_path / "mail.eml"
        mail.write_bytes(make_mail(subject="Printer broken", sender="ann@acme.example").as_bytes())
        dry = json.loads(instance.cli("replay", "--dry-run", "--json", str(mail)).stdout)
        [planned] = [o for o in dry["outgoing"] if o["kind"] == "auto_email"]
        assert planned["status"] == "suppressed" and "ann@acme.example is blocked" in planned["blocked"]
        instance.send(make_mail(subject="Printer broken", sender="ann@acme.example"))
        instance.wait_processed(1)
        instance.wait_delivered()
        [row] = auto_rows(instance)
        assert (rcpt(row), row["status"]) == ("ann@acme.example", "suppressed")
        assert not received(sink, "ann@acme.example")
        assert [m["what"] for m in instance.json("why", "ann@acme.example")["mail"]] == ["suppressed"]
    finally:
        instance.stop()


def test_a_blocked_ticket_suppresses_the_deadline_and_escalation_mails(desk, sink):
    number = new_ticket(desk)
    desk.wait_delivered()
    sent = len(sink.messages)
    block(desk, "ticket", number, "loop", 12)
    set_due(desk, entry_of(desk, number)["id"], time.time() - 1)
    wait_for(lambda: any(e["event"] == "ticket_escalated" for e in desk.json("tickets", "history", str(number))),
             15, interval=0.3, what="escalation")
    desk.wait_delivered()
    rows = auto_rows(desk)
    assert sorted(rcpt(r) for r in rows) == ["bob@example.com", "carl@example.com", "disp1@example.com",
                                             "disp2@example.com", "jane@example.com"]
    assert {r["status"] for r in rows} == {"suppressed"}
    assert all(f"ticket #{number} is blocked" in r["blocked"] for r in rows)
    assert not any(m["Precedence"] == "bulk" for _, _, raw in sink.messages[sent:]
                   for m in [email.message_from_bytes(raw, policy=email.policy.default)])


def test_auto_emails_count_in_the_ticket_loop_rule(desk, sink):
    """100 mails on the ticket today (auto-emails among them), then a forward's two auto-emails:
    the ticket is in a loop."""
    number = new_ticket(desk)
    desk.wait_delivered()
    with db(desk) as conn:
        row = conn.execute("SELECT ticket_id, mail_from, rcpt FROM outbox LIMIT 1").fetchone()
        [queued] = conn.execute("SELECT count(*) FROM outbox WHERE ticket_id = ?", (row[0],)).fetchone()
        conn.executemany("INSERT INTO outbox (ticket_id, kind, mail_from, rcpt, \"to\", cc, bcc, subject, message_id, "
                         "status, attempts, next_attempt_at, created_at) VALUES "
                         "(?, 'auto_email', ?, ?, '[]', '[]', '[]', 's', '', 'sent', 1, 0, ?)",
                         [(*row, time.time())] * (100 - queued))
    sent_before = len(sink.messages)
    desk.cli("inbox", "forward", str(entry_of(desk, number)["id"]), "--to", "Finance", "--due-type", "response",
             "--due", "2099-01-01", "--as", "bob@example.com")
    desk.wait_delivered()
    [loop] = desk.json("blocks", "list")
    assert (loop["kind"], loop["target"], loop["reason"]) == ("ticket", str(number), "loop")
    rows = [r for r in auto_rows(desk) if r["auto_key"]]
    assert sorted(rcpt(r) for r in rows) == ["boss@example.com", "jane@example.com"]
    assert {r["status"] for r in rows} == {"suppressed"}
    assert sink.messages[sent_before:] == []


DELIVERY_FAILED_YAML = """\
auto_emails:
  - name: failed
    event: delivery_failed
    to: [requester, manager]
    template: ticket_forwarded.txt.j2
"""


def test_a_bounce_mails_the_manager_never_the_dead_address_and_a_bounce_of_that_mail_nobody(instance, sink):
    configure(instance, DELIVERY_FAILED_YAML).start()
    new_ticket(instance, sender="gone@acme.example")
    instance.wait_delivered()
    auto_response = next(m for m in sink.messages if "gone@acme.example" in m[1])
    instance.send(dsn("gone@acme.example", status="5.0.0", diagnostic="550 5.0.0 rejected"), sender="",
                  rcpts=[auto_response[0]])   # rejected: blocks nobody
    instance.wait_processed(2)
    instance.wait_delivered()
    [row] = auto_rows(instance)
    assert (rcpt(row), row["status"]) == ("jane@example.com", "sent")   # Acme's manager
    skipped = [(e["to"], e["reason"]) for e in log_events(instance, "auto_email.skipped")]
    assert ("gone@acme.example", "failed_recipient") in skipped
    # the manager's mail bounces too: attributed, and nobody is mailed about it
    [to_jane] = [m for m in sink.messages if "jane@example.com" in m[1] and b"Precedence: bulk" in m[2]]
    sent = len(sink.messages)
    instance.send(dsn("jane@example.com", status="5.0.0", diagnostic="550 5.0.0 rejected"), sender="",
                  rcpts=[to_jane[0]])
    instance.wait_processed(3)
    instance.wait_delivered()
    assert len(auto_rows(instance)) == 1
    assert [m[1] for m in sink.messages[sent:] if b"Precedence: bulk" in m[2]] == []   # notices only
    history = [e["event"] for e in instance.json("tickets", "history", "1")]
    assert history.count("delivery_failed") == 2


def test_a_new_tickets_resource_is_the_members_of_the_inbox_it_is_placed_in(tmp_path, sink):
    """`request_by_email` / `ticket_created` are written before the new ticket's inbox entry:
    a rule mailing `resource` found no address and the inbox's members never heard of the
    new request (an outside test; seed 002, an inquiry assigned to a resource). The
    members of the inbox the ticket is being placed in are its resource; it is still mailed
    from default_sender (made before it is placed)."""
    from conftest import Instance
    instance = Instance(tmp_path, sink.port, connector__auto_responses_per_hour="0")
    configure(instance, "default_sender: {address: helpdesk@example.com, name: Helpdesk}\nauto_emails:\n"
                        "  - {name: new, event: request_by_email, to: [resource], template: ticket_created.txt.j2}\n")
    mail = tmp_path / "mail.eml"
    mail.write_bytes(make_mail(subject="Printer broken", sender="ann@acme.example").as_bytes())
    dry = json.loads(instance.cli("replay", "--dry-run", "--json", "--recipient", "support@example.com",
                                  str(mail)).stdout)
    planned = [(o["rcpt"], o["from_address"]) for o in dry["outgoing"] if o["kind"] == "auto_email"]
    assert planned == [(["bob@example.com"], "helpdesk@example.com"), (["carl@example.com"], "helpdesk@example.com")]
    instance.cli("replay", "--recipient", "support@example.com", str(mail))
    assert sorted(json.loads(r["rcpt"])[0] for r in auto_rows(instance)) == ["bob@example.com", "carl@example.com"]
