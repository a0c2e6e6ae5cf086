"""The shape checks every YAML file in `config/` starts with: a top-level
mapping with known keys, and lists of entries under some of them.

Used by the loader (staff.yaml, accounts.yaml, scanners.yaml) and by the
files with their own module (inboxes.yaml, auto_emails.yaml); each problem is
a `ConfigError` naming the file and the key, as everywhere in settings.
"""

from connector.settings.errors import ConfigError


def _enumerate(keys):
    keys = list(keys)
    return keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} and {keys[-1]}"


def top_mapping(path, data, keys, main=None):
    """`data` (the parsed file; None when empty) as a mapping whose keys are all in `keys`;
    `main` (default: the first key) is the one the hint tells to start with."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "-", f"must be a mapping with {_enumerate(keys)}",
                          f"start the file with '{main or keys[0]}:'")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(path, unknown[0], "unknown key", f"{path.name} takes: {', '.join(keys)}")
    return data


def entries(path, data, key):
    """The list of entries under `key` (none when absent or empty)."""
    items = data.get(key) or []
    if not isinstance(items, list):
        raise ConfigError(path, key, "must be a list", f"write '{key}:' then '  - ...' items")
    return items


def problem(exc):
    """(where, what) of a YAML syntax error in an operator's words: ("line 3", "is not valid
    YAML: expected <block end>, ..."), not PyYAML's eight-line report."""
    mark = getattr(exc, "problem_mark", None)
    return (f"line {mark.line + 1}" if mark else "-"), f"is not valid YAML: {getattr(exc, 'problem', None) or exc}"
