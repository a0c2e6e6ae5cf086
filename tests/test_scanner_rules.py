"""Scanner rules without a server: every operator, any/all nesting, case, hints,
`check-config` errors that name file, scanner and rule, and `scanners test`."""

import json
import os
import textwrap
from pathlib import Path

import pytest

from conftest import Instance, make_mail
from connector.mail.parse import parse_message
from connector.checks import load_checked
from connector.scanners.conditions import MessageFields, parse_conditions
from connector.scanners.config import scanners_of
from connector.scanners.rules import decide
from connector.settings import ConfigError, load_settings


def fields(msg):
    raw = msg.as_bytes()
    return MessageFields(raw, parse_message(raw))


CORPUS = Path(os.environ.get("CONNECTOR_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")
# header blocks the parser repairs or reads oddly: each must read the same without the body's parse
ODD_HEADERS = [
    b"From ann@acme.example Mon Jan  1 00:00:00 2024\nFrom: Ann <ann@acme.example>\nSubject: mbox\n\nbody\n",
    b" folded first\r\nSubject: continuation first\r\n\r\nbody",
    b"Subject: no separator\r\nthis line is body\r\nTo: bob@beta.example\r\n\r\nbody",
    b"Subject : obsolete syntax\r\nFrom : ann@acme.example\r\n\r\nbody",
    b"Subject: bare CR\rFrom: ann@acme.example\r\rbody",
    b"Subject: LF then CRLF\nFrom: ann@acme.example\n\r\nbody",
    b"Subject: =?utf-8?q?caf=C3=A9?=\n\tfolded\nTo: a@acme.example, \"Lee, Bob\" <bob@beta.example>\n"
    b"Cc: c@acme.example\nCc: d@beta.example\nList-Id: <news.acme.example>\n\nbody",
    "Subject: Grüße\nFrom: Jürgen <j@acme.example>\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
    "Content-Type: text/plain; charset=iso-8859-1\n\nx\n--b--\n".encode("latin-1"),
    b"Subject: no body at all\r\nFrom: ann@acme.example",
    b"Subject: form feed\x0cin a header\r\nFrom: ann@acme.example\r\n\r\n",
    b"Subject: empty name\r\n: oops\r\nTo: bob@beta.example\r\n\r\n",
    b"Sender: Sam <sam@acme.example>\r\nFrom: undisclosed\r\n\r\n",
    b"",
]


def header_values(fields_of, raw):
    parsed = parse_message(raw)
    names = {key.lower() for key, _ in parsed.msg.raw_items()} | {"x-absent"}
    return {field: fields_of(raw).values(field) for field in
            ["from", "to", "cc", "subject"] + [f"header:{name}" for name in sorted(names)]}


@pytest.mark.parametrize("raw", ODD_HEADERS)
def test_rules_read_headers_without_parsing_the_body_as_the_whole_parse_does(raw):
    assert header_values(MessageFields, raw) == header_values(lambda r: MessageFields(r, parse_message(r)), raw)


@pytest.mark.skipif(not (CORPUS / "mime").is_dir(), reason=f"no corpus at {CORPUS}")
def test_header_fields_equal_the_whole_parse_on_the_corpus():
    differ = []
    for path in sorted(CORPUS.rglob("*.eml")):
        raw = path.read_bytes()
        if header_values(MessageFields, raw) != header_values(lambda r: MessageFields(r, parse_message(r)), raw):
            differ.append(path.name)
    assert differ == []


def matches(condition, msg, case_sensitive=False):
    return parse_conditions(condition, case_sensitive).test(fields(msg))


MAIL = make_mail(subject="Invoice 2024-17 for ACME", sender="billing@Billing.test", name="Billing Dept",
                 to="support@example.com", cc="ann@acme.example, bob@beta.example",
                 body="Dear support,\nplease find the invoice attached.\n", headers={"X-Priority": "1 (Highest)"})


@pytest.mark.parametrize("field, op, value, expected", [
    ("subject", "contains", "invoice", True),
    ("subject", "contains", "receipt", False),
    ("subject", "not_contains", "receipt", True),
    ("subject", "not_contains", "INVOICE", False),
    ("subject", "equals", "invoice 2024-17 for acme", True),
    ("subject", "equals", "Invoice 2024-17", False),
    ("subject", "starts_with", "invoice", True),
    ("subject", "starts_with", "acme", False),
    ("subject", "ends_with", "for acme", True),
    ("subject", "ends_with", "invoice", False),
    ("subject", "matches", r"invoice \d{4}-\d+", True),
    ("subject", "matches", r"^acme", False),
    ("subject", "not_matches", r"^receipt", True),
    ("subject", "not_matches", r"\d{4}", False),
    ("from", "ends_with", "@billing.test", True),
    ("from", "equals", "billing@billing.test", True),
    ("from", "contains", "billing dept", True),       # the display name counts too
    ("from", "starts_with", "ann@", False),
    ("to", "equals", "support@example.com", True),
    ("cc", "contains", "beta.example", True),
    ("cc", "not_contains", "beta.example", False),   # no cc address may contain it
    ("cc", "not_contains", "gamma.example", True),
    ("body", "contains", "invoice attached", True),
    ("body", "not_contains", "invoice attached", False),
    ("header:X-Priority", "starts_with", "1", True),
    ("header:x-priority", "contains", "highest", True),
    ("header:X-Missing", "not_contains", "x", True),
    ("header:X-Missing", "contains", "x", False),
])
def test_every_operator(field, op, value, expected):
    assert matches({"field": field, "op": op, "value": value}, MAIL) is expected


def test_has_attachment_and_size():
    with_file = make_mail(subject="Scan")
    with_file.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="scan.pdf")
    size = len(MAIL.as_bytes().replace(b"\n", b"\r\n"))   # on the wire (RFC822.SIZE): CRLF lines
    assert matches({"field": "has_attachment", "op": "equals", "value": True}, with_file)
    assert not matches({"field": "has_attachment", "op": "equals", "value": True}, MAIL)
    assert matches({"field": "has_attachment", "op": "equals", "value": False}, MAIL)
    assert matches({"field": "size", "op": "equals", "value": size}, MAIL)
    assert matches({"field": "size", "op": "less_than", "value": "100k"}, MAIL)
    assert not matches({"field": "size", "op": "greater_than", "value": size}, MAIL)
    crlf = MAIL.as_bytes().replace(b"\n", b"\r\n")
    assert MessageFields(crlf, parse_message(crlf)).size == size    # the same mail as IMAP serves it
    assert matches({"field": "has_attachment", "op": "equals", "value": "true"}, with_file)  # quoted is fine


def test_case_sensitive_on_rule_and_leaf():
    leaf = {"field": "subject", "op": "contains", "value": "invoice"}
    assert matches(leaf, MAIL)
    assert not matches(leaf, MAIL, case_sensitive=True)
    assert not matches(dict(leaf, case_sensitive=True), MAIL)
    assert not matches({"field": "subject", "op": "matches", "value": "^invoice", "case_sensitive": True}, MAIL)
    assert matches({"field": "subject", "op": "matches", "value": "^Invoice", "case_sensitive": True}, MAIL)


def test_any_all_nesting():
    yes = {"field": "subject", "op": "contains", "value": "invoice"}
    no = {"field": "subject", "op": "contains", "value": "zzz"}
    assert matches({"any": [no, yes]}, MAIL)
    assert not matches({"all": [no, yes]}, MAIL)
    assert matches({"all": [yes, {"any": [no, {"all": [yes, yes]}]}]}, MAIL)
    assert not matches({"any": [no, {"all": [yes, {"any": [no, no]}]}]}, MAIL)
    assert matches([yes, yes], MAIL)          # a list at the top is all
    assert not matches([yes, no], MAIL)


def settings_with(tmp_path, yaml_text, files=None, **ini):
    inst = Instance(tmp_path, 25, **ini)
    (tmp_path / "config" / "scanners.yaml").write_text(textwrap.dedent(yaml_text))
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return inst


def scanner_yaml(rules="", **extra):
    keys = {"name": "support-mailbox", "host": "imap.example.test", "username": "support@example.com",
            "password_file": "secrets/support.pass"}
    keys.update(extra)
    lines = ["scanners:", f"  - name: {keys.pop('name')}"] + [f"    {k}: {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n" + textwrap.indent(textwrap.dedent(rules), "    ")


GOOD_RULES = """\
rules:
  - name: invoices
    conditions:
      any:
        - {field: subject, op: contains, value: invoice}
    actions:
      - create_contact
      - create_or_update_ticket: {status: Billing, manager: Jane@example.com, inbox: false, priority: high}
      - move_to_folder: Processed
"""
PASS = {"secrets/support.pass": "s3cret\n"}


def test_good_config_loads(tmp_path):
    inst = settings_with(tmp_path, scanner_yaml(GOOD_RULES), PASS)
    (cfg,) = scanners_of(load_settings(inst.ini))
    assert cfg.port == 993 and cfg.security == "ssl" and cfg.scan == "all_since_last" and cfg.idle
    assert cfg.secret() == "s3cret"
    assert cfg.password_file == tmp_path / "secrets" / "support.pass"
    raw = MAIL.as_bytes()
    decision = decide(cfg, "INBOX", raw, parse_message(raw))
    assert decision.rule == "invoices" and decision.imports and decision.move_to == "Processed"
    assert decision.hints == {"scanner": "support-mailbox", "rule": "invoices",
                              "ticket_fields": {"status": "Billing", "priority": "high",
                                                "manager": "jane@example.com", "inbox": False}}


@pytest.mark.parametrize("rules, extra, key, problem", [
    ("rules:\n  - name: r1\n    conditions: {field: subjekt, op: contains, value: x}\n    actions: [mark_read]\n",
     {}, "scanners[support-mailbox].rules[r1].conditions.field", "unknown field"),
    ("rules:\n  - name: r1\n    conditions: {any: [{field: subject, op: like, value: x}]}\n    actions: [mark_read]\n",
     {}, "scanners[support-mailbox].rules[r1].conditions.any[0].op", "unknown operator"),
    ("rules:\n  - name: r1\n    conditions: {field: subject, op: matches, value: 'inv(oice'}\n"
     "    actions: [mark_read]\n", {}, "scanners[support-mailbox].rules[r1].conditions.value",
     "not a valid regular expression"),
    ("rules:\n  - name: r1\n    actions: [archive]\n", {}, "scanners[support-mailbox].rules[r1].actions[0]",
     "unknown action"),
    ("rules:\n  - name: r1\n    actions: [move_to_folder]\n", {},
     "scanners[support-mailbox].rules[r1].actions[0].move_to_folder", "a move without a folder"),
    ("rules:\n  - name: r1\n    actions: [{create_or_update_ticket: {match: 'TT(\\d+'}}]\n", {},
     "scanners[support-mailbox].rules[r1].actions[0].create_or_update_ticket.match",
     "not a valid regular expression"),
    ("rules:\n  - name: r1\n    actions: [{create_or_update_ticket: {manager: nobody@example.com}}]\n", {},
     "scanners[support-mailbox].rules[r1].actions[0].create_or_update_ticket.manager", "not an active employee"),
    ("rules:\n  - name: r1\n    folders: [Spam]\n    actions: [mark_read]\n", {},
     "scanners[support-mailbox].rules[r1].folders", "not one of the scanner's folders"),
    ("rules:\n  - name: r1\n    conditions: {field: 'header:X Foo', op: contains, value: x}\n"
     "    actions: [mark_read]\n", {}, "scanners[support-mailbox].rules[r1].conditions.field", "unknown field"),
    ("", {"password_file": "secrets/missing.pass"}, "scanners[support-mailbox].password_file", "does not exist"),
    ("", {"security": "tls"}, "scanners[support-mailbox].security", "not one of"),
    ("", {"scan": "new"}, "scanners[support-mailbox].scan", "not one of"),
    ("", {"colour": "blue"}, "scanners[support-mailbox].colour", "unknown key"),
    ("", {"auth": "xoauth2"}, "scanners[support-mailbox].token_command", "is missing"),
])
def test_check_config_names_file_scanner_rule_and_hint(tmp_path, rules, extra, key, problem):
    inst = settings_with(tmp_path, scanner_yaml(rules, **extra), PASS)
    with pytest.raises(ConfigError) as info:
        load_checked(inst.ini)
    assert info.value.key == key
    assert problem in info.value.problem
    assert info.value.hint
    assert info.value.file.endswith("scanners.yaml")


def test_check_config_command_reports_the_rule(tmp_path):
    bad = "rules:\n  - name: invoices\n    conditions: {field: subject, op: contains, value: x}\n" \
          "    actions: [move_to_folder]\n"
    inst = settings_with(tmp_path, scanner_yaml(bad), PASS)
    result = inst.cli("check-config", check=False)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "scanners.yaml" in err and "scanners[support-mailbox].rules[invoices]" in err
    assert "a move without a folder" in err and "hint:" in err


@pytest.mark.empty_store
def test_scanners_test_command_shows_rule_and_actions_changing_nothing(tmp_path):
    rules = GOOD_RULES + """\
  - name: catch-rest
    conditions: {field: subject, op: contains, value: hello}
    actions: [create_contact, stop, mark_read]
"""
    inst = settings_with(tmp_path, scanner_yaml(rules), PASS)
    eml = tmp_path / "mail.eml"
    eml.write_bytes(MAIL.as_bytes())
    data = json.loads(inst.cli("scanners", "test", "support-mailbox", str(eml), "--json").stdout)
    assert data["rule"] == "invoices" and data["import"] is True and data["move_to_folder"] == "Processed"
    assert data["hints"]["ticket_fields"]["status"] == "Billing"
    assert data["pipeline"] is None                     # no store yet: nothing opened, nothing created
    assert not (tmp_path / "var").exists()
    eml.write_bytes(make_mail(subject="hello there").as_bytes())
    data = json.loads(inst.cli("scanners", "test", "support-mailbox", str(eml), "--json").stdout)
    assert data["rule"] == "catch-rest" and data["hints"]["create_ticket"] is False
    assert data["mark_read"] is False                   # after stop: not run
    text = inst.cli("scanners", "test", "support-mailbox", str(eml)).stdout.decode()
    assert "catch-rest" in text and "create_contact" in text
    eml.write_bytes(make_mail(subject="nothing special").as_bytes())
    data = json.loads(inst.cli("scanners", "test", "support-mailbox", str(eml), "--json").stdout)
    assert data["rule"] is None and data["import"] is True and data["hints"] is None   # unmatched: pipeline
    assert inst.cli("scanners", "test", "nope", str(eml), check=False).returncode == 1


def test_an_image_embedded_in_the_html_is_not_an_attachment():
    """A signature logo (multipart/related, Content-ID, inline, even with a file name, as
    Outlook sends it) is not has_attachment; the same image attached, or a PDF, is."""
    has = {"field": "has_attachment", "op": "equals", "value": True}
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    logo = make_mail(subject="With a logo")
    logo.add_alternative("<p>Hi <img src='cid:logo1'></p>", subtype="html")
    logo.get_payload()[1].add_related(png, "image", "png", cid="<logo1>", filename="image001.png",
                                     disposition="inline")
    assert not matches(has, logo)
    attached = make_mail(subject="A photo")
    attached.add_attachment(png, maintype="image", subtype="png", filename="photo.png")
    assert matches(has, attached)
    logo.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="scan.pdf")
    assert matches(has, logo)


def test_inbox_is_case_insensitive_and_folders_are_read_once(tmp_path):
    rules = "rules:\n  - name: r1\n    folders: [inbox]\n    actions: [mark_read]\n"
    inst = settings_with(tmp_path, scanner_yaml(rules, folders="[Inbox, INBOX, Archive]"), PASS)
    (cfg,) = scanners_of(load_settings(inst.ini))
    assert cfg.folders == ("INBOX", "Archive")
    assert cfg.rules[0].folders == ("INBOX",)


ROOT = Path(__file__).resolve().parent.parent


def test_example_file_and_docs_tables_are_generated_from_the_declared_keys(tmp_path):
    """config/scanners.yaml.example and the key tables of docs/scanners.md are what
    connector/scanners/schema.py generates; the example's sample loads, and uses only declared keys."""
    from connector.scanners.schema import RULE, SCANNER, render_example, render_table
    example = (ROOT / "config" / "scanners.yaml.example").read_text()
    assert example == render_example()
    assert Instance(tmp_path / "cli", 25).cli("example-scanners").stdout.decode() == example
    docs = (ROOT / "docs" / "scanners.md").read_text()
    for what, keys in (("scanner keys", SCANNER), ("rule keys", RULE)):
        start = docs.index(f"<!-- {what}: generated")
        block = docs[docs.index("\n", start) + 1:docs.index(f"<!-- end {what} -->")]
        assert block == render_table(keys)
    inst = settings_with(tmp_path / "site", example, PASS)
    support, shared = scanners_of(load_settings(inst.ini))
    assert (support.name, support.port, len(support.rules), shared.auth) == ("support-mailbox", 993, 3, "xoauth2")


def test_a_default_comes_from_the_declaration(tmp_path, monkeypatch):
    """The loader takes its defaults from the declared keys, not from copies of its own."""
    from connector.scanners import schema
    monkeypatch.setitem(schema.DEFAULTS, "interval", 15)
    monkeypatch.setitem(schema.DEFAULTS, "unmatched", "leave")
    monkeypatch.setitem(schema.RULE_DEFAULTS, "case_sensitive", True)
    inst = settings_with(tmp_path, scanner_yaml(GOOD_RULES), PASS)
    (cfg,) = scanners_of(load_settings(inst.ini))
    assert (cfg.interval, cfg.unmatched) == (15.0, "leave")
    assert cfg.rules[0].conditions.children[0].case_sensitive is True


def test_sizes_and_yes_no_read_the_same_in_the_ini_and_in_rules(tmp_path):
    """One parser each (connector.settings.values): `on` is yes in the ini and in a rule's
    has_attachment; `1 GB` is the same number of bytes for max_message_size and a size rule."""
    from connector.settings.values import parse_bool, parse_size
    assert parse_conditions({"field": "has_attachment", "op": "equals", "value": "on"}).value is True
    assert parse_conditions({"field": "has_attachment", "op": "equals", "value": "Off"}).value is False
    assert parse_conditions({"field": "size", "op": "greater_than", "value": "1 GB"}).value == 1 << 30
    inst = settings_with(tmp_path, scanner_yaml(), PASS, smtp__max_message_size="1 GB",
                         connector__add_recipients_from_headers="on")
    settings = load_settings(inst.ini)
    assert settings.max_message_size == 1 << 30 and settings.add_recipients_from_headers is True
    assert (parse_size("1 GB"), parse_bool("on")) == (1 << 30, True)
    assert parse_size("25x") is None and parse_bool("maybe") is None
