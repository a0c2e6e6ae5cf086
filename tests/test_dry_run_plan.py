"""`replay --dry-run` shows exactly what is sent: every scenario of the suite's
fixtures (tests/fixtures/steps/ and tests/fixtures/mail/), replayed through the
CLI first with `--dry-run --json`, then for real; the mails the dry run planned
must be the outbox rows the real run wrote (envelope, To/Cc/Bcc, subject, From),
auto-emails of the events the mail writes included (config/auto_emails.yaml), and
the decision the same; its log line names the routing link that fired. Only the
Message-IDs differ (fresh per run)."""

import email
import json
from email import policy
from pathlib import Path

import pytest

from conftest import make_mail

FIXTURES = Path(__file__).parent / "fixtures"
NOTIFICATIONS = "notifications@example.com"
AUTO_EMAILS_YAML = """\
default_sender: {address: helpdesk@example.com, name: Helpdesk}
dispatchers: [dispatch@example.com]
auto_emails:
  - {name: ack, event: ticket_created, to: [requester], template: ticket_created.txt.j2}
  - {name: new, event: request_by_email, to: [dispatchers, manager], template: ticket_created.txt.j2}
  - {name: customer, event: customer_replied, to: [manager, dispatchers], template: ticket_forwarded.txt.j2}
  - {name: answered, event: employee_replied, to: [requester, external], template: ticket_forwarded.txt.j2}
"""
EVENTS = {"ticket.created", "message.filed", "message.triaged", "message.duplicate", "message.ignored",
          "contact.created"}   # the decision's log line: one per message


def scenarios():
    """(name, file, envelope recipient) in the order they are replayed; the first makes ticket #1."""
    steps = sorted((FIXTURES / "steps").glob("*.eml"))
    mails = sorted((FIXTURES / "mail").glob("*.eml"))
    return [(p.stem, p, NOTIFICATIONS if p.stem.startswith("notifications") else "support@example.com")
            for p in steps + mails]


def outbox_rows(instance, spool_id):
    with instance.connect() as conn:
        rows = conn.execute('SELECT kind, mail_from, rcpt, "to", cc, bcc, subject, b.raw FROM outbox o '
                            'JOIN outbox_body b ON b.outbox_id = o.id WHERE cause_id = ? ORDER BY o.id',
                            (spool_id,)).fetchall()
    mails = []
    for kind, mail_from, rcpt, to, cc, bcc, subject, raw in rows:
        sender = email.message_from_bytes(raw, policy=policy.default)["From"].addresses[0]
        mails.append({"kind": kind, "mail_from": mail_from, "rcpt": json.loads(rcpt), "to": json.loads(to),
                      "cc": json.loads(cc), "bcc": json.loads(bcc), "subject": subject,
                      "from_name": sender.display_name, "from_address": sender.addr_spec})
    return mails


def planned(out):
    keys = ("kind", "mail_from", "rcpt", "to", "cc", "bcc", "subject", "from_name", "from_address")
    return {key: out.get(key) for key in keys}


@pytest.fixture
def replayed(tmp_path, sink):
    from conftest import Instance
    # Replayed seconds apart, every reply would look like a robot's quick answer (the loop
    # budget would hold back most copies): the loop guard is timed off, the rest as shipped.
    instance = Instance(tmp_path, sink.port, connector__triage_notice_to="triage@example.com",
                        connector__loop_reply_seconds="0")
    instance.path.joinpath("config", "auto_emails.yaml").write_text(AUTO_EMAILS_YAML)
    first = tmp_path / "first.eml"
    first.write_bytes(make_mail(subject="Printer broken", sender="ann@acme.example", name="Ann Customer").as_bytes())
    return instance, [("first", first, "support@example.com")] + scenarios()


def test_the_dry_run_plans_the_outbox_rows_of_every_scenario(replayed):
    instance, cases = replayed
    checked = set()
    for name, path, rcpt in cases:
        dry = json.loads(instance.cli("replay", "--dry-run", "--json", "--recipient", rcpt, str(path)).stdout)
        run = instance.cli("replay", "--json", "--recipient", rcpt, str(path))
        real = json.loads(run.stdout)
        decision = [e for e in map(json.loads, run.stderr.decode().splitlines()) if e.get("event") in EVENTS]
        assert [(e["action"], e["link"]) for e in decision] == [(real["action"], real["link"])], name
        assert [dry[k] for k in ("action", "ticket", "reason")] == [real[k] for k in ("action", "ticket", "reason")]
        assert [planned(o) for o in dry["outgoing"]] == outbox_rows(instance, real["spool_id"]), name
        assert [planned(o) for o in dry["outgoing"]] == [planned(o) for o in real["outgoing"]], name
        checked |= {(o["kind"], name) for o in dry["outgoing"]}
        assert dry.get("link") == real.get("link") and dry.get("trace") and dry["trace"] == real["trace"], name
    assert {kind for kind, _ in checked} == {"distribution", "auto_response", "notice", "auto_email"}  # every kind
    assert {name for kind, name in checked if kind == "distribution"} >= {
        "first", "new_ticket", "customer_follow_up", "customer_keyword", "employee_follow_up", "employee_cc_only",
        "employee_keyword"}
    assert {name for kind, name in checked if kind == "auto_email"} >= {
        "first", "new_ticket", "customer_follow_up", "employee_follow_up"}
