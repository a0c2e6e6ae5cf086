"""`[security] staff_authentication`: a forged staff From neither commands nor mails customers.

The parsing of Authentication-Results against the trusted authserv-ids, then the real
daemon over real SMTP: spoofed staff mail (no header, a header from an untrusted
authserv-id, dmarc=fail) lands in triage `unauthenticated_staff` and does nothing else; the
same mail with a trusted dmarc=pass, or an aligned dkim=pass, acts.
"""

import email
from email import policy

import pytest

from conftest import Instance, make_mail
from connector.mail import authentication
from connector.mail.parse import parse_message

TRUSTED = {"mx.example.com"}


def auth(*headers, sender="bob@example.com"):
    msg = make_mail(sender=sender, headers={})
    for value in headers:
        msg["Authentication-Results"] = value
    return authentication.from_domain_failure(parse_message(msg.as_bytes()), TRUSTED)


@pytest.mark.parametrize("headers, expected", [
    ((), authentication.NO_TRUSTED_HEADER),
    (("mx.attacker.example; dmarc=pass header.from=example.com",), authentication.NO_TRUSTED_HEADER),
    (("mx.example.com; dmarc=fail header.from=example.com",), authentication.DMARC_FAILED),
    (("mx.example.com; spf=pass smtp.mailfrom=bob@example.com",), authentication.NOT_ALIGNED),
    (("mx.example.com; dkim=pass header.d=attacker.example",), authentication.NOT_ALIGNED),
    (("mx.example.com; dkim=fail header.d=example.com",), authentication.NOT_ALIGNED),
    (("mx.example.com; dmarc=pass header.from=other.example",), authentication.NOT_ALIGNED),
    (("MX.Example.com; dmarc=pass (p=reject) header.from=example.com",), ""),
    (("mx.example.com; dkim=pass header.d=example.com header.s=s1",), ""),
    (("mx.example.com; dkim=pass header.d=mail.example.com",), ""),       # relaxed: same organization
    (("mx.example.com; dkim=pass header.d=com",), authentication.NOT_ALIGNED),   # a public suffix
    (("mx.example.com; dkim=pass header.d=notexample.com",), authentication.NOT_ALIGNED),
    (("mx.example.com; dmarc=pass header.from=example.com", "mx.example.com; dmarc=fail header.from=example.com"),
     authentication.DMARC_FAILED),                                        # a forged pass never outweighs a fail
    (("this is ; not = a header", "mx.example.com; dmarc=pass"), ""),     # unparseable: ignored
    (("mx.example.com.attacker.example; dmarc=pass",), authentication.NO_TRUSTED_HEADER),
    (("mx.example.com 1; dmarc=pass header.from=example.com",), ""),      # with a version
])
def test_from_domain_failure(headers, expected):
    assert auth(*headers) == expected


@pytest.mark.parametrize("signer, sender, ok", [
    ("example.com", "bob@eu.example.com", True),
    ("us.example.com", "bob@eu.example.com", True),          # relaxed alignment: one organization
    ("example.co.uk", "bob@shop.example.co.uk", True),
    ("other.co.uk", "bob@example.co.uk", False),              # a public suffix is no organization
    ("co.uk", "bob@example.co.uk", False),
    ("attacker.github.io", "bob@company.github.io", False),   # private suffixes count too
    ("mail.example.test", "bob@example.test", True),          # an unlisted TLD: the PSL's default rule
    ("test", "bob@example.test", False),
])
def test_dkim_alignment_by_organizational_domain(signer, sender, ok):
    expected = "" if ok else authentication.NOT_ALIGNED
    assert auth(f"mx.example.com; dkim=pass header.d={signer}", sender=sender) == expected


def parsed(raw):
    return email.message_from_bytes(raw, policy=policy.default)


def with_security(tmp_path, sink, **security):
    inst = Instance(tmp_path, sink.port)
    with inst.ini.open("a") as ini_file:
        ini_file.write("[security]\n" + "".join(f"{k} = {v}\n" for k, v in security.items()))
    return inst


@pytest.fixture
def guarded(tmp_path, sink):
    inst = with_security(tmp_path, sink, staff_authentication="authentication_results",
                         trusted_authserv_ids="mx.example.com")
    inst.start()
    yield inst
    inst.stop()


def new_ticket(daemon):
    daemon.send(make_mail(subject="Printer broken", sender="ann@acme.example"))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    return daemon.tickets()[0]["number"]


def bob_mail(daemon, sink, number, result):
    sink.messages.clear()
    count = len(daemon.spool_states())
    headers = {"Authentication-Results": result} if result else {}
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] Printer broken", sender="bob@example.com",
                          body="#status Waiting\nDear Ann, we refund you.\n", headers=headers))
    daemon.wait_processed(count + 1)
    daemon.wait_delivered()


@pytest.mark.parametrize("result", [
    None,
    "mx.attacker.example; dmarc=pass header.from=example.com; dkim=pass header.d=example.com",
    "mx.example.com; dmarc=fail (p=reject) header.from=example.com",
])
def test_spoofed_staff_mail_only_goes_to_triage(guarded, sink, result):
    number = new_ticket(guarded)
    bob_mail(guarded, sink, number, result)

    assert [(i["reason"], i["from"], i["ticket"]) for i in guarded.inbound()] == \
        [("unauthenticated_staff", "bob@example.com", number)]
    assert guarded.inbound()[0]["detail"] in (authentication.NO_TRUSTED_HEADER, authentication.DMARC_FAILED)
    show = guarded.ticket(number)
    assert show["status"] == "New"                      # no command ran
    assert len(show["messages"]) == 2                   # the request and its auto-response only
    assert sink.messages == []                          # not distributed, no command result
    assert [e["event"] for e in guarded.json("tickets", "history", str(number))] == \
        ["ticket_created", "request_by_email"]


@pytest.mark.parametrize("result", [
    "mx.example.com; spf=pass smtp.mailfrom=example.com; dmarc=pass (p=none) header.from=example.com",
    "mx.example.com; dkim=pass header.d=example.com header.s=sel",
])
def test_authenticated_staff_mail_acts(guarded, sink, result):
    number = new_ticket(guarded)
    bob_mail(guarded, sink, number, result)

    assert guarded.inbound() == []
    assert guarded.ticket(number)["status"] == "Waiting"
    to_ann = [parsed(raw) for _, rcpts, raw in sink.messages if "ann@acme.example" in rcpts]
    assert len(to_ann) == 1 and "we refund you" in to_ann[0].get_content()
    assert "Authentication-Results" not in to_ann[0]     # the original's headers stay behind
    answers = [parsed(raw) for _, rcpts, raw in sink.messages if rcpts == ["bob@example.com"]]
    assert len(answers) == 1 and answers[0]["Subject"].startswith("Done:")


def test_the_cli_needs_no_header(guarded, sink):
    number = new_ticket(guarded)
    sink.messages.clear()
    guarded.cli("tickets", "reply", str(number), "--as", "bob@example.com", input=b"Fixed.\n")
    guarded.wait_processed(2)
    guarded.wait_delivered()
    assert guarded.inbound() == []
    assert [m for m in sink.messages if "ann@acme.example" in m[1]]


def test_authentication_results_without_trusted_ids_is_a_config_error(tmp_path, sink):
    inst = with_security(tmp_path, sink, staff_authentication="authentication_results")
    result = inst.cli("check-config", check=False)
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1
    assert "[security] trusted_authserv_ids" in err and "hint:" in err and str(inst.ini) in err


def test_staff_authentication_value_is_checked(tmp_path, sink):
    inst = with_security(tmp_path, sink, staff_authentication="dkim")
    result = inst.cli("check-config", check=False)
    assert result.returncode == 1 and b"[security] staff_authentication" in result.stderr


def test_the_unauthenticated_staff_link_says_why_and_plans_nothing_for_the_sender(tmp_path):
    """The routing link's plan (tests/fixtures/steps/unauthenticated_staff.eml, a header from a
    stranger's authserv-id): a triage item whose detail says why; no command, no copy."""
    from steps import StepWorld, fired
    ctx = StepWorld(tmp_path).decide("unauthenticated_staff")
    plan = ctx.plan
    assert fired(ctx) == "unauthenticated_staff" and (plan.action, plan.reason) == ("triage", "unauthenticated_staff")
    assert plan.triage_detail == authentication.NO_TRUSTED_HEADER and plan.commands is None
    assert [o.kind for o in plan.outgoing if o.kind != "notice"] == [] and not ctx.sender.is_staff
