"""Who gets what (seed 004), decided by `distribute` and `notify` and planned whole:
recipients, envelope, From, subject (tag, internal keyword), the auto-response's
text. From .eml fixtures on a temp store with a frozen clock; nothing is sent."""

import pytest

from steps import StepWorld

from connector.outbound.compose import REPLY_ABOVE

PUBLIC, NOTIFICATIONS = "support@example.com", "notifications@example.com"


@pytest.fixture(scope="module")
def world(tmp_path_factory, backend):
    return StepWorld(tmp_path_factory.mktemp("distribute"), connector__triage_notice_to="triage@example.com")


def outgoing(ctx):
    return {out.kind: out for out in ctx.plan.outgoing}


def test_new_ticket_manager_in_to_others_in_cc_and_an_auto_response(world):
    ctx = world.decide("new_ticket")
    mails = outgoing(ctx)
    copy, answer = mails["distribution"], mails["auto_response"]
    assert (copy.rcpt, copy.to, copy.cc, copy.bcc) == (["jane@example.com", "bob@example.com"],
                                                       ["jane@example.com"], ["bob@example.com"], [])
    assert (copy.mail_from, copy.from_address, copy.from_name) == (PUBLIC, PUBLIC, "Ann Customer")
    assert copy.subject == "[Ticket #2] Scanner jam" and copy.original_from == "ann@acme.example"
    assert (answer.rcpt, answer.to, answer.from_name) == (["ann@acme.example"], ["ann@acme.example"], "Support")
    assert answer.subject == "[Ticket #2] Scanner jam" and answer.template == "auto_response.txt.j2"
    assert answer.body.splitlines()[0] == REPLY_ABOVE
    assert ctx.plan.external_recipients == [("ann@acme.example", "to")]
    assert ctx.plan.employee_recipients == ["jane@example.com", "bob@example.com"]
    assert world.services.signer.verify(answer.message_id) == 2


def test_customer_follow_up_goes_to_the_employees_only(world):
    mails = outgoing(world.decide("customer_follow_up"))
    assert list(mails) == ["distribution"]
    assert (mails["distribution"].to, mails["distribution"].cc) == (["jane@example.com"], ["bob@example.com"])


def test_employee_follow_up_to_the_customer_others_in_bcc_never_the_sender(world):
    copy = outgoing(world.decide("employee_follow_up"))["distribution"]
    assert (copy.to, copy.cc, copy.bcc) == (["ann@acme.example"], [], ["bob@example.com"])
    assert copy.from_name == "Jane Doe" and copy.original_from == ""   # staff mail: the employee's address hidden
    assert copy.subject == "Re: [Ticket #1] Printer broken"


def test_staff_mail_with_support_in_cc_only_is_planned_with_the_keyword(world):
    """The reviewer's case: the dry run showed `[Ticket #1] ...`, the outbox had `*123* [Ticket #1] ...`."""
    ctx = world.decide("employee_cc_only")
    copy = outgoing(ctx)["distribution"]
    assert ctx.plan.action == "internal" and (copy.to, copy.cc, copy.bcc) == ([], [], ["bob@example.com"])
    assert copy.subject == "*123* Re: [Ticket #1] Printer broken"
    assert ctx.summary()["outgoing"][0]["subject"] == copy.subject


def test_customer_keyword_keeps_the_keyword_once(world):
    copy = outgoing(world.decide("customer_keyword"))["distribution"]
    assert copy.subject == "*123* [Ticket #1] Printer broken" and copy.to == ["jane@example.com"]


def test_nothing_is_planned_for_triage_but_the_notice(world):
    ctx = world.decide("unknown_sender")
    notice = outgoing(ctx)["notice"]
    assert len(ctx.plan.outgoing) == 1
    assert (notice.rcpt, notice.mail_from, notice.from_address) == (["triage@example.com"], NOTIFICATIONS,
                                                                     NOTIFICATIONS)
    assert notice.subject == "New inbound message (unknown_sender): Re: [Ticket #1] Printer broken"
    assert notice.template == "inbound_notice.txt.j2" and "unknown_sender" in notice.body
    assert world.services.signer.is_notice(notice.message_id)


def test_no_auto_response_when_the_sender_asked_for_none(world):
    raw = (b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: Sent by a rule\r\n"
           b"X-Auto-Response-Suppress: All\r\nMessage-ID: <rule@acme.example>\r\n\r\nhi\r\n")
    ctx = world.decide("new_ticket", raw)
    assert [o.kind for o in ctx.plan.outgoing] == ["distribution"]
    assert [s["reason"] for s in ctx.plan.suppressed] == ["x_auto_response_suppress"]


def test_trace_has_one_entry_per_step_and_one_per_link_tried(world):
    trace = world.decide("customer_follow_up").trace
    steps = [t["step"] for t in trace]
    assert steps[:4] == ["parse", "classify", "sender", "reference"] and steps[-5:] == ["extract", "distribute",
                                                                                         "notify", "events", "blocks"]
    assert {"step": "reference", "link": "subject", "result": "#1"} in trace
    assert trace[-4] == {"step": "distribute", "link": "distribute", "result": "1 outgoing"}


@pytest.mark.parametrize("name, expected", [
    ('Smith, John "JJ"', 'Smith, John "JJ"'),     # a quote at the end is the name's own (outside test)
    ("'Jane Doe'", "Jane Doe"),
    ('"Jane Doe"', "Jane Doe"),
    ('"JJ" Smith', '"JJ" Smith'),
    ("jane@acme.example", ""),
    ("'", "'"),
])
def test_own_name_drops_only_a_pair_of_quotes_around_the_whole_name(name, expected):
    from connector.pipeline.distribute import own_name
    assert own_name(name, "jane@acme.example") == expected
