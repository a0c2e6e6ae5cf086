"""The per-message time budget: a hostile mail is filed with what is known
(full text, reply text marked not extracted) and the mail behind it is not
held up. Through the real daemon, with a reply rule that backtracks for
hours on the hostile body, and on the budget's parts directly."""

import re

import pytest

from conftest import Instance, make_mail
from connector import timebudget
from connector.mail.html import html_to_text

BACKTRACKING_RULE = """\
rules:
  - name: runaway_footer
    kind: signature
    doc: A badly written local rule; nested quantifiers backtrack exponentially.
    regex: '^(?:a+)+$'
    samples:
      match: ["aaaa"]
      no_match: ["aaab"]
"""
HOSTILE_BODY = "Please help.\n\n" + "a" * 48 + "!\n"


def test_a_runaway_rule_is_abandoned_and_the_next_mail_is_filed(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__message_time_budget="1")
    inst.path.joinpath("rules").mkdir()
    inst.path.joinpath("rules", "quotes.local.yaml").write_text(BACKTRACKING_RULE)
    inst.start()
    try:
        inst.send(make_mail(subject="Hostile", body=HOSTILE_BODY))
        inst.send(make_mail(subject="Normal", body="My printer is on fire.\n\nOn Monday Bob wrote:\n> old\n",
                            sender="bea@acme.example"))
        states = inst.wait_processed(2, timeout=30)
        assert [row[1] for row in states] == ["done", "done"]
        by_subject = {t["subject"]: inst.ticket(t["number"]) for t in inst.tickets()}
        hostile = by_subject["Hostile"]["messages"][0]
        assert hostile["rules_version"] == "not-extracted"
        assert "a" * 48 + "!" in hostile["reply_text"]          # the full text is kept as the reply text
        normal = by_subject["Normal"]["messages"][0]
        assert normal["rules_version"].startswith("quotes-")
        assert normal["reply_text"] == "My printer is on fire."
        assert "reply.not_extracted" in inst.log.read_text()
    finally:
        inst.stop()


def test_interruptible_abandons_a_backtracking_search():
    with timebudget.limit(0.2), pytest.raises(timebudget.OverBudget):
        with timebudget.interruptible():
            re.search(r"^(?:a+)+$", "a" * 27 + "!", re.M)     # about 2**27 steps unless abandoned


def test_a_spent_budget_refuses_to_start_a_pure_block_and_nothing_runs_without_one():
    with timebudget.limit(1e-9), pytest.raises(timebudget.OverBudget):
        with timebudget.interruptible():
            pass
    with timebudget.interruptible():        # no budget: nothing is armed, nothing raised
        assert not timebudget.expired()


def test_html_past_the_deadline_keeps_the_full_text_without_tags():
    html = "<html><body><p>Dear support,</p>" + "<div>line &amp; more</div>" * 20_000 + "<p>Regards</p>"
    with timebudget.limit(1e-9):
        text = html_to_text(html + " ")
    assert text.startswith("Dear support,") and text.endswith("Regards")
    assert "line & more" in text and "<div>" not in text
    assert html_to_text(html) != text           # a cut conversion is not remembered for later messages


def test_a_hostile_html_mail_does_not_hold_up_the_mail_behind_it(daemon):
    # 60 KB of unclosed '<a ': 74 s of filing with html.parser, and the next mail waited for it
    hostile = make_mail(subject="Tags", body="ignored")
    hostile.set_content("<p>Hello</p>" + "<a " * 20_000, subtype="html")
    daemon.send(hostile)
    daemon.send(make_mail(subject="Next", sender="bea@acme.example"))
    states = daemon.wait_processed(2, timeout=20)
    assert [row[1] for row in states] == ["done", "done"]
    texts = {t["subject"]: daemon.ticket(t["number"])["messages"][0]["text"] for t in daemon.tickets()}
    assert texts["Tags"] == "Hello"
