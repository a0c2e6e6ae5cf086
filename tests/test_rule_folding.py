"""The pattern rules' fast search (lower-cased text, regex without re.I) finds exactly what
the rule's own case-insensitive regex finds (connector/mail/rules.py, `_folded`).

Checked on every shipped rule against its samples, the corpus' subjects and
bodies, those texts upper-cased, and texts with the letters that case-fold apart
from their lower case (long s, final sigma, dotted I); and that a regex the copy
could not follow (an escaped letter, an accented range, inline flags) keeps its own.
"""

import email
import email.policy
from pathlib import Path

import pytest

from connector.mail import automatic, bounce, html
from connector.mail.rules import PatternRules, _folded, _rule

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PATTERN_RULES = {"automatic.yaml": automatic.RULES, "html.yaml": html.RULES, "bounces.yaml": bounce.RULES}
ODD_LETTERS = ["ſtop", "Mailer-Daemon ſ", "ΣΊΣΥΦΟΣ ς σ", "İstanbul ıi", "µ micro μ", "ᲀ ᲈ в"]


def _corpus_texts(limit=400):
    texts = []
    for path in sorted(CORPUS.rglob("*.eml"))[:limit]:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        texts.append(str(msg.get("Subject", "")))
        body = msg.get_payload(decode=True) if not msg.is_multipart() else None
        if body:
            texts.append(body.decode("utf-8", "replace")[:3000])
    return texts


def _own_first(rules, kind, text):
    return next((rule for rule in rules.rules if rule.kind == kind and rule.compiled.search(text)), None)


@pytest.mark.parametrize("name", sorted(PATTERN_RULES))
def test_fast_search_agrees_with_the_rules_regex(name):
    rules = PATTERN_RULES[name]
    samples = [s for rule in rules.rules for s in rule.samples["match"] + rule.samples["no_match"]]
    texts = samples + _corpus_texts() + ODD_LETTERS
    texts += [t.upper() for t in texts] + [t.title() for t in samples]
    assert any(rule.folded is not None for rule in rules.rules)  # the fast search is in use
    kinds = {rule.kind for rule in rules.rules}
    disagree = [(kind, text[:60]) for text in texts for kind in kinds
                if rules.first(kind, text) is not _own_first(rules, kind, text)]
    assert not disagree


def _rules_of(regex):
    rule = _rule("test.yaml", {"name": "r", "kind": "k", "regex": regex}, ("k",))
    return PatternRules(version="1", rules=[rule], path="test.yaml")


@pytest.mark.parametrize("regex, text", [
    ("stop", "ſtop"),            # the long s is an s to re.I, not to lower()
    ("sisyphos", "ΣΊΣΥΦΟΣ"),     # no match either way
    ("σοφος", "ΣΟΦΟΣ"),
    ("σοφος", "σοφος"),
    ("σοφος", "σοφoς"),
    ("[À-ÿ]x", "×x"),            # an accented range: the rule's own regex
    (r"\x41BC", "abc"),          # an escaped letter
    ("(?-i:ABC)", "abc"),        # inline flags
    ("ABC", "abc"),
    ("[A-Z]+ed", "BOUNCED"),
])
def test_odd_cases_find_what_re_i_finds(regex, text):
    rules = _rules_of(regex)
    assert (rules.first("k", text) is not None) == bool(rules.rules[0].compiled.search(text))


def test_regexes_the_copy_cannot_follow_are_not_folded():
    assert _folded(r"\x41") is None and _folded("(?i)a") is None and _folded("[À-ÿ]") is None
    assert _folded(r"ab\s+[A-Z]\b").pattern == r"ab\s+[a-z]\b"
