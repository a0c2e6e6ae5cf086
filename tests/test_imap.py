"""Scanners against a real Dovecot (tests/dovecot.py), scanning and filing in this
process: logins and TLS, unread vs all_since_last, UIDVALIDITY, every operator
and action on the server, failures that never block a mailbox, crash safety."""

import json
import os
from email.policy import SMTP

import pytest
from imapclient import SEEN

from conftest import make_mail
from dovecot import Site, dovecot_fixture, scanner
from connector.intake.imap import ScanError
from connector.store.models import ScannerMessage
from connector.settings import load_settings

dovecot = pytest.fixture(scope="module")(dovecot_fixture)


def mail(subject, sender="ann@acme.example", **kw):
    """Bytes as the server stores them (CRLF), so what is read back compares equal."""
    return make_mail(subject=subject, sender=sender, **kw).as_bytes(policy=SMTP)


def test_all_since_last_imports_read_mail_flags_after_commit_and_only_new_uids(tmp_path, dovecot):
    user = dovecot.new_user()
    read_elsewhere = dovecot.append(user, mail("Printer broken"), flags=[SEEN])
    unread = dovecot.append(user, mail("Scanner broken"))
    site = Site(tmp_path, [scanner(dovecot, user, scan="all_since_last")])
    result = site.scan()
    assert (result.fetched, result.imported) == (2, 2)
    spool = site.spool()
    assert [s["intake"] for s in spool] == ["imap:support"] * 2 and all(s["hints"] is None for s in spool)
    assert all(SEEN in flags for flags in dovecot.flags(user).values())
    site.file()
    assert sorted(t.subject for t in site.tickets()) == ["Printer broken", "Scanner broken"]
    # incremental: only the UID above the last one is fetched
    newer = dovecot.append(user, mail("Monitor flickers"))
    result = site.scan()
    assert (result.fetched, result.imported) == (1, 1)
    assert newer > unread > read_elsewhere
    assert site.scan().fetched == 0
    from connector.store.models import ScannerFolder
    assert ScannerFolder.get(ScannerFolder.scanner == "support").last_uid == newer


def test_unread_skips_mail_read_in_another_client(tmp_path, dovecot):
    user = dovecot.new_user()
    read_elsewhere = dovecot.append(user, mail("Already read"), flags=[SEEN])
    unread = dovecot.append(user, mail("Still unread"))
    site = Site(tmp_path, [scanner(dovecot, user, scan="unread", unmatched="pipeline")])
    result = site.scan()
    assert (result.fetched, result.imported) == (1, 1)
    assert [s["raw"] for s in site.spool()] == [dovecot.messages(user)[unread][1]]
    dovecot.append(user, mail("Read before the next scan"), flags=[SEEN])
    assert site.scan().fetched == 0
    flags = dovecot.flags(user)
    assert SEEN in flags[unread] and SEEN in flags[read_elsewhere]
    site.file()
    assert [t.subject for t in site.tickets()] == ["Still unread"]


def test_unread_with_leave_does_not_fetch_the_same_message_again(tmp_path, dovecot):
    user = dovecot.new_user()
    uid = dovecot.append(user, mail("Not for us"))
    site = Site(tmp_path, [scanner(dovecot, user, scan="unread", unmatched="leave")])
    assert (site.scan().left, site.scan().fetched) == (1, 0)
    assert SEEN not in dovecot.flags(user)[uid] and site.spool() == []


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_verify_certificate_refuses_then_accepts(tmp_path, dovecot, security):
    user = dovecot.new_user()
    dovecot.append(user, mail(f"Over {security}"))
    port = dovecot.ssl_port if security == "ssl" else dovecot.port
    site = Site(tmp_path, [scanner(dovecot, user, name="strict", security=security, port=port),
                           scanner(dovecot, user, name="trusting", security=security, port=port,
                                   verify_certificate=False)])
    with pytest.raises(ScanError, match="certificate"):
        site.scan("strict")
    assert site.spool() == []
    assert site.scan("trusting").imported == 1


def test_wrong_password_is_a_scan_error(tmp_path, dovecot):
    user = dovecot.new_user()
    site = Site(tmp_path, [scanner(dovecot, user)])
    (tmp_path / "secrets" / "imap.pass").write_text("wrong\n")
    with pytest.raises(ScanError, match="login") as error:
        site.scan()
    # the server's answer as text, not a Python bytes repr (b'[AUTHENTICATIONFAILED] ...')
    assert str(error.value).endswith("failed: [AUTHENTICATIONFAILED] Authentication failed.")
    status = site.inst.cli("scanners", "run", "support", check=False)
    assert status.returncode == 75 and b"b'" not in status.stderr


def test_uidvalidity_change_rescans_without_filing_twice(tmp_path, dovecot):
    user = dovecot.new_user()
    first, second = mail("First in folder"), mail("Second in folder")
    dovecot.append(user, first, folder="Tickets")
    dovecot.append(user, second, folder="Tickets")
    site = Site(tmp_path, [scanner(dovecot, user, folders=["Tickets"])])
    assert site.scan().imported == 2
    old = dovecot.uidvalidity(user, "Tickets")
    dovecot.recreate(user, "Tickets")                 # restored from a backup: new UIDVALIDITY, UIDs start over
    for raw in (first, second, mail("Third, really new")):
        dovecot.append(user, raw, folder="Tickets")
    assert dovecot.uidvalidity(user, "Tickets") != old
    result = site.scan()
    assert (result.fetched, result.imported, result.known) == (3, 1, 2)
    site.file()
    assert sorted(t.subject for t in site.tickets()) == ["First in folder", "Second in folder", "Third, really new"]
    assert len(site.spool()) == 3
    assert all(SEEN in f for f in dovecot.flags(user, "Tickets").values())


OPERATOR_RULES = [
    ("op-contains", {"field": "subject", "op": "contains", "value": "ALPHA-token"}),
    ("op-not_contains", {"all": [{"field": "subject", "op": "contains", "value": "nc-marker"},
                                 {"field": "body", "op": "not_contains", "value": "forbidden"}]}),
    ("op-equals", {"field": "subject", "op": "equals", "value": "exact subject here"}),
    ("op-starts_with", {"field": "subject", "op": "starts_with", "value": "prefix-xyz"}),
    ("op-ends_with", {"field": "from", "op": "ends_with", "value": "@ends.example"}),
    ("op-matches", {"field": "header:X-Ref", "op": "matches", "value": r"^REF-\d{3}$"}),
    ("op-not_matches", {"all": [{"field": "subject", "op": "contains", "value": "nm-marker"},
                                {"field": "subject", "op": "not_matches", "value": r"\d"}]}),
    ("op-nested", {"any": [{"all": [{"field": "from", "op": "ends_with", "value": "@nest.example"},
                                    {"field": "has_attachment", "op": "equals", "value": True}]},
                           {"field": "cc", "op": "contains", "value": "nest-or@"}]}),
    ("op-size", {"field": "size", "op": "greater_than", "value": "40k"}),
]


def test_every_operator_and_nesting_on_the_server(tmp_path, dovecot):
    user = dovecot.new_user()
    attached = make_mail(subject="with file", sender="x@nest.example")
    attached.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="a.bin")
    hits = {
        "op-contains": mail("an alpha-token inside"),
        "op-not_contains": mail("nc-marker ok", body="harmless\n"),
        "op-equals": mail("Exact Subject Here"),
        "op-starts_with": mail("Prefix-XYZ and more"),
        "op-ends_with": mail("from ends", sender="who@Ends.example"),
        "op-matches": mail("with a ref", headers={"X-Ref": "ref-123"}),
        "op-not_matches": mail("nm-marker without digits"),
        "op-nested": attached.as_bytes(policy=SMTP),
        "op-size": mail("big one", body="x" * 50_000 + "\n"),
    }
    misses = [mail("nc-marker", body="this is forbidden\n"), mail("exact subject here, not"),
              mail("nm-marker 7"), mail("no file", sender="x@nest.example"),
              mail("ref off", headers={"X-Ref": "REF-1234"}), mail("xyz-prefix"), mail("alpha token")]
    for raw in list(hits.values()) + misses:
        dovecot.append(user, raw)
    nested_or = mail("cc route", cc="nest-or@acme.example")
    dovecot.append(user, nested_or)
    rules = [{"name": name, "conditions": cond, "actions": [{"move_to_folder": name}]}
             for name, cond in OPERATOR_RULES]
    site = Site(tmp_path, [scanner(dovecot, user, unmatched="leave", rules=rules)])
    result = site.scan()
    assert result.fetched == len(hits) + len(misses) + 1
    for name, raw in hits.items():
        moved = [body for _, body in dovecot.messages(user, name).values()]
        expected = [raw] + ([nested_or] if name == "op-nested" else [])
        assert sorted(moved) == sorted(expected), name
    left = dovecot.messages(user)
    assert sorted(body for _, body in left.values()) == sorted(misses)
    assert all(SEEN not in flags for flags, _ in left.values())      # leave: untouched
    assert site.spool() == []                                         # moves only: nothing imported


def test_every_action(tmp_path, dovecot):
    user = dovecot.new_user()
    rules = [
        {"name": "contact-only", "conditions": {"field": "subject", "op": "contains", "value": "add me"},
         "actions": ["create_contact"]},
        {"name": "billing", "conditions": {"field": "subject", "op": "contains", "value": "billing"},
         "actions": ["create_contact", {"create_or_update_ticket": {
             "status": "Billing", "manager": "jane@example.com", "priority": "high", "inbox": False}},
             {"move_to_folder": "Processed"}]},
        {"name": "partner", "conditions": {"field": "subject", "op": "contains", "value": "partner"},
         "actions": [{"create_or_update_ticket": {"match": r"TT(\d+)", "status": "Answered"}}]},
        {"name": "spam", "conditions": {"field": "subject", "op": "contains", "value": "spam"},
         "actions": ["delete_message"]},
        {"name": "fyi", "conditions": {"field": "subject", "op": "starts_with", "value": "fyi"},
         "actions": ["mark_read"]},
        {"name": "stopper", "conditions": {"field": "subject", "op": "contains", "value": "stopme"},
         "actions": ["mark_read", "stop", "delete_message"]},
        {"name": "later", "conditions": {"field": "subject", "op": "contains", "value": "stopme"},
         "actions": ["delete_message"]},
    ]
    site = Site(tmp_path, [scanner(dovecot, user, unmatched="leave", rules=rules)])
    uids = {subject: dovecot.append(user, mail(subject, sender=sender)) for subject, sender in [
        ("please add me", "carol@newco.example"), ("billing question", "ann@acme.example"),
        ("cheap spam", "spam@junk.example"), ("fyi: release notes", "dev@acme.example"),
        ("stopme please", "ann@acme.example"), ("unrelated", "ann@acme.example")]}
    site.scan()
    site.file()
    from connector.store.models import Contact, Message
    (ticket,) = site.tickets()
    assert (ticket.subject, ticket.status, ticket.manager, ticket.priority, ticket.in_inbox) == \
        ("billing question", "Billing", "jane@example.com", "high", False)
    assert Contact.get_or_none(Contact.email == "carol@newco.example") is not None
    assert [s["action"] for s in site.spool()] == ["contact_only", "new_ticket"]
    inbox = {body: flags for flags, body in dovecot.messages(user).values()}
    assert SEEN in dovecot.messages(user, "Processed")[1][0]           # moved after the commit, read
    subjects = {uid: subject for subject, uid in uids.items()}
    in_inbox = sorted(subjects[u] for u in dovecot.flags(user))
    assert in_inbox == ["fyi: release notes", "please add me", "stopme please", "unrelated"]  # spam deleted, billing moved
    flags = dovecot.flags(user)
    assert SEEN in flags[uids["fyi: release notes"]] and SEEN in flags[uids["stopme please"]]
    assert SEEN in flags[uids["please add me"]] and SEEN not in flags[uids["unrelated"]]
    assert len(inbox) == 4
    # create_or_update_ticket with `match`: TT<number> in the subject updates that ticket
    dovecot.append(user, mail(f"partner update TT{ticket.number}", sender="ann@acme.example"))
    site.scan()
    site.file()
    (ticket,) = site.tickets()
    assert ticket.status == "Answered"
    assert Message.select().where((Message.ticket == ticket) & (Message.direction == "in")).count() == 2


def test_a_message_that_cannot_be_fetched_does_not_block_the_rest(tmp_path, dovecot):
    user = dovecot.new_user()
    uids = [dovecot.append(user, mail(f"Message {n}")) for n in range(3)]
    site = Site(tmp_path, [scanner(dovecot, user)])
    broken = next(f for f in (dovecot.maildir(user) / "new").iterdir() if b"Message 1" in f.read_bytes())
    os.chmod(broken, 0)                       # Dovecot answers its FETCH with BYE and hangs up
    try:
        result = site.scan()
    finally:
        base = broken.name.split(":")[0]
        for folder in ("new", "cur"):
            for path in (dovecot.maildir(user) / folder).glob(base + "*"):
                os.chmod(path, 0o600)
    assert (result.imported, result.failed) == (2, 1)
    flags = dovecot.flags(user)
    assert SEEN not in flags[uids[1]] and SEEN in flags[uids[0]] and SEEN in flags[uids[2]]
    row = ScannerMessage.get(ScannerMessage.uid == uids[1])
    assert row.state == "failed" and row.error
    status = json.loads(site.inst.cli("scanners", "status", "--json").stdout)[0]
    assert status["failed"][0]["uid"] == uids[1] and status["imported"] == 2
    result = site.scan()                                  # retried, now readable
    assert (result.fetched, result.imported) == (1, 1)
    assert SEEN in dovecot.flags(user)[uids[1]]


def test_crash_between_commit_and_flag_redoes_only_the_mailbox_actions(tmp_path, dovecot, monkeypatch):
    user = dovecot.new_user()
    uid = dovecot.append(user, mail("crash me"))
    rules = [{"name": "all", "conditions": {"field": "subject", "op": "contains", "value": "crash"},
              "actions": ["create_or_update_ticket", {"move_to_folder": "Done"}]}]
    site = Site(tmp_path, [scanner(dovecot, user, rules=rules)])
    from connector.intake.imap import Scanner

    def crash(*args):
        raise ConnectionResetError("connection lost before the flags")

    monkeypatch.setattr(Scanner, "_act", crash)
    with pytest.raises(ConnectionResetError):
        site.scan()
    assert SEEN not in dovecot.flags(user)[uid] and len(site.spool()) == 1
    monkeypatch.undo()
    site.scan()
    assert len(site.spool()) == 1                         # not stored again
    assert dovecot.flags(user) == {} and len(dovecot.flags(user, "Done")) == 1


def test_xoauth2_with_a_shared_mailbox(tmp_path, dovecot):
    shared = dovecot.new_user("shared")
    dovecot.append(shared, mail("For the shared mailbox"))
    dovecot.introspection.tokens["tok-delegate-1"] = shared   # the delegate's token opens the shared mailbox
    site = Site(tmp_path, [scanner(dovecot, "delegate@example.test", auth="xoauth2", password_file=None,
                                   token_command="echo tok-delegate-1", mailbox=shared,
                                   security="ssl", port=dovecot.ssl_port, verify_certificate=False),
                           scanner(dovecot, "delegate@example.test", name="expired", auth="xoauth2",
                                   password_file=None, token_command="echo tok-expired", mailbox=shared),
                           scanner(dovecot, "delegate@example.test", name="broken-tool", auth="xoauth2",
                                   password_file=None, token_command="exit 3")])
    assert site.scan().imported == 1
    assert "tok-delegate-1" in dovecot.introspection.requests
    assert f"user=<{shared}>, method=XOAUTH2" in dovecot.log()
    with pytest.raises(ScanError, match="login"):
        site.scan("expired")
    with pytest.raises(ScanError, match="token_command failed"):
        site.scan("broken-tool")


def test_run_and_status_commands(tmp_path, dovecot):
    user = dovecot.new_user()
    dovecot.append(user, mail("Via the Run button"))
    site = Site(tmp_path, [scanner(dovecot, user), scanner(dovecot, user, name="down", port=1, active=False)])
    data = json.loads(site.inst.cli("scanners", "run", "support", "--json").stdout)
    assert (data["fetched"], data["imported"]) == (1, 1)
    failed = site.inst.cli("scanners", "run", "down", check=False)
    assert failed.returncode == 75 and b"cannot connect" in failed.stderr
    status = {s["name"]: s for s in json.loads(site.inst.cli("scanners", "status", "--json").stdout)}
    assert status["support"]["imported"] == 1 and status["support"]["last_uid"] == {"INBOX": 1}
    assert status["support"]["last_success"] and status["support"]["last_error"] is None
    assert status["support"]["active"] is True and status["down"]["active"] is False
    assert "cannot connect" in status["down"]["last_error"]["text"] and status["down"]["last_error"]["time"]
    assert status["down"]["last_uid"] == {"INBOX": None} and status["down"]["imported"] == 0
    text = site.inst.cli("scanners", "status").stdout.decode()
    assert "support" in text and "down" in text


def test_custom_match_naming_no_ticket_makes_a_new_ticket(tmp_path, dovecot):
    """Seed 003: the rule's regex links a mail to a ticket only when such a ticket is
    found; a number that is no ticket number (an order number) is a new ticket, not triage."""
    user = dovecot.new_user()
    rules = [{"name": "orders", "conditions": {"field": "subject", "op": "contains", "value": "order"},
              "actions": [{"create_or_update_ticket": {"match": r"(\d+)", "status": "Open"}}]}]
    site = Site(tmp_path, [scanner(dovecot, user, rules=rules)])
    dovecot.append(user, mail("order 4711 is missing", sender="ann@acme.example"))
    site.scan()
    site.file()
    (ticket,) = site.tickets()
    assert (ticket.subject, ticket.status) == ("order 4711 is missing", "Open")
    assert [s["action"] for s in site.spool()] == ["new_ticket"]
    # a number that is a ticket still updates it
    dovecot.append(user, mail(f"Re: order {ticket.number} news", sender="ann@acme.example"))
    site.scan()
    site.file()
    assert [s["action"] for s in site.spool()] == ["new_ticket", "follow_up"]
    assert len(site.tickets()) == 1


def test_run_command_files_what_it_imported_without_a_daemon(tmp_path, dovecot):
    """Seed 003's Run button makes the tickets now, not at the daemon's next start."""
    user = dovecot.new_user()
    dovecot.append(user, mail("Run makes a ticket", sender="ann@acme.example"))
    site = Site(tmp_path, [scanner(dovecot, user)])
    data = json.loads(site.inst.cli("scanners", "run", "support", "--json").stdout)
    assert (data["imported"], data["processed"]) == (1, {"new_ticket": 1})
    (ticket,) = site.inst.tickets()
    assert ticket["subject"] == "Run makes a ticket"
    assert {o["kind"] for o in site.inst.outbox()} == {"distribution", "auto_response"}
    again = site.inst.cli("scanners", "run", "support").stdout.decode()
    assert "imported 0" in again and "filed" not in again and len(site.inst.tickets()) == 1


def test_a_folder_that_does_not_exist_does_not_block_the_other_folders(tmp_path, dovecot):
    user = dovecot.new_user()
    dovecot.append(user, mail("Still read", sender="ann@acme.example"))
    site = Site(tmp_path, [scanner(dovecot, user, folders=["Gone", "INBOX"])])
    result = site.scan()
    assert result.imported == 1 and list(result.folder_errors) == ["Gone"]
    assert SEEN in dovecot.flags(user)[1]
    status = json.loads(site.inst.cli("scanners", "status", "--json").stdout)[0]
    assert status["last_uid"] == {"Gone": None, "INBOX": 1}
    assert "Gone" in status["last_error"]["text"] and status["last_success"]
    dovecot.append(user, mail("Next one", sender="bob@beta.example"))
    run = site.inst.cli("scanners", "run", "support", check=False)
    assert run.returncode == 75 and b"folder Gone" in run.stderr and b"imported 1" in run.stdout


def test_move_to_a_subfolder_written_with_a_slash(tmp_path, dovecot):
    """`move_to_folder: Processed/Invoices` works on a server whose separator is `.`."""
    user = dovecot.new_user()
    rules = [{"name": "inv", "conditions": {"field": "subject", "op": "contains", "value": "invoice"},
              "actions": [{"create_or_update_ticket": {}}, {"move_to_folder": "Processed/Invoices"}]}]
    site = Site(tmp_path, [scanner(dovecot, user, rules=rules)])
    dovecot.append(user, mail("invoice 17"))
    result = site.scan()
    assert (result.imported, result.acted) == (1, 1)
    with dovecot.client(user) as client:
        delimiter = client.list_folders("", "INBOX")[0][1]
        delimiter = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
    assert dovecot.flags(user) == {}
    assert len(dovecot.messages(user, "Processed/Invoices".replace("/", delimiter))) == 1
    # a scanner reading `folders: [Shared/Support]` finds the same server folder
    dovecot.append(user, mail("hello from a subfolder"), folder="Shared/Support".replace("/", delimiter))
    site.write([scanner(dovecot, user, folders=["Shared/Support"])])
    site.settings = load_settings(site.inst.ini)
    result = site.scan()
    assert (result.imported, result.folder_errors) == (1, {})


def test_custom_match_vouches_for_a_sender_who_is_not_on_the_ticket(tmp_path, dovecot):
    """Seed 003: with the rule's own regex, a mail naming an existing ticket is linked to it,
    whoever sent it (a partner's system quoting our number); the default tag never vouches."""
    user = dovecot.new_user()
    rules = [{"name": "partner", "conditions": {"field": "from", "op": "ends_with", "value": "@partner.example"},
              "actions": [{"create_or_update_ticket": {"match": r"TT(\d+)", "status": "Open"}}]}]
    site = Site(tmp_path, [scanner(dovecot, user, rules=rules)])
    dovecot.append(user, mail("Printer broken", sender="ann@acme.example"))
    site.scan()
    site.file()
    (ticket,) = site.tickets()
    dovecot.append(user, mail(f"Re: TT{ticket.number} delivery", sender="bob@partner.example"))
    dovecot.append(user, mail(f"Re: [Ticket #{ticket.number}] hello", sender="eve@stranger.example"))
    site.scan()
    site.file()
    assert [(s["action"], s["reason"]) for s in site.spool()][1:] == [
        ("follow_up", "scanner_rule_match"), ("triage", "unknown_sender")]
    assert len(site.tickets()) == 1 and site.tickets()[0].status == "Open"


def test_custom_match_on_a_number_too_large_for_the_store_makes_a_new_ticket(tmp_path, dovecot):
    user = dovecot.new_user()
    rules = [{"name": "orders", "conditions": {"field": "subject", "op": "contains", "value": "order"},
              "actions": [{"create_or_update_ticket": {"match": r"(\d+)"}}]}]
    site = Site(tmp_path, [scanner(dovecot, user, rules=rules)])
    dovecot.append(user, mail("order 123456789012345678901234567890 lost", sender="ann@acme.example"))
    site.scan()
    site.file()
    assert [s["action"] for s in site.spool()] == ["new_ticket"]


def test_a_scan_in_several_chunks_acts_on_and_records_every_message(tmp_path, dovecot, monkeypatch):
    """Chunks of 2, then 3: each chunk's actions are recorded with the next chunk's rows, the
    last ones at the end of the folder; a copy in a later chunk is known by its sha256."""
    from connector.intake import imap
    monkeypatch.setattr(imap, "CHUNK_FIRST", 2)
    monkeypatch.setattr(imap, "CHUNK", 3)
    user = dovecot.new_user()
    rules = [{"name": "billing", "conditions": {"field": "subject", "op": "contains", "value": "billing"},
              "actions": ["create_or_update_ticket", {"move_to_folder": "Processed"}]},
             {"name": "fyi", "conditions": {"field": "subject", "op": "starts_with", "value": "fyi"},
              "actions": ["mark_read"]}]
    site = Site(tmp_path, [scanner(dovecot, user, rules=rules)])
    copy = mail("question twice")
    subjects = ["question twice", "billing 1", "fyi 1", "question 2", "billing 2", "question twice", "fyi 2",
                "question 3"]
    uids = {dovecot.append(user, copy if subject == "question twice" else mail(subject)): subject
            for subject in subjects}
    result = site.scan()
    assert (result.fetched, result.imported, result.known, result.acted) == (8, 5, 1, 8)
    assert len(site.spool()) == 5
    states = {row.uid: row.state for row in ScannerMessage.select()}
    assert states == {uid: "left" if uids[uid].startswith("fyi") else "done" for uid in uids}
    inbox = dovecot.flags(user)
    assert sorted(uids[uid] for uid in inbox) == sorted(s for s in subjects if not s.startswith("billing"))
    assert all(SEEN in flags for flags in inbox.values())
    assert len(dovecot.flags(user, "Processed")) == 2
    assert site.scan().fetched == 0


def test_idle_wakes_for_mail_that_arrives_while_it_looks_for_mail(tmp_path, dovecot):
    """Mail delivered after the SELECT that precedes IDLE is announced by the server in the
    answer to the next command; IDLE never repeats it, so no command may come in between."""
    import threading
    from connector.intake.imap import connect, logout, wait_for_mail
    user = dovecot.new_user()
    dovecot.append(user, mail("before"))
    site = Site(tmp_path, [scanner(dovecot, user, idle=True)])
    last_uid = site.scan().fetched
    client = connect(site.cfg())
    select = client.select_folder

    def select_then_mail_arrives(folder):
        info = select(folder)
        dovecot.append(user, mail("while looking"))
        return info
    client.select_folder = select_then_mail_arrives
    try:
        assert wait_for_mail(client, site.cfg(), threading.Event(), last_uid, max_wait=10) == "idle"
    finally:
        logout(client)


def test_fetch_reads_plain_answers_and_falls_back_on_any_other(tmp_path, dovecot):
    """The fast read of `UID n BODY[] {size}` answers gives what imapclient's parser gives; an
    answer of another shape (here an unsolicited FLAGS change another client made) is parsed
    by imapclient, the body still returned by UID."""
    from imapclient import IMAPClient
    from connector.intake.imap import fetch_bodies
    from dovecot import PASSWORD
    user = dovecot.new_user()
    raws = [mail(f"Message {n}") for n in range(3)]
    uids = [dovecot.append(user, raw) for raw in raws]
    clients = [IMAPClient("127.0.0.1", dovecot.port, ssl=False) for _ in range(2)]
    try:
        for client in clients:
            client.login(user, PASSWORD)
            client.select_folder("INBOX")
        reader, other = clients
        expected = {uid: item[b"BODY[]"] for uid, item in reader.fetch(uids, [b"BODY.PEEK[]"]).items()}
        assert fetch_bodies(reader, uids) == expected == dict(zip(uids, raws))
        other.add_flags(uids[:1], [b"\\Flagged"])
        assert fetch_bodies(reader, uids) == expected            # with `* 1 FETCH (FLAGS ...)` inside
        assert SEEN not in dovecot.flags(user)[uids[0]]
    finally:
        for client in clients:
            client.logout()


def test_imaplib_formats_its_debug_lines_only_for_a_logger_that_takes_them(tmp_path, dovecot):
    """imapclient turns imaplib's debug level to 5: imaplib then formats a line, with the repr
    of every body fetched, for each line it reads, for a logger that drops them. A scanner's
    connection keeps that only while the `imapclient.imaplib` logger takes debug lines."""
    import logging

    from connector.intake.imap import IMAPLIB_LOGGER, connect, logout
    user = dovecot.new_user()
    dovecot.append(user, mail("Printer broken"))
    cfg = Site(tmp_path, [scanner(dovecot, user)]).cfg()
    imaplib_log = logging.getLogger(IMAPLIB_LOGGER)
    levels = []
    for level in (logging.WARNING, logging.DEBUG):
        imaplib_log.setLevel(level)
        try:
            client = connect(cfg)
            levels.append(client._imap.debug)
            logout(client)
        finally:
            imaplib_log.setLevel(logging.NOTSET)
    assert levels == [0, 5]


def test_a_scan_error_is_told_by_its_type_not_its_name():
    """Its own words for any ScanError (a subclass too); the type in front of anything else,
    even an exception that happens to be called ScanError."""
    from connector.scanners.service import describe

    class TokenExpired(ScanError):
        pass

    class Other(Exception):
        pass
    Other.__name__ = "ScanError"
    assert describe(TokenExpired("token expired")) == "token expired"
    assert describe(Other("boom")) == "ScanError: boom"
    assert describe(OSError("reset")) == "OSError: reset"
