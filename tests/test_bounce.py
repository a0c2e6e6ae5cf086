"""Bounces and other automatic mail understood (issue 12): `connector parse --json` says
`automatic_kind` and `bounce`, read from our own fixtures in each MTA's format
(tests/fixtures/bounces, written by hand: Postfix, Exim, a German Exim, Exchange,
Gmail, qmail, a Sendmail delay warning, a success report, headerless auto-replies),
checked black-box through the command; and a bounce's triage item names who failed
and why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connector.mail import bounce
from connector.mail.rules import RuleError, load_rule_file
from test_triage_and_automatic import BOUNCE

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
CASES = [json.loads(line) for line in (FIXTURES / "manifest.jsonl").read_text().splitlines() if line.strip()]
CONNECTOR = [sys.executable, "-m", "connector"]


def parse_json(*paths):
    done = subprocess.run(CONNECTOR + ["parse", "--json", *map(str, paths)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def parsed():
    return {Path(info["file"]).name: info for info in parse_json(*(FIXTURES / c["file"] for c in CASES))}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_fixture_is_understood(parsed, case):
    info = parsed[case["file"]]
    want_kind = None if case["kind"] == "not_bounce" else case["kind"]
    assert info["automatic_kind"] == want_kind
    assert info["is_bounce"] == (case["kind"] in ("bounce", "delayed"))
    if not info["is_bounce"]:
        assert info["bounce"] is None
        return
    recipients = info["bounce"]["recipients"]
    assert [r["address"] for r in recipients] == case["recipients"]
    assert set(recipients[0]) == {"address", "status", "reply_code", "reason", "permanent", "hard"}
    if case["reason"]:
        assert recipients[0]["reason"] == case["reason"]
    if case["status"]:
        assert recipients[0]["status"] == case["status"]


def test_hard_is_sisimais_an_address_that_will_never_work(parsed):
    unknown = parsed["postfix-user-unknown.eml"]["bounce"]
    assert unknown["recipients"][0] | {"address": None} == {
        "address": None, "status": "5.1.1", "reply_code": "550", "reason": "userunknown", "permanent": True,
        "hard": True}
    assert unknown["original_message_id"] == "<ticket-42-out@example.com>"
    full = parsed["exim-mailbox-full.eml"]["bounce"]["recipients"][0]
    assert (full["reason"], full["permanent"], full["hard"]) == ("mailboxfull", True, False)   # 5xx, not dead
    relay = parsed["postfix-relay-denied.eml"]["bounce"]["recipients"][0]
    assert (relay["reason"], relay["hard"]) == ("norelaying", False)


def test_a_delay_warning_is_never_a_failure(parsed):
    info = parsed["sendmail-delay.eml"]
    assert info["automatic_kind"] == "delayed" and info["is_bounce"]      # is_bounce: bounce or delayed
    assert [r["permanent"] for r in info["bounce"]["recipients"]] == [False]


def test_a_success_report_is_not_a_bounce(parsed):
    info = parsed["postfix-success.eml"]
    assert (info["automatic_kind"], info["is_bounce"], info["bounce"]) == ("delivered", False, None)
    assert info["is_auto_reply"]                                          # still never answered


def test_headerless_auto_replies_are_auto_replies(parsed):
    for name in ("lotus-out-of-office.eml", "french-auto-reply.eml"):
        assert (parsed[name]["automatic_kind"], parsed[name]["is_auto_reply"]) == ("auto_reply", True), name


def test_a_customer_quoting_a_bounce_is_a_person(parsed):
    info = parsed["customer-mentions-bounce.eml"]
    assert (info["automatic_kind"], info["is_bounce"], info["is_auto_reply"]) == (None, False, False)


def test_parse_json_of_ordinary_mail_has_the_new_keys(tmp_path):
    path = tmp_path / "hello.eml"
    path.write_bytes(b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: Hello\r\n\r\nHi\r\n")
    info, = parse_json(path)
    assert (info["automatic_kind"], info["bounce"]) == (None, None)


def test_reason_rules_status_and_text():
    assert bounce.reason_for("5.2.2", "550 user unknown") == "mailboxfull"       # a code that says it all
    assert bounce.reason_for("5.1.1", "552 mailbox full") == "mailboxfull"       # text over a hinting code
    assert bounce.reason_for("5.1.1", "") == "userunknown"
    assert bounce.reason_for("5.1.10", "Recipient not found by SMTP address lookup") == "userunknown"
    assert bounce.reason_for("", "") == bounce.UNDEFINED


def test_a_broken_rule_file_names_file_rule_and_fix(tmp_path):
    (tmp_path / "bounces.yaml").write_text("version: x\nrules:\n  - {name: bad, kind: text, regex: '(', "
                                           "samples: {match: [a], no_match: [b]}}\n")
    with pytest.raises(RuleError, match=r"bounces.yaml: rule 'bad': bad regex"):
        load_rule_file("bounces.yaml", ("text",), folder=tmp_path)
    (tmp_path / "bounces.yaml").write_text("rules:\n  - {name: odd, kind: nope, regex: a}\n")
    with pytest.raises(RuleError, match=r"rule 'odd': kind 'nope' is not one of text"):
        load_rule_file("bounces.yaml", ("text",), folder=tmp_path)


def test_bounce_triage_item_names_recipient_and_reason(daemon, sink):
    daemon.send(BOUNCE, "", ["support@example.com"])
    daemon.wait_processed(1)
    items = daemon.inbound()
    assert [(i["reason"], i["detail"]) for i in items] == [("bounce", "gone@acme.example userunknown 5.1.1")]
    assert daemon.outbox() == []
