"""Reply-extraction rules as data: load `quotes.yaml`, layer `quotes.local.yaml` on top.

A rule file holds `version`, `vocabulary` (named word lists that a regex
inserts with `{{name}}`) and `rules` (name, kind, regex, samples, doc). An
override file may add or replace rules by name, `disable` shipped rules, and
add entries to vocabulary lists. Anything wrong raises `RuleError` naming the
file, the rule and what to fix: a typo must not silently switch a rule off.
"""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from connector.mail.rules import check_samples  # noqa: F401  (one sample check for every rule file)
from connector.settings import yamlfile
from connector.settings.shipped import SHIPPED_DIR

RULES_FILE = "quotes.yaml"
LOCAL_FILE = "quotes.local.yaml"
SHIPPED_RULES_DIR = SHIPPED_DIR / "rules"

KINDS = ("reply_above", "header", "forward", "quote", "signature")
RULE_KEYS = {"name", "kind", "regex", "samples", "doc", "requires"}
FILE_KEYS = {"version", "vocabulary", "rules"}
LOCAL_KEYS = {"rules", "disable", "vocabulary"}
PLACEHOLDER_RE = re.compile(r"\{\{(\w+)\}\}")


class RuleError(ValueError):
    """A rule file that cannot be used; the message names file, rule and a hint."""


@dataclass
class Rule:
    name: str
    kind: str
    regex: str                      # as written, before {{vocabulary}} expansion
    pattern: str = ""               # expanded
    samples: dict = field(default_factory=dict)
    doc: str = ""
    source: str = ""                # file the rule came from
    compiled: object = None
    requires: tuple = ()            # words (any, case-insensitive) a body must contain for the rule to be tried


@dataclass
class RuleSet:
    version: str
    rules: list
    files: list

    def of_kind(self, kind):
        return [rule for rule in self.rules if rule.kind == kind]


def _read_yaml(path):
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where, what = yamlfile.problem(exc)
        raise RuleError(f"{path}: {where}: {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read rule file: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RuleError(f"{path}: a rule file is a mapping with 'rules:' (found {type(data).__name__})")
    return data


def _check_keys(path, where, data, allowed):
    unknown = set(data) - allowed
    if unknown:
        raise RuleError(f"{path}: {where}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"allowed: {', '.join(sorted(allowed))}")


def _regex_text(path, name, value):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "|".join(f"(?:{v})" for v in value)
    raise RuleError(f"{path}: rule {name!r}: 'regex' must be a string or a list of strings")


def _parse_rule(path, entry):
    if not isinstance(entry, dict) or "name" not in entry:
        raise RuleError(f"{path}: every entry under 'rules:' needs a 'name' (found {entry!r:.60})")
    name = str(entry["name"])
    _check_keys(path, f"rule {name!r}", entry, RULE_KEYS)
    kind = entry.get("kind")
    if kind not in KINDS:
        raise RuleError(f"{path}: rule {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if "regex" not in entry:
        raise RuleError(f"{path}: rule {name!r}: 'regex' is missing")
    samples = entry.get("samples") or {}
    if not isinstance(samples, dict) or set(samples) - {"match", "no_match"}:
        raise RuleError(f"{path}: rule {name!r}: 'samples' has 'match:' and 'no_match:' lists")
    requires = entry.get("requires") or []
    if isinstance(requires, str):
        requires = [requires]
    if not isinstance(requires, list) or not all(isinstance(w, str) and w.strip() for w in requires):
        raise RuleError(f"{path}: rule {name!r}: 'requires' is a list of words, e.g. [wrote]")
    requires = tuple(w.lower() for w in requires)
    matches = list(samples.get("match") or [])
    for sample in matches:
        if requires and not any(w in str(sample).lower() for w in requires):
            raise RuleError(f"{path}: rule {name!r}: match sample {sample!r:.60} contains none of "
                            f"'requires' {list(requires)}; the rule would never be tried on it")
    return Rule(name=name, kind=kind, regex=_regex_text(path, name, entry["regex"]),
                samples={"match": matches, "no_match": list(samples.get("no_match") or [])},
                doc=str(entry.get("doc") or ""), source=str(path), requires=requires)


def _parse_vocabulary(path, data):
    vocabulary = data.get("vocabulary") or {}
    if not isinstance(vocabulary, dict):
        raise RuleError(f"{path}: 'vocabulary' maps a name to a list of regex fragments")
    for key, words in vocabulary.items():
        if not isinstance(words, list):
            raise RuleError(f"{path}: vocabulary {key!r}: must be a list of regex fragments")
        for word in words:
            if not isinstance(word, str) or not word:
                raise RuleError(f"{path}: vocabulary {key!r}: entry {word!r} is not a non-empty string "
                                f"(quote words YAML reads as booleans or numbers: \"On\", \"No\")")
    return vocabulary


def _expand(rule, vocabulary):
    def replace(match):
        key = match.group(1)
        if key not in vocabulary:
            raise RuleError(f"{rule.source}: rule {rule.name!r}: unknown vocabulary {{{{{key}}}}}; "
                            f"known: {', '.join(sorted(vocabulary))}")
        return "(?:" + "|".join(vocabulary[key]) + ")"
    return PLACEHOLDER_RE.sub(replace, rule.regex)


def _compile(rule, vocabulary):
    rule.pattern = _expand(rule, vocabulary)
    try:
        rule.compiled = re.compile(rule.pattern, re.M)
    except re.error as exc:
        raise RuleError(f"{rule.source}: rule {rule.name!r}: bad regex: {exc}") from None
    if rule.compiled.groupindex:
        raise RuleError(f"{rule.source}: rule {rule.name!r}: named groups are not allowed "
                        f"(use (?:...)); found {', '.join(rule.compiled.groupindex)}")


def find_rule_files(search_dirs):
    """(base file, [override files, least local first]) for `search_dirs` (local first)."""
    dirs = [Path(d) for d in search_dirs or []]
    base = next((d / RULES_FILE for d in dirs if (d / RULES_FILE).is_file()), None)
    if base is None and (SHIPPED_RULES_DIR / RULES_FILE).is_file():
        base = SHIPPED_RULES_DIR / RULES_FILE
    if base is None:
        raise RuleError(f"no {RULES_FILE} in {', '.join(str(d) for d in dirs) or '(no folder)'} "
                        f"nor in {SHIPPED_RULES_DIR}")
    seen, overrides = set(), []
    for d in reversed(dirs):
        path = d / LOCAL_FILE
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            overrides.append(path)
    return base, overrides


def load_rules(search_dirs):
    """The effective `RuleSet` for `search_dirs`; raises `RuleError` on any problem."""
    base, overrides = find_rule_files(search_dirs)
    data = _read_yaml(base)
    _check_keys(base, "top level", data, FILE_KEYS)
    vocabulary = {k: list(v) for k, v in _parse_vocabulary(base, data).items()}
    rules, order = {}, []
    for entry in data.get("rules") or []:
        rule = _parse_rule(base, entry)
        if rule.name in rules:
            raise RuleError(f"{base}: rule {rule.name!r} is defined twice")
        rules[rule.name] = rule
        order.append(rule.name)
    digest = hashlib.sha256(base.read_bytes())
    for path in overrides:
        local = _read_yaml(path)
        _check_keys(path, "top level", local, LOCAL_KEYS)
        for key, words in _parse_vocabulary(path, local).items():
            vocabulary.setdefault(key, []).extend(words)
        for entry in local.get("rules") or []:
            rule = _parse_rule(path, entry)
            if rule.name not in rules:
                order.append(rule.name)
            rules[rule.name] = rule
        disable = local.get("disable") or []
        if not isinstance(disable, list):
            raise RuleError(f"{path}: 'disable' is a list of rule names")
        for name in disable:
            if name not in rules:
                raise RuleError(f"{path}: disable: no rule named {name!r}; "
                                f"known: {', '.join(order)}")
            rules.pop(name)
            order.remove(name)
        digest.update(path.read_bytes())
    for name in order:
        _compile(rules[name], vocabulary)
    version = str(data.get("version") or "quotes")
    if overrides:
        version += "+local-" + digest.hexdigest()[:8]
    return RuleSet(version=version, rules=[rules[n] for n in order],
                   files=[str(base)] + [str(p) for p in overrides])
