"""Seed 004 correspondence rules, end to end: real daemon, real SMTP, real relay, real SQLite.

Staff (tests/conftest.py): jane (manager option, manages Acme), bob (all),
carl (subscribed), olga (off), ina (inactive, all), amy (account_manager, manages Beta).
"""

import email
from email import policy

from conftest import make_mail, wait_for


def parsed(raw):
    return email.message_from_bytes(raw, policy=policy.default)


def new_ticket(daemon, sink, sender="ann@acme.example", subject="Printer broken", **kw):
    msg = make_mail(subject=subject, sender=sender, name="Ann Customer", **kw)
    daemon.send(msg)
    daemon.wait_processed(len(daemon.spool_states()) or 1)
    daemon.wait_delivered()
    ticket = [t for t in daemon.tickets() if t["subject"] == subject][-1]
    return ticket, msg


def test_new_ticket_files_distributes_and_answers(daemon, sink):
    ticket, msg = new_ticket(daemon, sink)
    assert ticket["contact"] == "ann@acme.example"
    assert ticket["manager"] == "jane@example.com"          # Acme's account manager
    assert ticket["in_inbox"] is True
    show = daemon.ticket(ticket["number"])
    assert show["recipients"]["external"] == [{"address": "ann@acme.example", "kind": "to"}]
    assert set(show["recipients"]["employees"]) == {"jane@example.com", "bob@example.com"}
    inbound = [m for m in show["messages"] if m["direction"] == "in"]
    assert len(inbound) == 1 and inbound[0]["public"] is True
    assert "please help" in inbound[0]["text"]

    # Distribution: manager in To, other employees in Cc; never olga (off), ina (inactive), carl.
    dist = [m for m in sink.messages if "jane@example.com" in m[1]]
    assert len(dist) == 1
    _, rcpts, raw = dist[0]
    assert sorted(rcpts) == ["bob@example.com", "jane@example.com"]
    out = parsed(raw)
    assert out["To"] == "jane@example.com" and out["Cc"] == "bob@example.com"
    assert out["From"].addresses[0].addr_spec == "support@example.com"
    assert out["Reply-To"] == "support@example.com"
    assert f"[Ticket #{ticket['number']}]" in out["Subject"]
    assert out["In-Reply-To"] == msg["Message-ID"]

    # Auto-response to the sender: tag, From/Reply-To public, reply-above first line, Auto-Submitted.
    auto = sink.to("ann@acme.example")
    assert len(auto) == 1
    answer = parsed(auto[0][2])
    assert f"[Ticket #{ticket['number']}]" in answer["Subject"]
    assert answer["From"].addresses[0].addr_spec == "support@example.com"
    assert answer["Reply-To"] == "support@example.com"
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer.get_content().splitlines()[0] == "##- Please type your reply above this line -##"
    assert answer["In-Reply-To"] == msg["Message-ID"]
    assert answer["Message-ID"] != msg["Message-ID"]


def test_a_status_change_takes_the_ticket_out_of_the_inbox_unless_told_otherwise(daemon, sink):
    """Seed 004: a ticket moved to another status leaves the Inbox; a customer's mail puts it back."""
    ticket, _ = new_ticket(daemon, sink, subject="Scanner jam")
    number = ticket["number"]
    assert daemon.ticket(number)["in_inbox"] is True
    daemon.cli("tickets", "set", str(number), "--status", "Waiting")
    assert daemon.ticket(number)["in_inbox"] is False
    assert [e["event"] for e in daemon.json("tickets", "history", str(number))][-2:] == \
        ["status_changed", "inbox_flag_changed"]
    daemon.cli("tickets", "set", str(number), "--status", "Open", "--inbox", "yes")
    assert daemon.ticket(number)["in_inbox"] is True
    daemon.cli("tickets", "set", str(number), "--manager", "bob@example.com")     # no status change: stays
    assert daemon.ticket(number)["in_inbox"] is True


def test_customer_follow_up_goes_to_employees_only(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="Scanner jam")
    number = ticket["number"]
    daemon.cli("tickets", "set", str(number), "--inbox", "no")
    sink.messages.clear()
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] Scanner jam", sender="ann@acme.example",
                          body="It is still jammed.\n\n> old text\n"))
    daemon.wait_processed(2)
    daemon.wait_delivered()
    show = daemon.ticket(number)
    last = show["messages"][-1]
    assert last["direction"] == "in" and last["public"] is True and last["internal"] is False
    assert last["reply_text"] == "It is still jammed."
    assert show["in_inbox"] is True                        # a customer update puts it back
    assert len(sink.messages) == 1
    _, rcpts, raw = sink.messages[0]
    assert sorted(rcpts) == ["bob@example.com", "jane@example.com"]
    assert "ann@acme.example" not in rcpts                 # never back to the sender
    assert parsed(raw)["To"] == "jane@example.com"


def test_employee_follow_up_reaches_customer_as_public_address(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="VPN down")
    number = ticket["number"]
    sink.messages.clear()
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] VPN down", sender="jane@example.com",
                          name="Jane Doe", body="Please restart the router."))
    daemon.wait_processed(2)
    daemon.wait_delivered()
    assert len(sink.messages) == 1
    _, rcpts, raw = sink.messages[0]
    assert sorted(rcpts) == ["ann@acme.example", "bob@example.com"]   # bob in Bcc; not jane
    out = parsed(raw)
    assert out["From"].addresses[0].display_name == "Jane Doe"
    assert out["From"].addresses[0].addr_spec == "support@example.com"
    assert out["Reply-To"] == "support@example.com"
    assert out["To"] == "ann@acme.example"
    assert "bob@example.com" not in raw.decode()                      # Bcc stays hidden
    assert "jane@example.com" not in raw.decode()                     # personal address hidden
    last = daemon.ticket(number)["messages"][-1]
    assert last["public"] is True and last["from"] == "jane@example.com"


def test_unified_sender_name(tmp_path, sink):
    from conftest import Instance
    inst = Instance(tmp_path, sink.port, connector__sender_name="unified",
                    connector__response_from_name="Acme Helpdesk").start()
    try:
        ticket, _ = new_ticket(inst, sink, subject="Mail quota")
        sink.messages.clear()
        inst.send(make_mail(subject=f"[Ticket #{ticket['number']}] Mail quota", sender="jane@example.com",
                            name="Jane Doe"))
        inst.wait_processed(2)
        inst.wait_delivered()
        assert parsed(sink.messages[0][2])["From"].addresses[0].display_name == "Acme Helpdesk"
    finally:
        inst.stop()


def test_internal_by_keyword_and_by_cc_only(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="Server room")
    number = ticket["number"]
    sink.messages.clear()
    daemon.send(make_mail(subject=f"*123* [Ticket #{number}] Server room", sender="jane@example.com",
                          body="Internal: the customer owes us money."))
    daemon.send(make_mail(subject=f"[Ticket #{number}] Server room", sender="jane@example.com",
                          to="ann@acme.example", cc="support@example.com", body="Cc-only note."))
    daemon.wait_processed(3)
    daemon.wait_delivered()
    messages = daemon.ticket(number)["messages"][-2:]
    assert [m["public"] for m in messages] == [False, False]
    assert [m["internal"] for m in messages] == [True, True]
    for _, rcpts, raw in sink.messages:
        assert rcpts == ["bob@example.com"]                # employees only, never ann
        assert "*123*" in parsed(raw)["Subject"]           # replies stay internal
    assert len(sink.messages) == 2
    spool = daemon.spool_states()
    assert [row[2] for row in spool[-2:]] == ["internal", "internal"]
    assert {row[3] for row in spool[-2:]} == {"internal_keyword", "public_address_not_in_to"}


def test_customer_cc_counts_as_to(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="Toner")
    sink.messages.clear()
    daemon.send(make_mail(subject=f"Re: [Ticket #{ticket['number']}] Toner", sender="ann@acme.example",
                          to="someone@acme.example", cc="support@example.com", body="Cc to support."))
    daemon.wait_processed(2)
    daemon.wait_delivered()
    last = daemon.ticket(ticket["number"])["messages"][-1]
    assert last["public"] is True and last["internal"] is False
    assert daemon.spool_states()[-1][2] == "follow_up"


def test_receive_options_subscribed_and_account_manager(daemon, sink):
    # Beta's manager is amy (account_manager option): new Beta tickets are managed by amy.
    ticket, _ = new_ticket(daemon, sink, sender="bert@beta.example", subject="Beta laptop")
    rcpts = sorted(sink.messages[0][1])
    assert rcpts == ["amy@example.com", "bob@example.com"]
    assert ticket["manager"] == "amy@example.com"
    # Unknown domain: no manager; only `receive: all` staff (bob).
    sink.messages.clear()
    new_ticket(daemon, sink, sender="zed@nowhere.example", subject="Loose ends")
    dist = [m for m in sink.messages if "zed@nowhere.example" not in m[1]]
    assert [sorted(m[1]) for m in dist] == [["bob@example.com"]]


def test_references_thread_an_edited_subject_and_forged_ones_do_not(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="Wifi slow")
    auto = parsed(sink.to("ann@acme.example")[0][2])
    daemon.send(make_mail(subject="totally different subject", sender="ann@acme.example",
                          headers={"In-Reply-To": auto["Message-ID"], "References": auto["Message-ID"]}))
    daemon.wait_processed(2)
    assert daemon.spool_states()[-1][2] == "follow_up"
    assert daemon.ticket(ticket["number"])["message_count"] >= 3
    forged = auto["Message-ID"].replace("<t", "<t9").replace("@", "0@", 1)
    daemon.send(make_mail(subject="another subject", sender="ann@acme.example",
                          headers={"In-Reply-To": forged}))
    daemon.wait_processed(3)
    assert daemon.spool_states()[-1][2] == "new_ticket"


def test_attachments_text_and_original_are_stored(daemon, sink):
    msg = make_mail(subject="Logs attached", body="See the log.\n\nOn Mon, 3 Feb 2025 at 10:12, Bob Smith <bob@acme.example> wrote:\n> earlier\n")
    msg.add_attachment(b"line1\nline2\n", maintype="text", subtype="plain", filename="boot.log")
    raw = msg.as_bytes()
    daemon.send(raw, "ann@acme.example", ["support@example.com"])
    daemon.wait_processed(1)
    ticket = daemon.tickets()[0]
    first = daemon.ticket(ticket["number"])["messages"][0]
    assert first["attachments"] == ["boot.log"]
    assert first["reply_text"] == "See the log."
    assert "earlier" in first["text"]
    exported = daemon.cli("message", "export", str(first["id"])).stdout
    assert exported.replace(b"\r\n", b"\n").rstrip(b"\n") == raw.replace(b"\r\n", b"\n").rstrip(b"\n")


def test_inbox_flag_not_set_by_employee_update(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="Inbox check")
    daemon.cli("tickets", "set", str(ticket["number"]), "--inbox", "no")
    daemon.send(make_mail(subject=f"[Ticket #{ticket['number']}] Inbox check", sender="bob@example.com"))
    daemon.wait_processed(2)
    wait_for(lambda: daemon.ticket(ticket["number"])["message_count"] >= 3, interval=0.3)
    assert daemon.ticket(ticket["number"])["in_inbox"] is False


def test_everybody_on_the_ticket_gets_the_copy_from_support_even_when_addressed_directly(daemon, sink):
    ticket, _ = new_ticket(daemon, sink, subject="Copies")
    sink.messages.clear()
    daemon.send(make_mail(subject=f"Re: [Ticket #{ticket['number']}] Copies", sender="ann@acme.example",
                          cc="bob@example.com"))                       # Ann copied Bob herself
    daemon.wait_processed(2)
    daemon.wait_delivered()
    assert [sorted(m[1]) for m in sink.messages] == [["bob@example.com", "jane@example.com"]]
    sink.messages.clear()
    daemon.send(make_mail(subject=f"Re: [Ticket #{ticket['number']}] Copies", sender="jane@example.com",
                          name="Jane Doe", cc="ann@acme.example"))     # Jane copied Ann herself
    daemon.wait_processed(3)
    daemon.wait_delivered()
    assert [sorted(m[1]) for m in sink.messages] == [["ann@acme.example", "bob@example.com"]]
    out = parsed(sink.messages[0][2])
    assert out["To"] == "ann@acme.example"
    assert out["From"].addresses[0].addr_spec == "support@example.com"   # not Jane's own address


def test_sender_names_on_copies(daemon, sink):
    """Seed 004: the employee's name comes from their own mail; a bare customer address is no name."""
    ticket, _ = new_ticket(daemon, sink, subject="Names")
    number = ticket["number"]
    sink.messages.clear()
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] Names", sender="jane@example.com",
                          name="Jane D. (Field Service)"))
    daemon.wait_processed(2)
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] Names", sender="jane@example.com"))
    daemon.wait_processed(3)
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] Names", sender="ann@acme.example"))
    daemon.wait_processed(4)
    daemon.wait_delivered()
    names = [parsed(m[2])["From"].addresses[0].display_name for m in sink.messages]
    assert names == ["Jane D. (Field Service)", "Jane Doe", "ann at acme.example"]


def test_internal_keyword_never_reaches_the_customer(daemon, sink):
    daemon.send(make_mail(subject="*123* Budget question", sender="ann@acme.example", name="Ann"))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    auto = sink.to("ann@acme.example")
    assert len(auto) == 1
    subject = parsed(auto[0][2])["Subject"]
    assert "*123*" not in subject and "Budget question" in subject and "[Ticket #1]" in subject


def test_non_ascii_names_and_subjects_survive_the_round_trip(daemon, sink):
    subject = "Drucker kaputt – bitte helfen 🙏"
    daemon.send(make_mail(subject=subject, sender="jurgen@acme.example", name="Jürgen Müller",
                          body="Grüße aus Köln.\n"))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    ticket = daemon.tickets()[0]
    assert ticket["subject"] == subject
    for _, _, raw in sink.messages:
        raw.split(b"\r\n\r\n")[0].decode("ascii")            # headers are RFC 2047 encoded
        out = parsed(raw)
        assert subject in out["Subject"] and f"[Ticket #{ticket['number']}]" in out["Subject"]
    dist = parsed(sink.to("jane@example.com")[0][2])
    assert dist["From"].addresses[0].display_name == "Jürgen Müller"
    assert "Grüße aus Köln." in dist.get_content()
    answer = parsed(sink.to("jurgen@acme.example")[0][2])
    assert "Jürgen Müller" in answer.get_content()


def test_recipients_from_headers_when_enabled(tmp_path, sink):
    from conftest import Instance
    inst = Instance(tmp_path, sink.port, connector__add_recipients_from_headers="yes").start()
    try:
        inst.send(make_mail(subject="Office move", sender="ann@acme.example", cc="cole@acme.example, carl@example.com"))
        inst.wait_processed(1)
        show = inst.ticket(1)
        assert {"address": "cole@acme.example", "kind": "cc"} in show["recipients"]["external"]
        assert "carl@example.com" in show["recipients"]["employees"]
        inst.send(make_mail(subject="Re: [Ticket #1] Office move", sender="cole@acme.example"))
        inst.wait_processed(2)
        assert inst.spool_states()[-1][2] == "follow_up"          # the colleague is on the ticket now
    finally:
        inst.stop()


def test_without_a_ticket_manager_the_other_employees_are_in_cc(daemon, sink):
    """Seed 004: "the Ticket Manager appears in the To field. Other employees appear in Cc" --
    a customer with no account gives a ticket without a manager: bob (all) is still Cc."""
    ticket, _ = new_ticket(daemon, sink, sender="zed@nowhere.example", subject="No account")
    assert ticket["manager"] is None
    dist = [m for m in sink.messages if "bob@example.com" in m[1]]
    assert len(dist) == 1
    out = parsed(dist[0][2])
    assert out["Cc"] == "bob@example.com" and "bob@example.com" not in str(out["To"])


def spool_with_hints(daemon, msg, hints):
    """A mail stored the way an IMAP scanner stores it: with its rule's hints on the spool entry."""
    from connector.store.spool import store_message
    db = daemon.open_store()
    try:
        store_message(msg.as_bytes(), intake="imap:support-mailbox", hints=hints)
    finally:
        db.close()


def test_a_scanner_rules_manager_receives_the_mail(daemon, sink):
    """Issue 8.6: `create_or_update_ticket: {manager: jane@...}` made Jane the manager, but
    Jane (receive: manager) got no copy: she was not among the employee recipients."""
    rule = {"scanner": "support-mailbox", "rule": "partners", "ticket_fields": {"manager": "jane@example.com"}}
    spool_with_hints(daemon, make_mail(subject="Partner order", sender="orders@partner.example"), rule)
    daemon.wait_processed(1)
    daemon.wait_delivered()
    ticket = daemon.tickets()[0]
    assert ticket["manager"] == "jane@example.com"
    dist = [parsed(raw) for _, rcpts, raw in sink.messages if "jane@example.com" in rcpts]
    assert len(dist) == 1 and dist[0]["To"] == "jane@example.com"      # the manager in To (seed 004)
    # A follow-up whose rule names the manager: the new manager gets it too.
    sink.messages.clear()
    rule["ticket_fields"] = {"manager": "amy@example.com"}           # receive: account_manager
    spool_with_hints(daemon, make_mail(subject=f"Re: [Ticket #{ticket['number']}] Partner order",
                                       sender="orders@partner.example"), rule)
    daemon.wait_processed(2)
    daemon.wait_delivered()
    assert daemon.ticket(ticket["number"])["manager"] == "amy@example.com"
    assert any("amy@example.com" in m[1] for m in sink.messages)
    assert not any("jane@example.com" in m[1] for m in sink.messages)  # no longer the manager


def test_the_accounts_main_contact_is_the_customer(tmp_path, sink):
    """Issue 8.6: the account's main_contact replying to a ticket of that account went to
    triage as unknown_sender; it is the customer's follow-up."""
    from conftest import ACCOUNTS_YAML, Instance
    inst = Instance(tmp_path, sink.port)
    inst.path.joinpath("config", "accounts.yaml").write_text(
        ACCOUNTS_YAML.replace("    manager: jane@example.com\n",
                              "    manager: jane@example.com\n    main_contact: boss@acme-holding.example\n", 1))
    inst.start()
    try:
        ticket, _ = new_ticket(inst, sink, subject="Invoice wrong")
        sink.messages.clear()
        inst.send(make_mail(subject=f"Re: [Ticket #{ticket['number']}] Invoice wrong",
                            sender="boss@acme-holding.example", body="Please fix this quickly.\n"))
        inst.wait_processed(2)
        inst.wait_delivered()
        assert inst.spool_states()[-1][2:] == ("follow_up", "customer")
        assert inst.inbound() == []
        last = inst.ticket(ticket["number"])["messages"][-1]
        assert last["from"] == "boss@acme-holding.example" and last["public"] is True
        assert sorted(sink.messages[0][1]) == ["bob@example.com", "jane@example.com"]
        # Somebody else at another domain still goes to triage.
        inst.send(make_mail(subject=f"Re: [Ticket #{ticket['number']}] Invoice wrong", sender="x@acme-holding.example"))
        inst.wait_processed(3)
        assert inst.spool_states()[-1][2:] == ("triage", "unknown_sender")
    finally:
        inst.stop()


def test_an_idn_account_domain_matches_in_either_form(tmp_path, sink):
    """accounts.yaml lists bücher.example; mail from its ASCII form xn--bcher-kva.example is the
    same account (its manager gets the mail), and a domain written as xn-- matches UTF-8 mail."""
    from conftest import Instance
    inst = Instance(tmp_path, sink.port)
    inst.path.joinpath("config", "accounts.yaml").write_text(
        "accounts:\n  - name: Bücher\n    domains: [bücher.example]\n    manager: jane@example.com\n"
        "  - name: Café\n    domains: [xn--caf-dma.example]\n    manager: amy@example.com\n")
    inst.start()
    try:
        inst.send(make_mail(subject="From the ASCII form", sender="hans@xn--bcher-kva.example"))
        inst.wait_processed(1)
        inst.wait_delivered()
        assert any("jane@example.com" in rcpts for _, rcpts, _ in sink.messages)
        sink.messages.clear()
        inst.send(make_mail(subject="An account written in its xn-- form", sender="marie@xn--caf-dma.example"))
        inst.wait_processed(2)
        inst.wait_delivered()
        assert any("amy@example.com" in rcpts for _, rcpts, _ in sink.messages)
    finally:
        inst.stop()


def test_every_mail_of_a_ticket_threads_for_each_of_its_readers(daemon, sink):
    """Each copy answers a mail its reader never saw (the copy another recipient got): all our
    mails of a ticket carry its root Message-ID first in References, so Ann's copy of Jane's
    answer threads with the auto-response Ann got, and Jane's next copy with her first one."""
    def got(address):
        return [email.message_from_bytes(m[2], policy=policy.default) for m in sink.to(address)]

    def refs(msg):
        return (msg["References"] or "").split()
    ticket, first = new_ticket(daemon, sink)
    number = ticket["number"]
    auto_response, jane_copy = got("ann@acme.example")[-1], got("jane@example.com")[-1]
    answer = make_mail(subject=f"Re: [Ticket #{number}] Printer broken", sender="jane@example.com",
                       body="Please restart it.\n")
    answer["In-Reply-To"] = answer["References"] = jane_copy["Message-ID"]
    daemon.send(answer)
    daemon.wait_processed(2)
    daemon.wait_delivered()
    ann_copy = got("ann@acme.example")[-1]
    assert ann_copy["In-Reply-To"] == answer["Message-ID"]
    root = refs(ann_copy)[0]
    assert root == refs(auto_response)[0] == refs(jane_copy)[0]
    assert root not in (auto_response["Message-ID"], jane_copy["Message-ID"], ann_copy["Message-ID"])
    assert first["Message-ID"] in refs(auto_response)     # and the auto-response threads on Ann's own mail
