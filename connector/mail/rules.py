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

`first` searches lower-cased text with a lower-cased copy of the regex
(`_folded`), compiled without re.I: Python's case-insensitive matching costs
2-4x more (a challenge-text search of a 3,000-character body took 160-230 us
with re.I, 60 us so). The copy is made only where it finds exactly what the
rule finds: plain ASCII character classes, escapes that mean no letter, no
inline flags; text holding a character whose case folding differs from
lower-casing (`_FOLDS_APART`: the long s, the final sigma, a dotted I) is
searched with the rule's own regex.
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
    folded: object = None   # the regex for lower-cased text, without re.I (None: search with `compiled`)


@dataclass
class PatternRules:
    version: str
    rules: list
    path: str

    def first(self, kind, text):
        """The first rule of `kind` (file order) whose regex is found in `text`, else None."""
        lowered = text.lower() if text.isascii() or not _folds_apart(text) else None
        for rule in self._by_kind.get(kind, ()):
            if rule.folded is not None and lowered is not None:
                if rule.folded.search(lowered):
                    return rule
            elif rule.compiled.search(text):
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


_FLAG_GROUP = re.compile(r"\(\?[a-zA-Z-]")          # (?i), (?-i:...), (?x) ...; (?P<name> is fine
_LETTERLESS_ESCAPES = set("sSdDwWbBAZtnrfv")        # escapes that stand for no particular letter
# The characters that re.I treats as one letter although they lower-case apart (the table
# of Python's re._casefix, with the dotted capital I, which lower-cases into two): of each
# such pair, the one whose upper case lower-cases to another letter is kept here.
_CASE_PAIRS = ("\u00b5\u0130\u0131\u017f\u0345\u0390\u03b0\u03b2\u03b5\u03b8\u03b9\u03ba\u03bc\u03c0"
               "\u03c1\u03c2\u03c3\u03c6\u03d0\u03d1\u03d5\u03d6\u03f0\u03f1\u03f5\u0432\u0434\u043e\u0441"
               "\u0442\u044a\u0463\u1c80\u1c81\u1c82\u1c83\u1c84\u1c85\u1c86\u1c87\u1c88\u1e61\u1e9b\u1fbe"
               "\u1fd3\u1fe3\ua64b\ufb05\ufb06")
_FOLDS_APART = re.compile("[%s]" % "".join(
    c for c in _CASE_PAIRS if len(c.lower()) != 1 or c.upper().lower() != c.lower()))


def _folds_apart(text):
    return _FOLDS_APART.search(text) is not None


def _folded(pattern):
    """`pattern` lower-cased for lower-cased text, compiled without re.I; None where the
    copy could find something else than the pattern with re.I (see the module doc)."""
    if _FLAG_GROUP.search(pattern.replace("(?P", "")) or (not pattern.isascii() and _folds_apart(pattern)):
        return None
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1:index + 2]
            if escaped.isalpha() and escaped not in _LETTERLESS_ESCAPES:
                return None   # \x41, \u00c9, \N{...}: a letter the copy would not lower-case
            out.append(char + escaped)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            end = pattern.find("]", index + 2)
            if end < 0 or not pattern[index:end].isascii():
                return None   # a range of accented letters does not lower-case as its letters do
        elif char == "]" and in_class:
            in_class = False
        out.append(char.lower())
        index += 1
    try:
        return re.compile("".join(out), re.M)
    except re.error:
        return None


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
                       source=str(path), folded=_folded(compiled.pattern))


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
