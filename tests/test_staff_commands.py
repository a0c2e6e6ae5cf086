"""Staff commands by mail and `tickets note|reply`, end to end: the real daemon, real SMTP
in and out (the relay sink), real SQLite (issue 11, seed 003 "Replying to Tickets by Email").

Staff (tests/conftest.py): jane (manager of Acme), bob (receive: all), carl, olga, ina (inactive).
The inbox and triage actions the commands call are built by other work (connector.workqueue);
the tests of the commands that need them skip while those functions are missing.
"""

import email
import json
from email import policy

import pytest

from conftest import make_mail, wait_for
from connector.pipeline import commands

INBOXES_YAML = """\
inboxes:
  - name: Technical
    members: [bob@example.com, jane@example.com]
  - name: Finance
    members: [jane@example.com]
default_inbox: Technical
"""


def parsed(raw):
    return email.message_from_bytes(raw, policy=policy.default)


def replies_to(sink, address):
    """The command results mailed back to `address` (from the notifications address)."""
    return [parsed(raw) for _, rcpts, raw in sink.messages if address in rcpts
            and parsed(raw)["From"].addresses[0].addr_spec == "notifications@example.com"]


def processed(daemon):
    daemon.wait_processed(len(daemon.spool_states()))
    daemon.wait_delivered()


def new_ticket(daemon, subject="Printer broken"):
    daemon.send(make_mail(subject=subject, sender="ann@acme.example", name="Ann Customer"))
    wait_for(lambda: daemon.spool_states(), what="spooled")
    processed(daemon)
    return [t for t in daemon.tickets() if t["subject"] == subject][-1]["number"]


def staff_mail(daemon, sink, number, body, sender="bob@example.com", subject="Printer broken", **kw):
    """Bob's mail on the ticket; returns (its Message-ID, the result mailed back to him)."""
    sink.messages.clear()
    count = len(daemon.spool_states())
    msg = make_mail(subject=f"Re: [Ticket #{number}] {subject}" if number else subject, sender=sender,
                    name="Bob Tech", body=body, **kw)
    daemon.send(msg)
    daemon.wait_processed(count + 1)
    daemon.wait_delivered()
    answers = replies_to(sink, sender)
    return msg["Message-ID"], answers[-1] if answers else None


def history(daemon, number):
    return [(e["event"], e["via"], e["by"]) for e in daemon.json("tickets", "history", str(number))]


@pytest.mark.parametrize("text, lines, rest", [
    ("#take\n#complete\nthanks", ["#take", "#complete"], "thanks"),
    ("\n  #take  \n\n#status  Waiting for parts \n\nDear Ann,\n#not a command here",
     ["#take", "#status  Waiting for parts"], "Dear Ann,\n#not a command here"),
    ("#1 priority customer\n#take", [], "#1 priority customer\n#take"),   # a word starts with a letter
    ("Hello\n#take", [], "Hello\n#take"),                                  # commands come first
    ("#take", ["#take"], ""),
    ("", [], ""),
])
def test_command_lines_are_the_leading_hash_words(text, lines, rest):
    assert commands.split_commands(text) == (lines, rest)


@pytest.mark.parametrize("line, name, args", [
    ("#TAKE", "take", {}),
    ("#status Waiting for parts", "status", {"value": "Waiting for parts"}),
    ("#forward Finance response 2026-12-05 please check the refund", "forward",
     {"inbox": "Finance", "due_type": "response", "date": commands.due_date("2026-12-05T23:59:59+00:00"),
      "message": "please check the refund"}),
    ("#forward Finance response 2026-12-05T17:00+01:00", "forward",
     {"inbox": "Finance", "due_type": "response", "date": commands.due_date("2026-12-05T16:00:00")}),
    ("#attach 123", "attach", {"ticket": 123}),
    ("#cancel", "cancel", {}),
    ("#create-ticket", "create-ticket", {}),
])
def test_command_arguments(line, name, args):
    parsed_line = commands.parse_line(line)
    assert parsed_line.outcome == "" and parsed_line.command.name == name and parsed_line.args == args


@pytest.mark.parametrize("line, why", [
    ("#takeover", "unknown command #takeover"),
    ("#attach", "missing TICKET (write: #attach TICKET)"),
    ("#attach twelve", "'twelve' is not a ticket number"),
    ("#take 12", "too many words (write: #take)"),
    ("#forward Finance response 5.12.2026", "due date '5.12.2026' is not a date"),
])
def test_command_refusals(line, why):
    parsed_line = commands.parse_line(line)
    assert parsed_line.command is None and parsed_line.outcome.startswith(why)


def test_status_command_alone_changes_the_ticket_files_a_note_and_answers(daemon, sink):
    number = new_ticket(daemon)
    message_id, answer = staff_mail(daemon, sink, number, "#status Waiting\n\n-- \nBob\n")

    assert daemon.ticket(number)["status"] == "Waiting"
    assert daemon.ticket(number)["in_inbox"] is False      # seed 004: another status leaves the Inbox
    assert ("status_changed", "mail", "bob@example.com") in history(daemon, number)
    assert ("inbox_flag_changed", "mail", "bob@example.com") in history(daemon, number)
    # The result goes back to Bob from the notifications address, as an automatic reply.
    assert answer is not None
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["In-Reply-To"] == message_id
    assert answer["Subject"].startswith("Done:")
    assert "status New -> Waiting" in answer.get_content()
    # Only commands: an internal note of what was done, distributed to nobody.
    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is False and last["internal"] is True
    assert "#status Waiting" in last["reply_text"] and "New -> Waiting" in last["reply_text"]
    assert [m for m in sink.messages if "ann@acme.example" in m[1]] == []
    assert len(sink.messages) == 1  # the answer only


def test_commands_then_text_file_the_rest_for_the_customer_without_the_command_lines(daemon, sink):
    number = new_ticket(daemon)
    _, answer = staff_mail(daemon, sink, number, "#status Waiting for customer\n\nDear Ann,\nplease "
                                                 "restart the printer.\n")

    assert daemon.ticket(number)["status"] == "Waiting for customer"
    assert answer["Subject"].startswith("Done:")
    to_ann = [raw for _, rcpts, raw in sink.messages if "ann@acme.example" in rcpts]
    assert len(to_ann) == 1
    copy = parsed(to_ann[0])
    assert copy["From"].addresses[0].addr_spec == "support@example.com"
    body = copy.get_body(("plain",)).get_content()
    assert "please restart the printer" in body and "#status" not in body
    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is True and last["reply_text"].startswith("Dear Ann")


def test_the_copy_of_a_command_mail_keeps_its_attachments(daemon, sink):
    number = new_ticket(daemon)
    sink.messages.clear()
    msg = make_mail(subject=f"Re: [Ticket #{number}] Printer broken", sender="bob@example.com",
                    body="#status Waiting\nThe manual is attached.\n")
    msg.add_attachment(b"%PDF-1.4 manual", maintype="application", subtype="pdf", filename="manual.pdf")
    daemon.send(msg)
    processed(daemon)

    copy = parsed([raw for _, rcpts, raw in sink.messages if "ann@acme.example" in rcpts][0])
    assert "#status" not in copy.get_body(("plain",)).get_content()
    attachments = list(copy.iter_attachments())
    assert [(a.get_filename(), a.get_content()) for a in attachments] == [("manual.pdf", b"%PDF-1.4 manual")]


def test_internal_command_files_the_mail_not_public_whatever_its_addressing(daemon, sink):
    number = new_ticket(daemon)
    _, answer = staff_mail(daemon, sink, number, "#internal\nJane, the toner is on order.\n")

    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is False and last["internal"] is True
    assert last["reply_text"] == "Jane, the toner is on order."
    assert answer["Subject"].startswith("Done:") and "Not Public" in answer.get_content()
    assert [m for m in sink.messages if "ann@acme.example" in m[1]] == []
    to_jane = [parsed(raw) for _, rcpts, raw in sink.messages if "jane@example.com" in rcpts]
    assert len(to_jane) == 1 and "#internal" not in to_jane[0].get_body(("plain",)).get_content()


@pytest.mark.parametrize("line, why", [
    ("#tke", "unknown command #tke"),
    ("#Status", "missing VALUE"),
    ("#forward Finance response", "missing DATE"),
    ("#forward Finance response next-week", "'next-week' is not a date"),
    ("#complete now", "too many words"),
    ("#create-ticket", "#create-ticket acts on an inbound item"),
])
def test_a_refused_command_line_does_nothing_and_keeps_the_mail_from_the_customer(daemon, sink, line, why):
    number = new_ticket(daemon)
    _, answer = staff_mail(daemon, sink, number, f"#status Waiting\n{line}\nDear Ann, done.\n")

    assert daemon.ticket(number)["status"] == "New"                 # nothing ran, #status included
    assert "status_changed" not in [e for e, _, _ in history(daemon, number)]
    assert answer["Subject"].startswith("Not done:")
    text = answer.get_content()
    assert why in text and "nothing was done" in text
    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is False                                  # never guessed at the customer
    assert [m for m in sink.messages if "ann@acme.example" in m[1]] == []


def test_commands_on_a_mail_without_ticket_are_refused_and_the_mail_goes_to_triage(daemon, sink):
    _, answer = staff_mail(daemon, sink, None, "#status Waiting\n", subject="A question")

    assert answer["Subject"].startswith("Not done:") and "refers to no ticket" in answer.get_content()
    assert [i["reason"] for i in daemon.inbound()] == ["staff_without_ticket"]


def test_commands_on_a_ticket_that_does_not_exist_are_refused(daemon, sink):
    _, answer = staff_mail(daemon, sink, 4711, "#take\n")

    assert "there is no ticket 4711" in answer.get_content()
    assert [i["reason"] for i in daemon.inbound()] == ["unknown_ticket"]


def test_ticket_commands_to_the_notifications_address_are_refused(daemon, sink):
    number = new_ticket(daemon)
    _, answer = staff_mail(daemon, sink, number, "#status Waiting\n", to="notifications@example.com")

    assert daemon.ticket(number)["status"] == "New"
    assert f"not filed on ticket {number} (notifications_address)" in answer.get_content()
    assert "send commands to support@example.com" in answer.get_content()


def test_our_own_mail_come_back_never_commands(daemon, sink):
    """A confirmation or copy an employee's forwarding rule sends back carries our loop marker."""
    number = new_ticket(daemon)
    _, answer = staff_mail(daemon, sink, number, "#status Waiting\n")
    assert answer["X-Connector-Loop"]
    for header in ("From", "Auto-Submitted", "X-Auto-Response-Suppress", "X-Loop"):  # only the marker is left
        del answer[header]
    answer["From"] = "bob@example.com"
    answer.set_content("#status Closed\n")
    count = len(daemon.spool_states())
    sink.messages.clear()
    daemon.send(answer, sender="bob@example.com", rcpts=["support@example.com"])
    daemon.wait_processed(count + 1)
    daemon.wait_delivered()

    assert daemon.ticket(number)["status"] == "Waiting"
    assert replies_to(sink, "bob@example.com") == []


def command_file(daemon, tmp_path, body):
    """A new ticket's number, and a file of Bob's mail on it with `body`."""
    number = new_ticket(daemon)
    mail = tmp_path / "bob.eml"
    mail.write_bytes(make_mail(subject=f"Re: [Ticket #{number}] Printer broken", sender="bob@example.com",
                               body=body).as_bytes())
    return number, mail


def test_a_dry_run_shows_the_decision_and_runs_nothing(daemon, sink, tmp_path):
    number, mail = command_file(daemon, tmp_path, "#status Waiting\n")
    decision = json.loads(daemon.cli("replay", "--dry-run", "--json", str(mail)).stdout)

    assert (decision["action"], decision["reason"], decision["public"]) == ("internal", "staff_commands", False)
    assert daemon.ticket(number)["status"] == "New"
    assert [(o["kind"], o["rcpt"], o["from_address"], o["mail_from"], o["template"], o["subject"])
            for o in decision["outgoing"]] == [
        ("command_reply", ["bob@example.com"], "notifications@example.com", "notifications@example.com",
         "staff_command_result.txt.j2", f"Done: Re: [Ticket #{number}] Printer broken")]
    assert {"step": "commands", "link": "reply", "result": "to run"} in decision["trace"]
    assert decision["commands"] == {"on": "ticket", "item": None, "refusal": None, "lines": [
        {"text": "#status Waiting", "command": "status", "args": {"value": "Waiting"}, "outcome": "to run"}]}


def test_a_mail_refused_before_running_is_planned_as_it_is_sent(daemon, sink, tmp_path):
    """Refused before anything runs: the planned reply is the one written, text and all."""
    number, mail = command_file(daemon, tmp_path, "#frobnicate\n")
    dry = json.loads(daemon.cli("replay", "--dry-run", "--json", str(mail)).stdout)
    real = json.loads(daemon.cli("replay", "--json", str(mail)).stdout)   # the daemon's worker may file it
    daemon.wait_processed(len(daemon.spool_states()))

    assert [o["subject"] for o in dry["outgoing"]] == [f"Not done: Re: [Ticket #{number}] Printer broken"]
    with daemon.connect() as conn:
        rows = conn.execute('SELECT kind, mail_from, rcpt, "to", subject, b.raw FROM outbox o '
                            'JOIN outbox_body b ON b.outbox_id = o.id WHERE cause_id = ? ORDER BY o.id',
                            (real["spool_id"],)).fetchall()
    assert [(o["kind"], o["mail_from"], o["rcpt"], o["to"], o["subject"]) for o in dry["outgoing"]] == [
        (kind, mail_from, json.loads(rcpt), json.loads(to), subject) for kind, mail_from, rcpt, to, subject, _ in rows]
    raw = rows[0][-1]
    assert "unknown command #frobnicate" in parsed(raw).get_content()


def test_commands_from_a_customer_are_only_text(daemon, sink):
    number = new_ticket(daemon)
    staff_mail(daemon, sink, number, "#status Closed\nplease close it\n", sender="ann@acme.example")

    assert daemon.ticket(number)["status"] == "New"
    assert replies_to(sink, "ann@acme.example") == []
    assert daemon.ticket(number)["messages"][-1]["reply_text"].startswith("#status Closed")


def notice_for_triage(daemon, sink):
    """A stranger's mail quoting a ticket tag goes to triage; the notice Bob gets (its Message-ID)."""
    number = new_ticket(daemon)
    sink.messages.clear()
    daemon.send(make_mail(subject=f"[Ticket #{number}] spam offer", sender="spammer@evil.example"))
    processed(daemon)
    item = [i for i in daemon.inbound() if i["reason"] == "unknown_sender"][-1]
    notice = [parsed(raw) for _, rcpts, raw in sink.messages if "bob@example.com" in rcpts][-1]
    assert "#create-ticket" in notice.get_content()
    return number, item, notice["Message-ID"]


def reply_to_notice(daemon, sink, notice_id, body, to="notifications@example.com"):
    return staff_mail(daemon, sink, None, body, subject="Re: New inbound message", to=to,
                      headers={"In-Reply-To": notice_id, "References": notice_id})[1]


@pytest.fixture
def triage_daemon(instance):
    instance.ini.write_text(instance.ini.read_text().replace(
        "[connector]\n", "[connector]\ntriage_notice_to = bob@example.com\n"))
    return instance.start()


def test_ticket_commands_in_a_reply_to_a_notice_are_refused(triage_daemon, sink):
    _, item, notice_id = notice_for_triage(triage_daemon, sink)
    answer = reply_to_notice(triage_daemon, sink, notice_id, "#status Closed\n")

    assert answer["Subject"].startswith("Not done:")
    assert "#status acts on a ticket" in answer.get_content()
    assert f"(inbound item {item['id']})" in answer.get_content()     # the notice names its item
    assert [i for i in triage_daemon.inbound() if i["id"] == item["id"]][0]["status"] == "awaiting_review"


def test_close_by_reply_to_the_notice(triage_daemon, sink):
    _, item, notice_id = notice_for_triage(triage_daemon, sink)
    answer = reply_to_notice(triage_daemon, sink, notice_id, "#close\n", to="support@example.com")

    assert answer["Subject"].startswith("Done:"), answer.get_content()
    assert [i for i in triage_daemon.inbound() if i["id"] == item["id"]][0]["status"] == "closed"


def test_create_ticket_by_reply_to_the_notice(triage_daemon, sink):
    _, item, notice_id = notice_for_triage(triage_daemon, sink)
    answer = reply_to_notice(triage_daemon, sink, notice_id, "#create-ticket\n")

    assert answer["Subject"].startswith("Done:"), answer.get_content()
    created = [t for t in triage_daemon.tickets() if t["contact"] == "spammer@evil.example"]
    assert len(created) == 1 and f"ticket {created[0]['number']} created" in answer.get_content()


def test_attach_by_reply_to_the_notice_and_its_refusal(triage_daemon, sink):
    number, item, notice_id = notice_for_triage(triage_daemon, sink)
    refused = reply_to_notice(triage_daemon, sink, notice_id, "#attach 999\n")
    assert refused["Subject"].startswith("Not done:")
    answer = reply_to_notice(triage_daemon, sink, notice_id, f"#attach {number}\n")
    assert answer["Subject"].startswith("Done:"), answer.get_content()
    assert ("triage_attached", "mail", "bob@example.com") in history(triage_daemon, number)


def test_delete_by_reply_to_the_notice(triage_daemon, sink):
    _, item, notice_id = notice_for_triage(triage_daemon, sink)
    answer = reply_to_notice(triage_daemon, sink, notice_id, "#delete\n")
    assert answer["Subject"].startswith("Done:"), answer.get_content()
    again = reply_to_notice(triage_daemon, sink, notice_id, "#close\n")
    assert again["Subject"].startswith("Not done:")


@pytest.fixture
def inbox_daemon(instance):
    instance.path.joinpath("config", "inboxes.yaml").write_text(INBOXES_YAML)
    return instance.start()


def open_entry(daemon, number, inbox):
    entries = [e for e in daemon.json("inbox", "list") if e["ticket"] == number and e["inbox"] == inbox]
    return entries[0] if entries else None


def test_worked_example_by_mail_bob_takes_and_forwards_jane_completes(inbox_daemon, sink):
    number = new_ticket(inbox_daemon)
    assert open_entry(inbox_daemon, number, "Technical")["owner"] is None

    _, answer = staff_mail(inbox_daemon, sink, number, "#take\n")
    assert answer["Subject"].startswith("Done:"), answer.get_content()
    assert open_entry(inbox_daemon, number, "Technical")["owner"] == "bob@example.com"

    _, answer = staff_mail(inbox_daemon, sink, number, "#forward Finance response 2099-12-05 please check "
                                                       "the refund\n")
    assert answer["Subject"].startswith("Done:"), answer.get_content()
    entry = open_entry(inbox_daemon, number, "Finance")
    assert entry["owner"] is None and entry["due_type"] == "response" and entry["message"] == "please check the refund"
    assert open_entry(inbox_daemon, number, "Technical") is None

    _, answer = staff_mail(inbox_daemon, sink, number, "#take\n#complete\n", sender="jane@example.com")
    assert answer["Subject"].startswith("Done:"), answer.get_content()
    assert open_entry(inbox_daemon, number, "Finance") is None
    events = history(inbox_daemon, number)
    for event in [("ticket_taken", "mail", "bob@example.com"), ("ticket_forwarded", "mail", "bob@example.com"),
                  ("ticket_completed", "mail", "jane@example.com")]:
        assert event in events


def test_a_note_forwarding_the_ticket_reaches_the_inbox_it_is_forwarded_to(instance, sink):
    """Bob's internal note with `#forward Finance` is written for Finance: Carl (its member,
    `receive: subscribed`, not on the ticket) gets its copy; the customer does not."""
    instance.path.joinpath("config", "inboxes.yaml").write_text(
        "inboxes:\n  - name: Technical\n    members: [bob@example.com]\n"
        "  - name: Finance\n    members: [carl@example.com]\ndefault_inbox: Technical\n")
    daemon = instance.start()
    number = new_ticket(daemon)
    staff_mail(daemon, sink, number, "#take\n")
    # refused as it runs (Amy neither owns the Technical entry nor is a member): no copy for Finance's Carl
    _, answer = staff_mail(daemon, sink, number, "#forward Finance response 2099-12-05\n#internal\nCarl, look.\n",
                           sender="amy@example.com")
    assert answer["Subject"].startswith("Not done:")
    assert not [m for m in sink.to("carl@example.com") if b"Carl, look" in m[2]]
    staff_mail(daemon, sink, number, "#forward Finance response 2099-12-05 please check the refund\n"
                                     "#internal\nCarl, the customer paid twice.\n")
    copies = [parsed(m[2]) for m in sink.to("carl@example.com")]
    assert [c for c in copies if "the customer paid twice" in c.get_body(("plain",)).get_content()], \
        [c["Subject"] for c in copies]
    assert not [m for m in sink.to("ann@acme.example") if b"paid twice" in m[2]]


def test_take_refused_for_a_non_member_undoes_nothing_else(inbox_daemon, sink):
    number = new_ticket(inbox_daemon)
    _, answer = staff_mail(inbox_daemon, sink, number, "#status Waiting\n#take\n", sender="carl@example.com")
    assert answer["Subject"].startswith("Not done:")
    assert "undone" in answer.get_content() and "refused:" in answer.get_content()
    assert inbox_daemon.ticket(number)["status"] == "New"      # the savepoint undid #status
    assert open_entry(inbox_daemon, number, "Technical")["owner"] is None


def test_inbox_and_cancel_commands(inbox_daemon, sink):
    number = new_ticket(inbox_daemon)
    _, answer = staff_mail(inbox_daemon, sink, number, "#inbox Finance\n", sender="jane@example.com")
    assert answer["Subject"].startswith("Done:"), answer.get_content()
    assert open_entry(inbox_daemon, number, "Finance") is not None
    _, answer = staff_mail(inbox_daemon, sink, number, "#inbox Nowhere\n", sender="jane@example.com")
    assert answer["Subject"].startswith("Not done:")
    _, answer = staff_mail(inbox_daemon, sink, number, "#cancel duplicate\n")
    assert answer["Subject"].startswith("Done:"), answer.get_content()


def test_tickets_note_is_filed_not_public_to_the_employees(daemon, sink):
    number = new_ticket(daemon)
    sink.messages.clear()
    result = daemon.cli("tickets", "note", str(number), "--as", "bob@example.com", input=b"Toner ordered.\n")
    assert b"queued as spool entry" in result.stdout and b"the running daemon files" in result.stdout
    processed(daemon)

    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is False and last["from"] == "bob@example.com" and last["reply_text"] == "Toner ordered."
    assert [m for m in sink.messages if "ann@acme.example" in m[1]] == []
    assert [m for m in sink.messages if "jane@example.com" in m[1]]   # the ticket's manager
    assert history(daemon, number)[-1] == ("note_added", "cli", "bob@example.com")
    daemon.stop()   # with no daemon running, the note waits for it, and says so
    result = daemon.cli("tickets", "note", str(number), "--as", "bob@example.com", input=b"Toner arrived.\n")
    assert b"no daemon runs now" in result.stdout


@pytest.mark.parametrize("subject", ["Printer broken", "*123* Printer broken"])
def test_tickets_reply_is_mailed_to_the_customer_like_an_employee_mail(daemon, sink, subject):
    """A ticket opened with the internal keyword (Not Public) still gets a public reply."""
    number = new_ticket(daemon, subject)
    sink.messages.clear()
    queued = json.loads(daemon.cli("tickets", "reply", str(number), "--as", "Jane@Example.com", "--json",
                                   input="Grüße, it is fixed.\n".encode()).stdout)
    assert queued["kind"] == "reply" and queued["ticket"] == number and queued["by"] == "jane@example.com"
    processed(daemon)

    to_ann = [parsed(raw) for _, rcpts, raw in sink.messages if "ann@acme.example" in rcpts]
    assert len(to_ann) == 1
    copy = to_ann[0]
    assert str(copy["From"]) == "Jane Doe <support@example.com>"
    assert f"[Ticket #{number}]" in copy["Subject"]
    assert copy.get_content().strip() == "Grüße, it is fixed."
    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is True and last["from"] == "jane@example.com"
    assert last["message_id"] == queued["message_id"]
    assert history(daemon, number)[-1] == ("employee_replied", "cli", "jane@example.com")


@pytest.mark.parametrize("args, text, why", [
    (["999", "--as", "bob@example.com"], b"hello\n", b"no ticket 999"),
    (["1", "--as", "ina@example.com"], b"hello\n", b"ina@example.com is not an active employee"),
    (["1", "--as", "ann@acme.example"], b"hello\n", b"is not an active employee"),
    (["1", "--as", "bob@example.com"], b" \n\n", b"no text on stdin"),
])
@pytest.mark.parametrize("kind", ["note", "reply"])
def test_tickets_note_and_reply_refusals_exit_1_with_one_line(daemon, kind, args, text, why):
    new_ticket(daemon)
    before = len(daemon.spool_states())
    result = daemon.cli("tickets", kind, *args, input=text, check=False)
    assert result.returncode == 1
    assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len(daemon.spool_states()) == before
