"""The routing table, one test per link: each link of `route.LINKS` has a fixture
(tests/fixtures/steps/<link>.eml) that makes exactly it fire, on a temp store
with a frozen clock. A link without a fixture fails, and so does a README
whose routing table is not the one the links make."""

from pathlib import Path

import pytest

from steps import FIXTURES, StepWorld, fired

from connector.pipeline import route
from connector.pipeline.context import FILED, INTERNAL, NEW_TICKET

README = Path(__file__).resolve().parent.parent / "README.md"
LINKS = {link.name: link for link in route.LINKS}


@pytest.fixture(scope="module")
def world(tmp_path_factory, backend):
    return StepWorld(tmp_path_factory.mktemp("route"))


@pytest.mark.parametrize("name", list(LINKS))
def test_each_link_fires_on_its_fixture(world, name):
    link = LINKS[name]
    ctx = world.decide(name)
    assert fired(ctx) == name
    plan = ctx.plan
    assert (plan.action, plan.link) == (link.action, name)
    if link.reason != route.AUTOMATIC_REASON:
        assert plan.reason == link.reason
    else:
        assert plan.reason == ctx.automatic.reason and ctx.automatic.is_automatic
    tried = [t["link"] for t in ctx.trace if t["step"] == "route"]
    assert tried == list(LINKS)[:list(LINKS).index(name) + 1]   # in order, up to the one that fired
    public = None if plan.action not in FILED else plan.action != INTERNAL and "keyword" not in name
    assert ctx.summary()["public"] is public


def test_every_link_has_a_fixture_and_every_fixture_a_link():
    assert sorted(p.stem for p in FIXTURES.glob("*.eml")) == sorted(LINKS)


def test_readme_routing_table_is_the_links():
    assert route.table() in README.read_text(encoding="utf-8")


def test_new_ticket_is_planned_with_the_number_it_gets(world):
    ctx = world.decide("new_ticket")
    assert ctx.plan.ticket_number == 2 and ctx.plan.new_ticket["subject"] == "Scanner jam"
    assert ctx.plan.new_ticket["manager"] == "jane@example.com"


def test_a_customer_keyword_mail_is_internal_and_back_in_the_inbox(world):
    plan = world.decide("customer_keyword").plan
    assert (plan.public, plan.internal, plan.set_inbox) == (False, True, True)
    assert plan.ticket_changes == {"in_inbox": True}


def test_an_automatic_follow_up_is_filed_not_distributed(world):
    raw = (FIXTURES / "customer_follow_up.eml").read_bytes().replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")
    ctx = world.decide("customer_follow_up", raw)
    assert fired(ctx) == "customer_follow_up"
    plan = ctx.plan
    assert plan.action not in (NEW_TICKET,) and plan.distribute is False and plan.outgoing == []
    assert plan.reason.startswith("customer,automatic:") and plan.set_inbox is False


def test_a_bounce_and_a_duplicate_are_decided_before_routing(world):
    bounce = (b"From: MAILER-DAEMON@mx.example\r\nTo: support@example.com\r\nSubject: Undelivered Mail Returned "
              b"to Sender\r\nAuto-Submitted: auto-replied\r\nContent-Type: multipart/report; report-type=delivery-status;"
              b" boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: "
              b"message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; "
              b"x@acme.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--\r\n")
    ctx = world.decide("bounce", bounce)
    assert (ctx.plan.action, ctx.plan.link) == ("triage", "bounce") and fired(ctx) is None
    world.file("customer_follow_up")
    again = world.decide("customer_follow_up")
    assert (again.plan.action, again.plan.link) == ("duplicate", "duplicate") and fired(again) is None


@pytest.mark.sqlite_only("on PostgreSQL the filing claims keep arrival order: a second process cannot file a later "
                         "entry before this one (tests/test_postgres_claims.py races workers there)")
def test_a_new_ticket_planned_with_a_number_taken_meanwhile_is_decided_again(tmp_path):
    """Another process files a ticket between the decision and the filing: the plan's
    number is stale, so the message is decided again under the filing lock and the
    ticket, the copies' subjects and the Message-IDs all carry the number it really gets."""
    from connector.pipeline.apply import plan_current
    from connector.pipeline.runner import Runner
    from connector.store.spool import store_message
    from steps import FIXTURES, FROZEN
    world = StepWorld(tmp_path)
    other = Runner(world.services)

    class Raced(Runner):
        raced = False

        def _decide(self, spool, previous=None):
            ctx = super()._decide(spool, previous)
            if not self.raced:
                self.raced = True
                assert ctx.plan.ticket_number == 2 and plan_current(ctx)
                other.process(store_message((FIXTURES / "contact_only.eml").read_bytes(),
                                            rcpt_to=["support@example.com"], intake="test", clock=lambda: FROZEN))
                assert not plan_current(ctx)
            return ctx

    raced = Raced(world.services)
    ctx = raced.process(store_message((FIXTURES / "new_ticket.eml").read_bytes(), rcpt_to=["support@example.com"],
                                      intake="test", clock=lambda: FROZEN))
    assert raced.raced and ctx.plan.ticket_number == 3
    db = world.instance.connect()
    assert db.execute("SELECT number, subject FROM ticket ORDER BY number").fetchall() == [
        (1, "Printer broken"), (2, "Newsletter signup"), (3, "Scanner jam")]
    rows = db.execute("SELECT o.subject, o.message_id FROM outbox o JOIN ticket t ON t.id = o.ticket_id "
                      "WHERE t.number = 3").fetchall()
    assert len(rows) == 2 and all(s == "[Ticket #3] Scanner jam" for s, _ in rows)
    assert {world.services.signer.verify(m) for _, m in rows} == {3}
