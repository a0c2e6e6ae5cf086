"""Inboxes (seed 001) over the real daemon and CLI: where a new ticket lands, the
actions (take, complete, cancel, forward), every refusal changing nothing."""

import json
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import make_mail, wait_for

INBOXES_YAML = """\
inboxes:
  - name: Technical
    members: [bob@example.com, carl@example.com]
    address: tech@example.com
  - name: Finance
    members: [jane.doe@home.example]
    address: billing@example.com
    sender: {address: billing@example.com, name: Finance Team}
  - name: Sales
    members: [amy@example.com]
default_inbox: Sales
"""

FUTURE = (datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat()


def write_inboxes(instance, text=INBOXES_YAML):
    instance.path.joinpath("config", "inboxes.yaml").write_text(text)


@pytest.fixture
def desk(instance):
    write_inboxes(instance)
    return instance.start()


def new_ticket(daemon, to="support@example.com", subject="Printer jammed", sender="ann@acme.example", rcpts=None):
    before = len(daemon.spool_states())
    daemon.send(make_mail(subject=subject, sender=sender, to=to), rcpts=rcpts)
    daemon.wait_processed(before + 1)
    return max(t["number"] for t in daemon.tickets())


def entries(instance, *args):
    return instance.json("inbox", "list", *args)


def store_rows(instance):
    """Every inbox entry and ticket event: what a refusal must leave as it was."""
    with instance.connect() as conn:
        return (conn.execute("select * from inbox_entry order by id").fetchall(),
                conn.execute("select * from ticket_event order by id").fetchall())


def refused(instance, *args):
    """Run a command that must be refused: exit 1, one line on stderr, nothing changed."""
    before = store_rows(instance)
    result = instance.cli(*args, check=False)
    assert result.returncode == 1, (args, result.returncode, result.stderr)
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert store_rows(instance) == before
    return lines[0]


def test_new_ticket_lands_in_the_inbox_of_the_address_it_was_sent_to(desk):
    number = new_ticket(desk, to="tech+printers@example.com")   # a +tag form is the inbox's too

    [entry] = entries(desk)
    assert (entry["ticket"], entry["inbox"], entry["status"], entry["owner"]) == (number, "Technical", "open", None)
    assert entry["subject"] == "Printer jammed" and entry["created_at"].endswith("+00:00")
    assert set(entry) >= {"id", "ticket", "subject", "inbox", "owner", "status", "due_type", "due_at",
                          "message", "created_at", "forwarded_from"}
    added = [e for e in desk.json("tickets", "history", str(number)) if e["event"] == "inbox_added"]
    assert [(e["via"], e["detail"]["inbox"], e["detail"]["placed_by"]) for e in added] == \
        [("mail", "Technical", "address")]
    # The auto-response went to the customer, not to our own inbox address.
    desk.wait_delivered()
    assert all("tech+printers@example.com" not in o["rcpt"] for o in desk.outbox())


def test_new_ticket_without_an_inbox_address_lands_in_default_inbox(desk):
    number = new_ticket(desk)
    assert [(e["ticket"], e["inbox"]) for e in entries(desk)] == [(number, "Sales")]


def test_a_follow_up_makes_no_new_entry(desk):
    number = new_ticket(desk, to="billing@example.com")
    desk.send(make_mail(subject=f"Re: [Ticket #{number}] Printer jammed", to="billing@example.com",
                        body="Any news?\n"))
    desk.wait_processed(2)
    assert [(e["ticket"], e["inbox"]) for e in entries(desk, "--status", "all")] == [(number, "Finance")]


def test_without_inboxes_yaml_a_new_ticket_has_no_entry_and_foreign_rcpt_is_refused(daemon):
    new_ticket(daemon)
    assert entries(daemon) == []
    import smtplib
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        daemon.send(make_mail(to="tech@example.com"))


def test_inbox_address_is_ours_for_the_pipe_intake(instance):
    write_inboxes(instance)
    raw = make_mail(to="tech@example.com").as_bytes()
    result = instance.cli("inject", "--recipient", "tech@example.com", "--sender", "ann@acme.example", input=raw,
                          check=False)
    assert result.returncode == 0, result.stderr
    result = instance.cli("inject", "--recipient", "other@example.com", input=raw, check=False)
    assert result.returncode == 65


def test_reloaded_inboxes_yaml_makes_a_new_address_ours(desk):
    write_inboxes(desk, INBOXES_YAML.replace("default_inbox: Sales\n", "")
                  + "  - name: Legal\n    members: [olga@example.com]\n    address: legal@example.com\n"
                  + "default_inbox: Sales\n")

    def reloaded(process):
        return any(json.loads(line).get("event") == "config.reloaded" and json.loads(line).get("process") == process
                   for line in desk.log.read_text().splitlines() if line.startswith("{"))
    # The intake accepts the address once the daemon reloaded; the worker files with its own reload.
    wait_for(lambda: reloaded("daemon") and reloaded("worker"), 30, what="daemon and worker to reload")
    desk.send(make_mail(subject="Contract", to="legal@example.com"))
    desk.wait_processed(1, timeout=30)
    assert [e["inbox"] for e in entries(desk)] == ["Legal"]


def test_worked_example_take_forward_complete(desk):
    """A mail arrives, lands in Technical, Bob takes it, forwards it to Finance with a due date,
    Jane completes it (by one of her addresses)."""
    number = new_ticket(desk, to="tech@example.com")
    [entry] = entries(desk, "Technical", "--unowned")

    taken = desk.json("inbox", "take", str(entry["id"]), "--as", "BOB@example.com")
    assert taken["owner"] == "bob@example.com"
    assert [e["id"] for e in entries(desk, "--owner", "bob@example.com")] == [entry["id"]]
    assert entries(desk, "--unowned") == []

    moved = desk.json("inbox", "forward", str(entry["id"]), "--to", "finance", "--due-type", "response",
                      "--due", FUTURE, "--message", "please check the refund", "--as", "bob@example.com")
    assert (moved["inbox"], moved["owner"], moved["status"], moved["forwarded_from"]) == \
        ("Finance", None, "open", entry["id"])
    assert moved["due_type"] == "response" and moved["due_at"] == f"{FUTURE}T23:59:59+00:00"
    assert moved["message"] == "please check the refund" and moved["created_by"] == "bob@example.com"
    assert [e["status"] for e in entries(desk, "--status", "forwarded")] == ["forwarded"]
    assert [e["inbox"] for e in entries(desk)] == ["Finance"]

    result = desk.cli("inbox", "take", str(moved["id"]), "--as", "jane@example.com", "--json")
    [line] = [json.loads(x) for x in result.stderr.splitlines() if b"inbox." in x]   # one log line
    assert (line["event"], line["entry"], line["by"], line["owner"]) == \
        ("inbox.taken", moved["id"], "jane@example.com", "jane@example.com")
    done = desk.json("inbox", "complete", str(moved["id"]), "--as", "jane@example.com")
    assert done["status"] == "completed" and entries(desk) == []

    shown = desk.json("inbox", "show", str(moved["id"]))
    assert shown["ticket"] == number and shown["status"] == "completed"
    assert "Hello" in shown["reply_text"]
    assert [(h["event"], h["by"], h["via"]) for h in shown["history"]] == [
        ("inbox_added", None, "mail"),
        ("ticket_taken", "bob@example.com", "cli"),
        ("ticket_forwarded", "bob@example.com", "cli"),
        ("ticket_taken", "jane@example.com", "cli"),
        ("ticket_completed", "jane@example.com", "cli"),
    ]
    forwarded = shown["history"][2]["detail"]
    assert forwarded == {"entry": entry["id"], "inbox": "Technical", "to": "Finance", "new_entry": moved["id"],
                         "due_type": "response", "due_at": f"{FUTURE}T23:59:59+00:00",
                         "message": "please check the refund", "owner": "bob@example.com"}
    events = [e["event"] for e in desk.json("tickets", "history", str(number))]
    assert events[-5:] == ["inbox_added", "ticket_taken", "ticket_forwarded", "ticket_taken", "ticket_completed"]
    assert desk.json("inbox", "show", str(entry["id"]))["history"] == shown["history"]   # one chain, both ways
    text = desk.cli("inbox", "show", str(moved["id"])).stdout.decode()
    assert "ticket_forwarded" in text and "Hello" in text
    assert '"event": "inbox.added"' in desk.log.read_text()   # the worker's log line


def test_add_cancel_overdue_and_force(desk):
    number = new_ticket(desk)
    added = desk.json("inbox", "add", str(number), "--inbox", "Technical", "--due-type", "follow_up",
                      "--due", "2099-01-01T09:00:00+01:00", "--message", "call back", "--as", "amy@example.com")
    assert (added["inbox"], added["due_at"], added["created_by"]) == \
        ("Technical", "2099-01-01T08:00:00+00:00", "amy@example.com")
    assert entries(desk, "--overdue") == []
    # An entry whose due date has passed since (written as an old store would hold it).
    with desk.connect() as conn:
        conn.execute("update inbox_entry set due_at = ? where id = ?", (time.time() - 60, added["id"]))
    assert [e["id"] for e in entries(desk, "--overdue")] == [added["id"]]
    # the worker fires its deadline (issue 12) once; let it, so the refusals below compare a still store
    wait_for(lambda: any(e["event"] == "deadline_passed" for e in desk.json("tickets", "history", str(number))),
             15, interval=0.3, what="deadline_passed")

    desk.json("inbox", "take", str(added["id"]), "--as", "bob@example.com")
    # Not a member, owned by another: only with --force.
    refused(desk, "inbox", "take", str(added["id"]), "--as", "carl@example.com")
    forced = desk.json("inbox", "take", str(added["id"]), "--as", "olga@example.com", "--force")
    assert forced["owner"] == "olga@example.com"
    history = desk.json("tickets", "history", str(number))
    assert history[-1]["detail"]["previous_owner"] == "bob@example.com" and history[-1]["detail"]["forced"]
    # The owner may cancel, though not a member.
    cancelled = desk.json("inbox", "cancel", str(added["id"]), "--message", "duplicate", "--as", "olga@example.com")
    assert cancelled["status"] == "cancelled"
    assert desk.json("tickets", "history", str(number))[-1]["detail"]["message"] == "duplicate"
    assert [e["inbox"] for e in entries(desk)] == ["Sales"]
    assert {e["status"] for e in entries(desk, "--status", "all")} == {"open", "cancelled"}


def test_every_refusal_exits_1_with_one_line_and_changes_nothing(desk):
    number = new_ticket(desk, to="tech@example.com")
    [entry] = entries(desk)
    eid = str(entry["id"])
    past = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    cases = [
        (("inbox", "take", "999", "--as", "bob@example.com"), "no inbox entry 999"),
        (("inbox", "take", eid, "--as", "nobody@example.com"), "not an active employee"),
        (("inbox", "take", eid, "--as", "ina@example.com"), "not an active employee"),   # inactive
        (("inbox", "take", eid), "--as EMAIL is required"),
        (("inbox", "take", eid, "--as", "jane@example.com"), "not a member of Technical"),
        (("inbox", "complete", eid, "--as", "jane@example.com"), "neither the owner"),
        (("inbox", "cancel", eid, "--as", "amy@example.com"), "neither the owner"),
        (("inbox", "forward", eid, "--to", "Finance", "--due-type", "response", "--due", FUTURE,
          "--as", "jane@example.com"), "neither the owner"),
        (("inbox", "forward", eid, "--to", "Nowhere", "--due-type", "response", "--due", FUTURE,
          "--as", "bob@example.com"), "unknown inbox 'Nowhere'"),
        (("inbox", "forward", eid, "--to", "Technical", "--due-type", "response", "--due", FUTURE,
          "--as", "bob@example.com"), "already in Technical"),
        (("inbox", "forward", eid, "--to", "Finance", "--due-type", "someday", "--due", FUTURE,
          "--as", "bob@example.com"), "unknown due type 'someday'"),
        (("inbox", "forward", eid, "--to", "Finance", "--due-type", "response", "--due", past,
          "--as", "bob@example.com"), "in the past"),
        (("inbox", "forward", eid, "--to", "Finance", "--due-type", "response", "--due", "next tuesday",
          "--as", "bob@example.com"), "is not a date"),
        (("inbox", "forward", eid, "--to", "Finance", "--due-type", "response", "--as", "bob@example.com"),
         "needs a due type and a due date"),
        (("inbox", "forward", eid, "--due-type", "response", "--due", FUTURE, "--as", "bob@example.com"),
         "--to INBOX is required"),
        (("inbox", "add", "999", "--inbox", "Finance", "--as", "bob@example.com"), "no ticket 999"),
        (("inbox", "add", str(number), "--inbox", "Technical", "--as", "bob@example.com"),
         f"ticket {number} already has an open entry in Technical"),
        (("inbox", "add", str(number), "--inbox", "Nowhere", "--as", "bob@example.com"), "unknown inbox"),
        (("inbox", "add", str(number), "--inbox", "Finance", "--due", FUTURE, "--as", "bob@example.com"),
         "go together"),
        (("inbox", "list", "Nowhere"), "unknown inbox"),
        (("inbox", "list", "--status", "lost"), "unknown status"),
        (("inbox", "show", "999"), "no inbox entry 999"),
    ]
    for args, expected in cases:
        assert expected in refused(desk, *args), args

    desk.json("inbox", "take", eid, "--as", "bob@example.com")
    assert "already owned by bob@example.com" in refused(desk, "inbox", "take", eid, "--as", "bob@example.com")
    assert "owned by bob@example.com" in refused(desk, "inbox", "take", eid, "--as", "carl@example.com")
    desk.json("inbox", "complete", eid, "--as", "carl@example.com")   # a member completes another's entry
    for action in ("take", "complete", "cancel"):
        assert "is completed, not open" in refused(desk, "inbox", action, eid, "--as", "bob@example.com")
    assert "is completed, not open" in refused(desk, "inbox", "forward", eid, "--to", "Finance", "--due-type",
                                               "response", "--due", FUTURE, "--as", "bob@example.com")


def test_two_processes_adding_one_ticket_to_one_inbox_make_one_open_entry(desk):
    number = new_ticket(desk)
    for round_ in range(3):
        inbox = ("Technical", "Finance", "Technical")[round_]
        cmd = [desk.python, "-m", "connector", "-c", str(desk.ini), "inbox", "add", str(number), "--inbox", inbox,
               "--as", "bob@example.com", "--json"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=desk.path)
                 for _ in range(2)]
        results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
        assert sorted(code for code, _, _ in results) == [0, 1], results
        loser = next(err for code, _, err in results if code == 1).decode()
        assert "already has an open entry" in loser
        winner = json.loads(next(out for code, out, _ in results if code == 0))
        open_here = [e for e in entries(desk, inbox) if e["ticket"] == number]
        assert [e["id"] for e in open_here] == [winner["id"]]
        if round_ == 0:
            desk.json("inbox", "cancel", str(winner["id"]), "--as", "bob@example.com")


def test_two_members_taking_at_once_one_wins(desk):
    new_ticket(desk, to="tech@example.com")
    [entry] = entries(desk)
    procs = [subprocess.Popen([desk.python, "-m", "connector", "-c", str(desk.ini), "inbox", "take",
                               str(entry["id"]), "--as", who], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=desk.path) for who in ("bob@example.com", "carl@example.com")]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0, 1]
    [after] = entries(desk)
    taken = [e for e in desk.json("tickets", "history", str(after["ticket"])) if e["event"] == "ticket_taken"]
    assert [e["by"] for e in taken] == [after["owner"]]


def test_the_auto_response_comes_from_the_sender_of_the_inbox_the_ticket_lands_in(desk, sink):
    from email import message_from_bytes
    new_ticket(desk, to="billing@example.com", sender="ann@acme.example")
    new_ticket(desk, to="tech@example.com", sender="bert@acme.example")   # Technical has no sender
    desk.wait_delivered()
    [(_, _, finance)] = sink.to("ann@acme.example")
    [(_, _, default)] = sink.to("bert@acme.example")
    finance, default = message_from_bytes(finance), message_from_bytes(default)
    assert finance["From"] == "Finance Team <billing@example.com>"
    assert finance["Reply-To"] == default["Reply-To"] == "support@example.com"   # replies still reach us
    assert "Finance Team" not in default["From"] and "support@example.com" in default["From"]


def test_the_contract_as_mail_commands_call_it_without_settings(desk):
    """What staff mail commands and triage actions call: the configuration loaded last, any of
    an employee's addresses, a due date as text; one open entry found by ticket number."""
    from connector.checks import load_checked
    from connector.store import events
    from connector.store.models import database
    from connector.workqueue import inbox
    from connector.workqueue.errors import Refused
    number = new_ticket(desk, to="billing@example.com")
    load_checked(desk.ini)   # what a process runs on: its inboxes are the ones in force
    desk.open_store()
    now = time.time()
    entry = inbox.entry_for(number, by="jane.doe@home.example")
    with database.atomic():
        inbox.take(entry.id, by="Jane.Doe@home.example", via=events.VIA_MAIL, now=now)
        new_id = inbox.forward(entry.id, to="TECHNICAL", due_type="Resolution", due_at=FUTURE,
                               by="jane.doe@home.example", via=events.VIA_MAIL, now=now)
    with pytest.raises(Refused, match="no ticket 999"):
        inbox.entry_for(999, by="jane@example.com")
    with database.atomic():
        second = inbox.add(number, "sales", by="amy@example.com", via=events.VIA_MAIL, now=now)
    with pytest.raises(Refused, match="open in several inboxes"):
        inbox.entry_for(number, by="jane@example.com")
    assert inbox.entry_for(number, by="amy@example.com").id == second   # the one in her inbox
    database.close()
    [forwarded] = entries(desk, "--status", "forwarded")
    assert forwarded["owner"] == "jane@example.com"
    moved = next(e for e in entries(desk) if e["id"] == new_id)
    assert (moved["inbox"], moved["due_type"], moved["created_by"]) == ("Technical", "resolution", "jane@example.com")
    assert [e["via"] for e in desk.json("tickets", "history", str(number))][-3:] == ["mail", "mail", "mail"]


def test_a_ticket_staff_create_from_a_triage_item_gets_one_entry_by_them(desk):
    desk.send(make_mail(subject="Lost in review", to="notifications@example.com"), rcpts=["notifications@example.com"])
    desk.wait_processed(1)
    [item] = desk.inbound()
    desk.cli("inbound", "create-ticket", str(item["id"]), "--as", "bob@example.com")
    [entry] = entries(desk, "--status", "all")
    assert (entry["inbox"], entry["status"], entry["created_by"]) == ("Sales", "open", "bob@example.com")
    [added] = [e for e in desk.json("tickets", "history", str(entry["ticket"])) if e["event"] == "inbox_added"]
    assert (added["by"], added["via"], added["detail"]["placed_by"]) == ("bob@example.com", "cli", "default_inbox")


def test_list_shows_100_entries_by_default_and_says_when_more_follow(desk):
    """A big store does not print everything: 100 entries in id order, a line on stderr naming
    the next page (`--after`, as `tickets list`); `--limit 0` / `--all` list every one."""
    new_ticket(desk)
    with desk.connect() as conn:
        ticket_id = conn.execute("select id from ticket").fetchone()[0]
        conn.executemany("insert into inbox_entry (ticket_id, inbox, status, created_at) values (?, ?, ?, ?)",
                         [(ticket_id, "Sales", "completed", time.time())] * 120)
    ids = [row[0] for row in desk.rows("select id from inbox_entry where status = 'completed' order by id")]
    shown = desk.cli("inbox", "list", "--status", "completed", "--json")
    assert [e["id"] for e in json.loads(shown.stdout)] == ids[:100]   # --json: the list alone on stdout
    assert f"more follow (the next page: --after {ids[99]}" in shown.stderr.decode()
    text = desk.cli("inbox", "list", "--status", "completed")
    lines = text.stdout.decode().splitlines()
    assert len(lines) == 101 and lines[-1].split()[0] == str(ids[99])   # the header and 100 rows
    assert "more follow" in text.stderr.decode()
    rest = desk.cli("inbox", "list", "--status", "completed", "--after", str(ids[99]), "--json")
    assert [e["id"] for e in json.loads(rest.stdout)] == ids[100:] and "more follow" not in rest.stderr.decode()
    for every in (("--all",), ("--limit", "0")):
        result = desk.cli("inbox", "list", "--status", "completed", "--json", *every)
        assert [e["id"] for e in json.loads(result.stdout)] == ids and "more follow" not in result.stderr.decode()
    five = desk.cli("inbox", "list", "--status", "completed", "--limit", "5", "--json")
    assert len(json.loads(five.stdout)) == 5 and f"--after {ids[4]}" in five.stderr.decode()
    assert desk.cli("inbox", "list", "--all", "--limit", "5", check=False).returncode == 2
