"""`config/scanners.yaml`: the mailboxes to scan and their rules, validated.

`scanners_of(settings)` reads the file the first time its users ask
(`connector.checks.load_checked`, so check-config, the daemon and every
reload; the scanners' commands), checks every key and keeps the result as
`settings.extra["scanners"]` (a tuple of `ScannerConfig`; empty without the
file). `connector.settings` knows nothing of it. Every problem is a
`ConfigError` naming the file, the scanner and the rule, e.g.
`scanners[support-mailbox].rules[invoices].conditions.any[0].op`, with a hint.
Unknown keys are errors. Paths (password_file) are relative to the ini.
"""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from connector.scanners.conditions import ConditionError, parse_conditions
from connector.scanners.rules import (
    ACTIONS, ASSIGN_INBOX, CREATE_OR_UPDATE_TICKET, DELETE_MESSAGE, MOVE_TO_FOLDER, STOP, Action, Rule, valid_regex)
from connector.scanners.schema import (
    AUTH, DEFAULT_PORTS, DEFAULTS, RULE, RULE_DEFAULTS, SCAN, SCANNER, SECURITY, TICKET, UNMATCHED)
from connector.settings import inboxes
from connector.settings.errors import ConfigError
from connector.settings.loader import load_yaml

FILE = "scanners.yaml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SCANNER_KEYS = tuple(key.name for key in SCANNER)
RULE_KEYS = tuple(key.name for key in RULE)
TICKET_KEYS = tuple(key.name for key in TICKET)
_warned = set()


@dataclass(frozen=True)
class ScannerConfig:
    name: str
    active: bool
    host: str
    port: int
    security: str
    verify_certificate: bool
    auth: str
    username: str
    password_file: Path = None
    password: str = None        # inline (discouraged)
    token_command: str = None   # xoauth2: prints a current access token
    mailbox: str = None         # xoauth2: the mailbox to open (M365 shared mailbox)
    folders: tuple = DEFAULTS["folders"]
    scan: str = DEFAULTS["scan"]
    interval: float = float(DEFAULTS["interval"])
    idle: bool = DEFAULTS["idle"]
    unmatched: str = DEFAULTS["unmatched"]
    rules: tuple = ()
    base_dir: Path = None       # where token_command runs

    @property
    def intake(self):
        return f"imap:{self.name}"

    def secret(self):
        """The password, read now (the file may have been rotated)."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip("\r\n")
        return self.password or ""

    def find_rule(self, name):
        return next((r for r in self.rules if r.name == name), None)


def scanners_of(settings):
    """The scanners of config/scanners.yaml, read and checked on first use (ConfigError)."""
    if "scanners" not in settings.extra:
        path = settings.find("config", FILE)
        scanners = ()
        if path.exists():
            scanners = tuple(_scanners(path, load_yaml(path, "scanners"), settings))
            settings.files["scanners"] = path
        settings.extra["scanners"] = scanners
    return settings.extra["scanners"]


def _scanners(path, items, settings):
    names = set()
    for index, entry in enumerate(items):
        where = f"scanners[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, where, "must be a mapping", "each scanner has name, host, username, ...")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(path, f"{where}.name", f"{name!r} is not a scanner name",
                              "letters, digits, '.', '_' and '-', e.g. support-mailbox")
        where = f"scanners[{name}]"
        if name in names:
            raise ConfigError(path, f"{where}.name", "is used by another scanner", "give every scanner its own name")
        names.add(name)
        yield _scanner(path, where, entry, settings)


def _check(path, where, cond, problem, hint):
    if not cond:
        raise ConfigError(path, where, problem, hint)


def _choice(path, where, entry, key, choices):
    value = entry.get(key, DEFAULTS[key])
    _check(path, f"{where}.{key}", value in choices, f"{value!r} is not one of {', '.join(choices)}",
           f"use one of: {', '.join(choices)}")
    return value


def _bool(path, where, entry, key, defaults=DEFAULTS):
    value = entry.get(key, defaults[key])
    _check(path, f"{where}.{key}", isinstance(value, bool), f"{value!r} is not true or false", "write true or false")
    return value


def _text(path, where, entry, key, required=False, hint="give a value"):
    value = entry.get(key)
    if value is None and not required:
        return None
    _check(path, f"{where}.{key}", isinstance(value, str) and value.strip(),
           "is missing" if value is None else f"{value!r} is not text", hint)
    return value.strip()


def _folders(path, where, value, default):
    if value is None:
        return default
    if isinstance(value, str):
        value = [value]
    _check(path, where, isinstance(value, list) and value and all(isinstance(f, str) and f.strip() for f in value),
           "must be a non-empty list of folder names", "write folders: [INBOX]")
    # INBOX is case-insensitive (RFC 3501 5.1); a folder listed twice is read once.
    names = ("INBOX" if f.strip().upper() == "INBOX" else f.strip() for f in value)
    return tuple(dict.fromkeys(names))


def _scanner(path, where, entry, settings):
    unknown = sorted(set(entry) - set(SCANNER_KEYS))
    _check(path, f"{where}.{unknown[0]}" if unknown else where, not unknown, "unknown key",
           f"scanners take: {', '.join(SCANNER_KEYS)}")
    security = _choice(path, where, entry, "security", SECURITY)
    auth = _choice(path, where, entry, "auth", AUTH)
    port = entry.get("port", DEFAULT_PORTS[security])
    _check(path, f"{where}.port", isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536,
           f"{port!r} is not a port number", "write 993 (ssl) or 143 (starttls, none)")
    interval = entry.get("interval", DEFAULTS["interval"])
    _check(path, f"{where}.interval", isinstance(interval, (int, float)) and not isinstance(interval, bool)
           and interval > 0, f"{interval!r} is not a positive number of seconds", "write e.g. interval: 60")
    values = dict(
        name=entry["name"], active=_bool(path, where, entry, "active"),
        host=_text(path, where, entry, "host", True, "the IMAP server, e.g. outlook.office365.com"),
        port=port, security=security, verify_certificate=_bool(path, where, entry, "verify_certificate"),
        auth=auth, username=_text(path, where, entry, "username", True, "the login, e.g. support@example.com"),
        folders=_folders(path, f"{where}.folders", entry.get("folders"), DEFAULTS["folders"]),
        scan=_choice(path, where, entry, "scan", SCAN), interval=float(interval),
        idle=_bool(path, where, entry, "idle"),
        unmatched=_choice(path, where, entry, "unmatched", UNMATCHED),
        base_dir=settings.base_dir)
    values.update(_credentials(path, where, entry, auth, settings))
    values["rules"] = tuple(_rules(path, where, entry.get("rules"), values["folders"], settings))
    return ScannerConfig(**values)


def _credentials(path, where, entry, auth, settings):
    token_command = _text(path, where, entry, "token_command", hint="a command that prints an access token")
    mailbox = _text(path, where, entry, "mailbox", hint="the shared mailbox's address")
    password = entry.get("password")
    password_file = _text(path, where, entry, "password_file", hint="a file holding the password")
    if auth == "xoauth2":
        _check(path, f"{where}.token_command", token_command, "is missing (auth: xoauth2)",
               "give a command that prints a current access token")
        _check(path, f"{where}.password", password is None and password_file is None,
               "a password is not used with auth: xoauth2", "remove password/password_file, or use auth: password")
        return {"token_command": token_command, "mailbox": mailbox}
    _check(path, f"{where}.token_command", token_command is None, "is only used with auth: xoauth2",
           "remove it, or set auth: xoauth2")
    _check(path, f"{where}.mailbox", mailbox is None, "is only used with auth: xoauth2 (shared mailboxes)",
           "remove it, or set auth: xoauth2")
    _check(path, f"{where}.password", password is None or password_file is None,
           "both password and password_file are given", "keep password_file only")
    if password_file is not None:
        file = Path(password_file)
        file = file if file.is_absolute() else (settings.base_dir / file)
        _check(path, f"{where}.password_file", file.is_file(), f"{file} does not exist",
               "create it (chmod 600) with the password on one line; paths are relative to the ini")
        return {"password_file": file}
    _check(path, f"{where}.password_file", password is not None, "is missing",
           "give password_file: secrets/NAME.pass (relative to the ini)")
    _check(path, f"{where}.password", isinstance(password, (str, int)) and not isinstance(password, bool),
           "is not text", "quote the password, or better use password_file")
    key = (str(path), where)
    if key not in _warned:
        _warned.add(key)
        print(f"connector: warning: {path}: {where}.password: the password is written in the file; "
              "prefer password_file with chmod 600", file=sys.stderr)
    return {"password": str(password)}


def _rules(path, where, items, folders, settings):
    if items is None:
        return
    _check(path, f"{where}.rules", isinstance(items, list), "must be a list", "write rules: then '- name: ...' items")
    names = set()
    for index, entry in enumerate(items):
        at = f"{where}.rules[{index}]"
        _check(path, at, isinstance(entry, dict), "must be a mapping", "a rule has name, conditions, actions")
        name = entry.get("name")
        _check(path, f"{at}.name", isinstance(name, str) and name.strip(), "is missing", "give the rule a name")
        at = f"{where}.rules[{name}]"
        _check(path, f"{at}.name", name not in names, "is used by another rule of this scanner",
               "give every rule its own name")
        names.add(name)
        yield _rule(path, at, entry, folders, settings)


def _rule(path, where, entry, folders, settings):
    unknown = sorted(set(entry) - set(RULE_KEYS))
    _check(path, f"{where}.{unknown[0]}" if unknown else where, not unknown, "unknown key",
           f"rules take: {', '.join(RULE_KEYS)}")
    rule_folders = _folders(path, f"{where}.folders", entry.get("folders"), ())
    for folder in rule_folders:
        _check(path, f"{where}.folders", folder in folders, f"{folder!r} is not one of the scanner's folders",
               f"the scanner reads {', '.join(folders)}; add the folder there first")
    sensitive = _bool(path, where, entry, "case_sensitive", RULE_DEFAULTS)
    try:
        conditions = parse_conditions(entry.get("conditions"), sensitive)
    except ConditionError as exc:
        raise ConfigError(path, f"{where}.{exc.where}", exc.problem, exc.hint) from None
    actions = entry.get("actions")
    _check(path, f"{where}.actions", isinstance(actions, list) and actions, "must be a non-empty list",
           "write actions: [create_contact, create_or_update_ticket: {status: Open}]")
    parsed = tuple(_action(path, f"{where}.actions[{i}]", item, settings) for i, item in enumerate(actions))
    names = [a.name for a in parsed]
    for name in set(names) - {STOP}:
        _check(path, f"{where}.actions", names.count(name) == 1, f"{name} is listed twice", "list each action once")
    _check(path, f"{where}.actions", ASSIGN_INBOX not in names or CREATE_OR_UPDATE_TICKET in names,
           "assign_inbox without create_or_update_ticket", "assign_inbox places the tickets this rule creates: "
           "add create_or_update_ticket to the rule")
    _check(path, f"{where}.actions", not (MOVE_TO_FOLDER in names and DELETE_MESSAGE in names),
           "both move_to_folder and delete_message", "a message is either moved or deleted; keep one")
    return Rule(name=entry["name"], active=_bool(path, where, entry, "active", RULE_DEFAULTS),
                folders=rule_folders, conditions=conditions, actions=parsed)


def _action(path, where, item, settings):
    if isinstance(item, str):
        name, arg = item, None
    elif isinstance(item, dict) and len(item) == 1:
        name, arg = next(iter(item.items()))
    else:
        raise ConfigError(path, where, "must be an action name or a mapping with one action",
                          "write - mark_read or - move_to_folder: Processed")
    _check(path, where, name in ACTIONS, f"unknown action {name!r}", f"use one of: {', '.join(ACTIONS)}")
    if name == MOVE_TO_FOLDER:
        _check(path, f"{where}.{name}", isinstance(arg, str) and arg.strip(), "a move without a folder",
               "write move_to_folder: Processed")
        return Action(name, folder=arg.strip())
    if name == CREATE_OR_UPDATE_TICKET:
        return _ticket_action(path, f"{where}.{name}", arg or {}, settings)
    if name == ASSIGN_INBOX:
        found = inboxes.of(settings).get(arg) if isinstance(arg, str) else None
        _check(path, f"{where}.{name}", found is not None, f"{arg!r} is not an inbox of config/inboxes.yaml",
               f"write assign_inbox: NAME with one of: {inboxes.of(settings).names}")
        return Action(name, inbox=found.name)
    _check(path, f"{where}.{name}", arg is None, "takes no value", f"write just - {name}")
    return Action(name)


def _ticket_action(path, where, arg, settings):
    _check(path, where, isinstance(arg, dict), "must be a mapping of fields",
           "write create_or_update_ticket: {status: Open, manager: jane@example.com}")
    unknown = sorted(set(arg) - set(TICKET_KEYS))
    _check(path, f"{where}.{unknown[0]}" if unknown else where, not unknown, "unknown field",
           f"fields to set: {', '.join(TICKET_KEYS)}")
    fields = []
    for key in ("status", "priority"):
        if arg.get(key) is not None:
            value = arg[key]
            _check(path, f"{where}.{key}", isinstance(value, (str, int)) and not isinstance(value, bool)
                   and str(value).strip(), f"{value!r} is not text", f"write {key}: Open")
            fields.append((key, str(value).strip()))
    if arg.get("manager") is not None:
        manager = str(arg["manager"]).strip().lower()
        member = settings.staff_by_email(manager)
        _check(path, f"{where}.manager", member is not None, f"{manager} is not an active employee",
               "use a staff email listed in config/staff.yaml")
        fields.append(("manager", member.email))
    if "inbox" in arg:
        _check(path, f"{where}.inbox", isinstance(arg["inbox"], bool), f"{arg['inbox']!r} is not true or false",
               "write inbox: true (show the ticket in the inbox) or false")
        fields.append(("inbox", arg["inbox"]))
    match = arg.get("match")
    if match is not None:
        _check(path, f"{where}.match", isinstance(match, str) and match.strip(), "is empty",
               r"write a regex such as 'TT(\d+)'; the first group (or the digits) is the ticket number")
        problem = valid_regex(match)
        _check(path, f"{where}.match", problem is None, f"is not a valid regular expression: {problem}",
               r"write a regex such as 'TT(\d+)'; the first group (or the digits) is the ticket number")
    return Action(CREATE_OR_UPDATE_TICKET, fields=tuple(fields), match=match or "")
