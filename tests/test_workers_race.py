"""Several filing processes over one store (issue 14, `[worker] processes`).

Each worker decides without the write lock and re-checks under it what other
mail may have changed (`apply.plan_current`). First each check on its own,
in one process: a decision is made, a conflicting mail is filed, and the
decision must be found stale. Then two real processes, each a Runner with its
partition, race over one real SQLite store on the same conflicting mail, and
the outcome is asserted: every entry filed once, one ticket per thread,
ticket numbers without gaps or repeats, budgets not overspent, no shunts."""

import subprocess
import sys
import textwrap

from conftest import Instance, free_port, make_mail

from connector.pipeline.context import DUPLICATE, FOLLOW_UP, NEW_TICKET


def world(path, **ini):
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.settings import load_settings
    inst = Instance(path, free_port(), **ini)
    services = open_services(load_settings(inst.ini), synchronous="off")
    return inst, services, Runner(services)


def spool(raw, rcpt_to=("support@example.com",)):
    from connector.store.spool import store_message
    return store_message(raw, rcpt_to=list(rcpt_to), intake="test")


def decided(runner, spool_id):
    from connector.store.queries import spool_entry
    return runner._decide(spool_entry(spool_id))


def rows(inst, sql, *params):
    with inst.connect() as conn:
        return conn.execute(sql, params).fetchall()


def test_a_copy_filed_meanwhile_is_a_duplicate_not_a_second_follow_up(tmp_path):
    from connector.pipeline.apply import plan_current
    inst, _, runner = world(tmp_path)
    runner.process(spool(make_mail(subject="Printer", message_id="<m0@acme.example>").as_bytes()))
    reply = make_mail(subject="Re: [Ticket #1] Printer", message_id="<r@acme.example>").as_bytes()
    first, copy = spool(reply), spool(reply)   # two copies (one per recipient, or a lost 250)
    stale = decided(runner, copy)               # decided while the other copy was not filed yet
    assert stale.plan.action == FOLLOW_UP
    runner.process(first)                       # ... which another process files meanwhile
    assert not plan_current(stale)
    assert runner.process(copy).plan.action == DUPLICATE
    assert rows(inst, 'SELECT COUNT(*) FROM "message" WHERE "message_id" = ?', "<r@acme.example>") == [(1,)]


def test_a_parent_filed_meanwhile_as_a_follow_up_takes_its_reply_along(tmp_path):
    from connector.pipeline.apply import plan_current
    inst, _, runner = world(tmp_path)
    runner.process(spool(make_mail(subject="Printer", message_id="<m0@acme.example>").as_bytes()))
    parent = spool(make_mail(subject="More about the printer", message_id="<p@acme.example>",
                             headers={"In-Reply-To": "<m0@acme.example>"}).as_bytes())
    reply = spool(make_mail(subject="Re: More about the printer", sender="bert@beta.example",
                            message_id="<r@beta.example>", headers={"In-Reply-To": "<p@acme.example>"}).as_bytes())
    stale = decided(runner, reply)
    assert stale.plan.action == NEW_TICKET and stale.plan.ticket_number == 2   # its parent is not filed yet
    assert runner.process(parent).plan.ticket_number == 1                      # the parent joins ticket 1
    assert not plan_current(stale)             # the next number is still 2: only the thread says it
    assert runner.process(reply).plan.ticket_number == 1
    assert rows(inst, 'SELECT COUNT(*) FROM "ticket"') == [(1,)]


def test_the_last_notice_of_the_hour_is_sent_once(tmp_path):
    from connector.pipeline.apply import plan_current
    inst, _, runner = world(tmp_path, connector__notices_per_hour="2", connector__triage_notice_to="bob@example.com")
    ids = [spool(make_mail(subject=f"Offer {n}", sender=f"s{n}@stranger.example",
                           to="notifications@example.com").as_bytes(), ["notifications@example.com"])
           for n in range(3)]
    runner.process(ids[0])
    stale = decided(runner, ids[2])
    assert stale.plan.outgoing and not stale.plan.suppressed  # one notice of two left when it was decided
    runner.process(ids[1])                           # another process spends it (no ticket made: triage)
    assert not plan_current(stale)
    assert runner.process(ids[2]).plan.suppressed[0]["reason"] == "address_limit"
    assert rows(inst, 'SELECT COUNT(*) FROM "outbox" WHERE "kind" = ?', "notice") == [(2,)]


def test_a_new_ticket_waits_for_earlier_mail_in_the_other_share(tmp_path):
    from connector.pipeline.runner import LATER, Runner
    inst, services, _ = world(tmp_path)
    odd, even = Runner(services, partition=(2, 2)), Runner(services, partition=(1, 2))
    parent = spool(make_mail(subject="Printer", message_id="<p@acme.example>").as_bytes())
    reply = spool(make_mail(subject="Re: Printer", headers={"In-Reply-To": "<p@acme.example>"}).as_bytes())
    assert (parent % 2, reply % 2) == (1, 0)
    assert even.process(reply) is LATER      # the parent, spooled before it, is not filed yet
    assert rows(inst, 'SELECT COUNT(*) FROM "processing"') == [(0,)]
    assert odd.process(parent).plan.action == NEW_TICKET
    assert even.process(reply).plan.action == FOLLOW_UP
    assert rows(inst, 'SELECT COUNT(DISTINCT "ticket_id") FROM "message"') == [(1,)]


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.settings import load_settings
    from connector.store.queries import unprocessed_spool_ids
    ini, index, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    runner = Runner(open_services(load_settings(ini), synchronous="normal"), partition=(index, 2))
    while not go.exists():
        time.sleep(0.001)
    while unprocessed_spool_ids(0, 1, (index, 2)):
        runner.drain()
""")


def test_two_filing_processes_racing_on_conflicting_mail(tmp_path):
    from connector.store.db import load_hmac_key
    inst = Instance(tmp_path, free_port(), connector__auto_responses_per_hour="3")
    inst.open_store()
    load_hmac_key(inst.path / "var")   # made before the workers start, as the daemon does
    threads, copies = [], []
    for n in range(12):
        spool(make_mail(subject=f"New {n}", sender=f"c{n}@acme.example").as_bytes())
        raw = make_mail(subject=f"Copied {n}", sender="ann@acme.example", message_id=f"<copy{n}@x>").as_bytes()
        spool(raw), spool(raw)                                          # one in each share
        copies.append(f"<copy{n}@x>")
        spool(make_mail(subject=f"Thread {n}", message_id=f"<t{n}@x>").as_bytes())
        spool(make_mail(subject=f"Re: Thread {n}", message_id=f"<t{n}r@x>",
                        headers={"In-Reply-To": f"<t{n}@x>", "References": f"<t{n}@x>"}).as_bytes())
        threads.append((f"<t{n}@x>", f"<t{n}r@x>"))
        spool(make_mail(subject=f"Order {n}", sender="robot@shop.example").as_bytes())   # 3 answers an hour
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(inst.ini), str(index), str(go)],
                               stderr=subprocess.PIPE, text=True) for index in (1, 2)]
    go.touch()
    for racer in racers:
        assert racer.wait(timeout=120) == 0, racer.stderr.read()[-3000:]
    spooled = 12 * 6
    processing = rows(inst, 'SELECT "state", "action", "reason" FROM "processing"')
    assert len(processing) == spooled and {state for state, _, _ in processing} == {"done"}, processing
    assert not [r for r in processing if "locked" in (r[2] or "")]
    numbers = [n for (n,) in rows(inst, 'SELECT "number" FROM "ticket" ORDER BY "number"')]
    assert numbers == list(range(1, len(numbers) + 1))                 # no number twice, none skipped
    assert len(numbers) == 12 + 12 + 12 + 12                           # new, copied, thread, order
    opened_by = [spool_id for (spool_id,) in rows(
        inst, 'SELECT MIN(m."spool_id") FROM "ticket" t JOIN "message" m ON m."ticket_id" = t."id" '
              'GROUP BY t."number" ORDER BY t."number"')]
    assert opened_by == sorted(opened_by)                              # numbered in arrival order
    for message_id in copies:                                          # each pair filed once: the first
        assert rows(inst, 'SELECT COUNT(*) FROM "message" WHERE "message_id" = ?', message_id) == [(1,)]
    actions = [action for _, action, _ in sorted(
        rows(inst, 'SELECT p."spool_id", p."action", p."reason" FROM "processing" p'))]
    assert actions[1:3] == ["new_ticket", "duplicate"]
    for parent, reply in threads:                                      # one ticket per thread
        tickets = rows(inst, 'SELECT "ticket_id" FROM "message" WHERE "message_id" IN (?, ?)', parent, reply)
        assert len(tickets) == 2 and len(set(tickets)) == 1, (parent, tickets)
    assert rows(inst, 'SELECT COUNT(*) FROM "outbox" WHERE "kind" = ? AND "rcpt" LIKE ?',
                "auto_response", "%robot@shop.example%") == [(3,)]
    assert rows(inst, 'SELECT COUNT(*) FROM "contact" WHERE "email" = ?', "robot@shop.example") == [(1,)]
