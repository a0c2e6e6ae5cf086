"""config/inboxes.yaml checked by check-config; a scanner rule's assign_inbox (the hint, and
over a real Dovecot); a store from before the inbox tables upgrades and takes entries."""

import sqlite3

import pytest
import yaml

from conftest import Instance, make_mail, wait_for
from connector.mail.parse import parse_message
from connector.scanners.config import scanners_of
from connector.scanners.rules import decide
from connector.settings import load_settings
from dovecot import PASSWORD, dovecot_fixture, scanner
from test_inbox import INBOXES_YAML, entries, write_inboxes

dovecot = pytest.fixture(scope="module")(dovecot_fixture)


@pytest.fixture
def inst(tmp_path):
    return Instance(tmp_path, 2500)


def test_good_file_loads_with_canonical_names_and_default_due_types(inst):
    write_inboxes(inst)
    result = inst.cli("check-config")
    assert b"inboxes: " in result.stdout and b"3 inboxes (default Sales)" in result.stdout
    from connector.settings import inboxes
    config = inboxes.of(load_settings(inst.ini))
    assert config.get("finance").members == ("jane@example.com",)   # jane.doe@home.example is Jane
    assert config.due_types == ("response", "resolution", "follow_up")
    assert config.for_address("TECH+x@example.com").name == "Technical"
    assert config.for_address("support@example.com") is None


@pytest.mark.parametrize("text, key, problem", [
    (INBOXES_YAML.replace("default_inbox: Sales", "default_inbox: Legal"), "default_inbox",
     "'Legal' is not one of the inboxes"),
    (INBOXES_YAML.replace("[amy@example.com]", "[nobody@example.com]"), "inboxes[Sales].members",
     "'nobody@example.com' is not an active staff email"),
    (INBOXES_YAML.replace("[amy@example.com]", "[ina@example.com]"), "inboxes[Sales].members",
     "'ina@example.com' is not an active staff email"),
    (INBOXES_YAML.replace("name: Sales", "name: technical"), "inboxes[technical].name",
     "'technical' is already the name of another inbox"),
    (INBOXES_YAML.replace("tech@example.com", "tech@@example"), "inboxes[Technical].address",
     "'tech@@example' is not an email address"),
    (INBOXES_YAML.replace("tech@example.com", "support@example.com"), "inboxes[Technical].address",
     "is the connector's public_address"),
    (INBOXES_YAML.replace("tech@example.com", "notifications+x@example.com"), "inboxes[Technical].address",
     "+tag form of the notifications address"),
    (INBOXES_YAML.replace("tech@example.com", "bob@example.com"), "inboxes[Technical].address",
     "is the address of an employee"),
    (INBOXES_YAML.replace("billing@example.com", "tech@example.com"), "inboxes[Finance].address",
     "already the address of the inbox Technical"),
    (INBOXES_YAML.replace("    address: tech", "    colour: red\n    address: tech"), "inboxes[0].colour",
     "unknown key"),
    (INBOXES_YAML.replace("{address: billing@example.com, name: Finance Team}", "{address: nope}"),
     "inboxes[Finance].sender.address", "'nope' is not an email address"),
    (INBOXES_YAML + "due_types: [response, response]\n", "due_types", "'response' is listed twice"),
    (INBOXES_YAML + "due_types: [next week]\n", "due_types", "'next week' is not a single word"),
    (INBOXES_YAML + "inbox_default: Sales\n", "inbox_default", "unknown key"),
    ("inboxes:\n  - members: [bob@example.com]\n", "inboxes[0].name", "is missing"),
    ("inboxes:\n  - name: Empty\n", "inboxes[Empty].members", "must be a non-empty list"),
    ("inboxes: [\n", "line 2", "is not valid YAML"),
])
def test_each_problem_is_one_line_naming_file_key_what_and_a_hint(inst, text, key, problem):
    write_inboxes(inst, text)
    result = inst.cli("check-config", check=False)
    assert result.returncode == 1
    [line] = result.stderr.decode().strip().splitlines()
    path = inst.path / "config" / "inboxes.yaml"
    assert f"{path}: {key}: " in line and problem in line and "hint:" in line, line


def scanners_yaml(rules, **keys):
    entry = {"name": "support", "host": "127.0.0.1", "port": 143, "security": "none", "username": "u",
             "password_file": "secrets/imap.pass", "rules": rules, **keys}
    return yaml.safe_dump({"scanners": [entry]})


def test_assign_inbox_needs_a_known_inbox_and_a_ticket_action(inst):
    write_inboxes(inst)
    (inst.path / "secrets").mkdir()
    (inst.path / "secrets" / "imap.pass").write_text("x\n")
    path = inst.path / "config" / "scanners.yaml"
    path.write_text(scanners_yaml([{"name": "r", "actions": ["create_or_update_ticket", {"assign_inbox": "Legal"}]}]))
    line = inst.cli("check-config", check=False).stderr.decode()
    assert "scanners[support].rules[r].actions[1].assign_inbox: 'Legal' is not an inbox" in line
    assert "Technical, Finance, Sales" in line
    path.write_text(scanners_yaml([{"name": "r", "actions": ["mark_read", {"assign_inbox": "Finance"}]}]))
    line = inst.cli("check-config", check=False).stderr.decode()
    assert "scanners[support].rules[r].actions: assign_inbox without create_or_update_ticket" in line

    path.write_text(scanners_yaml([{"name": "r", "actions": ["create_or_update_ticket",
                                                             {"assign_inbox": "finance"}]}]))
    [config] = scanners_of(load_settings(inst.ini))
    raw = make_mail().as_bytes()
    decision = decide(config, "INBOX", raw, parse_message(raw))
    assert decision.hints["assign_inbox"] == "Finance"
    assert any("assign_inbox" in line for line in decision.described)


def test_a_scanner_rules_assign_inbox_places_the_new_ticket_over_real_imap(tmp_path, sink, dovecot):
    user = dovecot.new_user()
    inst = Instance(tmp_path, sink.port)
    write_inboxes(inst)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "imap.pass").write_text(PASSWORD + "\n")
    rule = {"name": "invoices", "conditions": {"field": "subject", "op": "contains", "value": "invoice"},
            "actions": ["create_or_update_ticket", {"assign_inbox": "Finance"}]}
    (tmp_path / "config" / "scanners.yaml").write_text(
        yaml.safe_dump({"scanners": [scanner(dovecot, user, interval=0.5, rules=[rule])]}))
    dovecot.append(user, make_mail(subject="Your invoice 42", to="support@example.com").as_bytes())
    dovecot.append(user, make_mail(subject="Something else", to="support@example.com").as_bytes())
    inst.start()
    try:
        inst.wait_processed(2, timeout=30)
        placed = {e["subject"]: e["inbox"] for e in entries(inst)}
        assert placed == {"Your invoice 42": "Finance", "Something else": "Sales"}   # the other: default_inbox
        invoice = next(e for e in entries(inst) if e["inbox"] == "Finance")
        [added] = [e for e in inst.json("tickets", "history", str(invoice["ticket"])) if e["event"] == "inbox_added"]
        assert (added["via"], added["detail"]["placed_by"]) == ("scanner", "scanner_rule")
    finally:
        inst.stop()


def test_the_address_it_was_sent_to_wins_over_the_scanner_rule(tmp_path, sink):
    """The hint path without IMAP: a spooled message with the hint a rule leaves."""
    inst = Instance(tmp_path, sink.port)
    write_inboxes(inst)
    from connector.store.spool import store_message
    inst.open_store()
    for to, subject in (("tech@example.com", "to tech"), ("support@example.com", "to support")):
        store_message(make_mail(subject=subject, to=to).as_bytes(), rcpt_to=[], intake="imap:support",
                      hints={"scanner": "support", "rule": "r", "ticket_fields": {}, "assign_inbox": "Finance"})
    inst.start()
    try:
        inst.wait_processed(2)
        assert {e["subject"]: e["inbox"] for e in entries(inst)} == {"to tech": "Technical", "to support": "Finance"}
    finally:
        inst.stop()


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_from_before_the_inbox_tables_upgrades_and_takes_entries(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    inst.start()
    inst.send(make_mail(subject="Old ticket"))
    inst.wait_processed(1)
    inst.stop()
    db = inst.path / "var" / "connector.db"
    with sqlite3.connect(db) as conn:   # as a store written before migration 0005
        conn.execute('DROP TABLE "inbox_entry"')
        conn.execute('DROP TABLE "ticket_event"')
        conn.execute('DELETE FROM "schema_migration" WHERE "name" LIKE ?', ("0005%",))
    write_inboxes(inst)
    [ticket] = inst.tickets()
    added = inst.json("inbox", "add", str(ticket["number"]), "--inbox", "Finance", "--as", "jane@example.com")
    assert (added["ticket"], added["subject"], added["inbox"]) == (ticket["number"], "Old ticket", "Finance")
    again = inst.cli("inbox", "add", str(ticket["number"]), "--inbox", "Finance", "--as", "jane@example.com",
                     check=False)
    assert again.returncode == 1   # the partial unique index came with the upgrade
    with sqlite3.connect(db) as conn:
        indexes = [row[0] for row in conn.execute("select sql from sqlite_master where tbl_name = 'inbox_entry' "
                                                  "and type = 'index' and sql like '%UNIQUE%'")]
    assert indexes and "WHERE" in indexes[0]
    inst.start()
    try:
        inst.send(make_mail(subject="New ticket after the upgrade", to="tech@example.com"))
        wait_for(lambda: len(entries(inst)) == 2, 15, what="the new ticket's entry")
    finally:
        inst.stop()   # not a fixture: stop it here, or its daemon outlives the test
