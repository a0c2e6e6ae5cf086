"""Every rule carries samples, and they agree with it (fail2ban's samples test is the model).

One test per rule file: the shipped reply rules (rules/quotes.yaml), the example
local override in tests/fixtures/rules, and the pattern rules of mail/
(rules/automatic.yaml, html.yaml, bounces.yaml). A rule without 'match' and
'no_match' samples, or a sample its regex disagrees with, fails the file's test.
"""

from pathlib import Path

import pytest

from connector.mail import automatic, bounce, html
from connector.mail.rules import PATTERN_FILES
from connector.reply.rules import LOCAL_FILE, RULES_FILE, SHIPPED_RULES_DIR, check_samples, load_rules

FIXTURE_RULES = Path(__file__).parent / "fixtures" / "rules"
RULE_FILES = sorted(SHIPPED_RULES_DIR.glob("quotes*.yaml")) + sorted(FIXTURE_RULES.glob("*.yaml"))
PATTERN_RULES = {"automatic.yaml": automatic.RULES, "html.yaml": html.RULES, "bounces.yaml": bounce.RULES}


def _ruleset_for(path):
    if path.name == RULES_FILE:
        return load_rules([path.parent])
    assert path.name == LOCAL_FILE, f"{path}: rule files are {RULES_FILE} or {LOCAL_FILE}"
    return load_rules([path.parent, SHIPPED_RULES_DIR])


def test_rule_files_found():
    assert SHIPPED_RULES_DIR / RULES_FILE in RULE_FILES


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rule_file_samples(path):
    ruleset = _ruleset_for(path)
    own = [rule for rule in ruleset.rules if Path(rule.source) == path]
    assert own, f"{path} defines no rules"
    problems = [problem for rule in own for problem in check_samples(rule)]
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)


def test_every_shipped_rule_file_is_checked():
    shipped = {p.name for p in SHIPPED_RULES_DIR.glob("*.yaml")}
    assert shipped == {p.name for p in RULE_FILES if p.parent == SHIPPED_RULES_DIR} | set(PATTERN_FILES)
    assert set(PATTERN_RULES) == set(PATTERN_FILES)


@pytest.mark.parametrize("name", PATTERN_FILES)
def test_pattern_rule_file_samples(name):
    rules = PATTERN_RULES[name]
    assert rules.rules, f"{rules.path} defines no rules"
    problems = [problem for rule in rules.rules for problem in check_samples(rule)]
    assert not problems, f"{rules.path}:\n  " + "\n  ".join(problems)
