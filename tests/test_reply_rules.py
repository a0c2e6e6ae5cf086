"""Rule files: administrator overrides next to the ini, and loud errors for bad files."""

from pathlib import Path

import pytest

from connector.reply import RuleError, load_extractor
from connector.reply.rules import SHIPPED_RULES_DIR

FIXTURE_RULES = Path(__file__).parent / "fixtures" / "rules"


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_shipped_rules_load_with_a_version():
    extractor = load_extractor([SHIPPED_RULES_DIR])
    assert extractor.version.startswith("quotes-")
    kinds = {rule.kind for rule in extractor.ruleset.rules}
    assert kinds == {"reply_above", "header", "forward", "quote", "signature"}


def test_missing_local_folder_falls_back_to_shipped(tmp_path):
    extractor = load_extractor([tmp_path / "nowhere", SHIPPED_RULES_DIR])
    assert extractor.version == load_extractor([SHIPPED_RULES_DIR]).version


def test_local_override_adds_replaces_disables_and_extends():
    shipped = load_extractor([SHIPPED_RULES_DIR])
    local = load_extractor([FIXTURE_RULES, SHIPPED_RULES_DIR])
    assert local.version != shipped.version and "+local-" in local.version
    names = [rule.name for rule in local.ruleset.rules]
    assert "acme_ticket_footer" in names and "attribution_old_gmail" not in names
    # added signature rule
    assert local.extract("Done.\n\nAcme Ticketing - do not edit below\nold stuff") == "Done."
    # replaced device_footer: BlackBerry is no longer a footer, iPhone still is
    assert local.extract("Ok\n\nSent from my BlackBerry") == "Ok\n\nSent from my BlackBerry"
    assert local.extract("Ok\n\nSent from my iPhone") == "Ok"
    # vocabulary extended: an Icelandic attribution
    assert local.extract("Takk.\n\nÞann 5. maí 2020 kl. 10:00 skrifaði Jón <jon@example.is>:\n> gamalt") == "Takk."
    # disabled rule: old Gmail attribution is not a header any more
    body = "Yes.\n\n2013/12/15 Bob Example <bob@example.com>\nmore text"
    assert local.extract(body) == body
    assert shipped.extract(body) == "Yes."


def test_bad_regex_names_file_and_rule(tmp_path):
    write(tmp_path, "quotes.local.yaml", "rules:\n  - name: broken\n    kind: header\n    regex: '(unclosed'\n")
    with pytest.raises(RuleError, match=r"quotes.local.yaml: rule 'broken': bad regex"):
        load_extractor([tmp_path, SHIPPED_RULES_DIR])


@pytest.mark.parametrize("text, message", [
    ("rules:\n  - name: x\n    kind: headr\n    regex: a\n", "kind 'headr' is not one of"),
    ("rules:\n  - name: x\n    kind: header\n    regexp: a\n", "unknown key"),
    ("disable: [no_such_rule]\n", "no rule named 'no_such_rule'"),
    ("rulez: []\n", "unknown key"),
    ("rules:\n  - name: x\n    kind: header\n    regex: '{{nope}}'\n", "unknown vocabulary"),
    ("vocabulary:\n  wrote: [On]\n", "quote words YAML reads as booleans"),
    ("rules:\n  - name: x\n    kind: header\n    regex: '(?P<n>a)'\n", "named groups are not allowed"),
    ("[1, 2]\n", "a rule file is a mapping"),
])
def test_override_errors_are_loud(tmp_path, text, message):
    write(tmp_path, "quotes.local.yaml", text)
    with pytest.raises(RuleError, match=message):
        load_extractor([tmp_path, SHIPPED_RULES_DIR])


def test_local_quotes_yaml_replaces_the_shipped_file(tmp_path):
    write(tmp_path, "quotes.yaml", "version: mine-1\nrules:\n  - name: q\n    kind: quote\n    regex: '^>'\n")
    extractor = load_extractor([tmp_path, SHIPPED_RULES_DIR])
    assert extractor.version == "mine-1"
    assert extractor.extract("Hi\n\n-- \nsig\n> q\n> q") == "Hi\n\n-- \nsig"


def test_requires_hint_refuses_a_match_sample_without_the_word(tmp_path):
    import pytest

    from connector.reply.rules import RuleError, load_rules
    (tmp_path / "quotes.yaml").write_text(
        "version: t\nrules:\n  - name: r\n    kind: header\n    requires: [wrote]\n    regex: '^X said:$'\n"
        "    samples: {match: ['X said:'], no_match: ['Y']}\n")
    with pytest.raises(RuleError, match="contains none of 'requires'"):
        load_rules([tmp_path])
