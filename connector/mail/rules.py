"""Pattern rules as data: the shipped rules/automatic.yaml, html.yaml and bounces.yaml.

The mail readers (mail/automatic.py, mail/html.py, mail/bounce.py) keep no
patterns of their own: each loads its rule file once, at import, through
`load_rule_file(name, kinds)`, and asks it `first(kind, text)` or
`any(kind, text)`. A rule file holds `version` and `rules`; every rule has
`name`, `kind`, `regex` (a string or a list of alternatives, compiled
case-insensitive and MULTILINE), `samples` (`match` and `no_match` lists,
checked by tests/test_rule_samples.py), `doc`, and, in bounces.yaml, the
`reason` it gives. Anything wrong raises `RuleError` naming file, rule and
what to fix. `check_samples` is shared with the reply rules (reply/rules.py).
"""

import re
from dataclasses import dataclass, field

import yaml

from connector.settings.shipped import SHIPPED_DIR

SHIPPED_RULES_DIR = SHIPPED_DIR / "rules"
PATTERN_FILES = ("automatic.yaml", "html.yaml", "bounces.yaml")
RULE_KEYS = {"name", "kind", "regex", "samples", "doc", "reason"}
FILE_KEYS = {"version", "rules"}


class RuleError(ValueError):
    """A rule file that cannot be used; the message names file, rule and a hint."""


@dataclass
class PatternRule:
    name: str
    kind: str
    compiled: object
    samples: dict = field(default_factory=dict)
    doc: str = ""
    reason: str = ""        # bounces.yaml: the sisimai reason this rule gives
    source: str = ""


@dataclass
class PatternRules:
    version: str
    rules: list
    path: str

    def first(self, kind, text):
        """The first rule of `kind` (file order) whose regex is found in `text`, else None."""
        for rule in self._by_kind.get(kind, ()):
            if rule.compiled.search(text):
                return rule
        return None

    def any(self, kind, text):
        return self.first(kind, text or "") is not None

    def __post_init__(self):
        self._by_kind = {}
        for rule in self.rules:
            self._by_kind.setdefault(rule.kind, []).append(rule)


def _regex(path, name, value):
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return "|".join(f"(?:{v})" for v in value)
    raise RuleError(f"{path}: rule {name!r}: 'regex' must be a string or a list of strings")


def _rule(path, entry, kinds):
    if not isinstance(entry, dict) or "name" not in entry:
        raise RuleError(f"{path}: every entry under 'rules:' needs a 'name' (found {entry!r:.60})")
    name = str(entry["name"])
    unknown = set(entry) - RULE_KEYS
    if unknown:
        raise RuleError(f"{path}: rule {name!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"allowed: {', '.join(sorted(RULE_KEYS))}")
    if entry.get("kind") not in kinds:
        raise RuleError(f"{path}: rule {name!r}: kind {entry.get('kind')!r} is not one of {', '.join(kinds)}")
    samples = entry.get("samples") or {}
    if not isinstance(samples, dict) or set(samples) - {"match", "no_match"}:
        raise RuleError(f"{path}: rule {name!r}: 'samples' has 'match:' and 'no_match:' lists")
    try:
        compiled = re.compile(_regex(path, name, entry.get("regex")), re.I | re.M)
    except re.error as exc:
        raise RuleError(f"{path}: rule {name!r}: bad regex: {exc}") from None
    return PatternRule(name=name, kind=entry["kind"], compiled=compiled,
                       samples={"match": [str(s) for s in samples.get("match") or []],
                                "no_match": [str(s) for s in samples.get("no_match") or []]},
                       doc=str(entry.get("doc") or ""), reason=str(entry.get("reason") or ""),
                       source=str(path))


def load_rule_file(name, kinds, folder=None):
    """The `PatternRules` of rules/`name` (shipped unless `folder`); raises `RuleError`."""
    path = (folder or SHIPPED_RULES_DIR) / name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RuleError(f"{path}: cannot read rule file: {exc}") from None
    if not isinstance(data, dict) or set(data) - FILE_KEYS:
        raise RuleError(f"{path}: a rule file is a mapping with 'version:' and 'rules:'")
    rules, names = [], set()
    for entry in data.get("rules") or []:
        rule = _rule(path, entry, kinds)
        if rule.name in names:
            raise RuleError(f"{path}: rule {rule.name!r} is defined twice")
        names.add(rule.name)
        rules.append(rule)
    return PatternRules(version=str(data.get("version") or name), rules=rules, path=str(path))


class LazyRuleFile:
    """`load_rule_file(name, kinds)`, read when first used: a command that never looks
    at a mail (`tickets list`) does not pay for reading and compiling it at import."""

    def __init__(self, name, kinds):
        self._load = (name, kinds)
        self._rules = None

    def __getattr__(self, attr):
        if self._rules is None:
            self._rules = load_rule_file(*self._load)
        return getattr(self._rules, attr)


def check_samples(rule):
    """The list of problems with `rule`'s samples (empty when every sample agrees)."""
    problems = []
    if not rule.samples.get("match"):
        problems.append(f"rule {rule.name!r} has no 'match' samples")
    if not rule.samples.get("no_match"):
        problems.append(f"rule {rule.name!r} has no 'no_match' samples")
    for sample in rule.samples.get("match", []):
        if not rule.compiled.search(sample):
            problems.append(f"rule {rule.name!r} does not match {sample!r}")
    for sample in rule.samples.get("no_match", []):
        found = rule.compiled.search(sample)
        if found:
            problems.append(f"rule {rule.name!r} matches {found.group(0)!r} in {sample!r}")
    return problems
