"""Every key of `config/scanners.yaml`, declared once: name, type, default, doc.

`connector.scanners.config` checks the file against these declarations (the
keys a scanner or a rule takes, their defaults and choices);
`config/scanners.yaml.example` (`connector example-scanners`) and the key
tables of docs/scanners.md are generated from them, and a test keeps both
equal to what is generated, as `connector.settings.schema` does for the ini.
"""

import textwrap
from dataclasses import dataclass

REQUIRED = "(required)"
WIDTH = 88  # the example file's comment lines
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
SECURITY = ("ssl", "starttls", "none")
AUTH = ("password", "xoauth2")
SCAN = ("unread", "all_since_last")
UNMATCHED_PIPELINE = "pipeline"
UNMATCHED_LEAVE = "leave"
UNMATCHED = (UNMATCHED_PIPELINE, UNMATCHED_LEAVE)


@dataclass(frozen=True)
class Key:
    name: str
    kind: str          # text | bool | port | seconds | choice | folders | file | rules | conditions | actions
    default: object    # REQUIRED, None (optional, no default) or the value
    doc: str           # one line: the example file's comment and the docs' table
    more: str = ""     # the docs' table adds this
    choices: tuple = ()
    shown: str = ""    # how the default reads when it is not one value

    def default_text(self, code="`"):
        """The default as the docs (code="`") or the example file (code="") write it."""
        if self.shown:
            return self.shown
        if self.default is None:
            return ""
        if self.default == REQUIRED:
            return "required" if code else REQUIRED
        text = _yaml(self.default)
        return f"{code}{text}{code}"


def _yaml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return f"[{', '.join(map(str, value))}]"
    return str(value)


SCANNER = (
    Key("name", "text", REQUIRED, "letters, digits, `.`, `_`, `-`; used in logs, status, `scanners run NAME` "
        "and as the spool's intake `imap:NAME`"),
    Key("active", "bool", True, "`false`: configured but not run by the daemon; `scanners run NAME` still "
        "scans it once"),
    Key("host", "text", REQUIRED, "the IMAP server"),
    Key("port", "port", None, "993 with security ssl, 143 otherwise", shown="993 (ssl), 143"),
    Key("security", "choice", "ssl", "`ssl` (implicit TLS), `starttls`, `none`", choices=SECURITY),
    Key("verify_certificate", "bool", True, "`false` accepts any certificate: only for a server you trust "
        "on a network you trust"),
    Key("auth", "choice", "password", "`password` or `xoauth2`", choices=AUTH),
    Key("username", "text", REQUIRED, "the login; with xoauth2 the user the token belongs to"),
    Key("password_file", "file", None, "a file with the password on one line, relative to the ini's folder",
        "; read at every connect (rotation needs no restart)"),
    Key("password", "text", None, "inline password: allowed, with a warning; prefer `password_file`"),
    Key("token_command", "text", None, "xoauth2: a command that prints a current access token",
        " (run by `/bin/sh` in the ini's folder at every connect)"),
    Key("mailbox", "text", None, "xoauth2: the mailbox to open when it is not `username`'s own "
        "(Microsoft 365 shared mailbox)"),
    Key("folders", "folders", ("INBOX",), "the folders to scan",
        "; subfolders written with `/` whatever the server's separator, `INBOX` in any case (RFC 3501), "
        "a folder listed twice is read once"),
    Key("scan", "choice", "all_since_last", "`all_since_last`: every message above the last UID scanned, "
        "read in another client or not; `unread`: only unread messages",
        " (the first scan takes every message in the folder: move old mail elsewhere first if it must not "
        "become tickets). Either way each message (UID) is decided once: a message left untouched is not "
        "decided again at the next scan", choices=SCAN),
    Key("interval", "seconds", 60, "seconds between two scans"),
    Key("idle", "bool", True, "wait with IMAP IDLE on the first folder when the server offers it",
        ": new mail is filed within a second or two. The other folders are scanned every `interval`"),
    Key("unmatched", "choice", UNMATCHED_PIPELINE, "no rule matched: `pipeline` imports the message as if "
        "it came by SMTP; `leave` does not touch it", choices=UNMATCHED),
    Key("rules", "rules", (), "tried in order; the first active rule that matches decides", " (see below)"),
)

RULE = (
    Key("name", "text", REQUIRED, "unique within the scanner"),
    Key("active", "bool", True, "`false` disables the rule"),
    Key("folders", "folders", None, "the rule only applies to messages in these folders",
        shown="all the scanner's folders"),
    Key("case_sensitive", "bool", False, "for every condition of the rule (a condition may say otherwise)"),
    Key("conditions", "conditions", None, "a leaf `{field, op, value}`, a group `{any: [...]}` (OR) or "
        "`{all: [...]}` (AND), nested freely; a list at the top means `all`", shown="every message"),
    Key("actions", "actions", REQUIRED, "run in order", ", see below"),
)

TICKET = (
    Key("status", "text", None, "the ticket's status, e.g. Open"),
    Key("manager", "text", None, "a staff email of config/staff.yaml: the ticket's manager"),
    Key("inbox", "bool", None, "`true` shows the ticket in the inbox, `false` not"),
    Key("priority", "text", None, "the ticket's priority"),
    Key("match", "text", None, "a regex on the subject: its first group (or its digits) is the ticket number"),
)

DEFAULTS = {key.name: key.default for key in SCANNER}
RULE_DEFAULTS = {key.name: key.default for key in RULE}

EXAMPLE_HEAD = """\
# config/scanners.yaml: IMAP mail scanners. Copy this file to
# config/scanners.yaml next to your connector.ini and change what you need;
# `connector check-config` tells you what is wrong, if anything.
# See docs/scanners.md for the whole story, Microsoft 365 and Gmail included.
# (Generated by `connector example-scanners` from connector/scanners/schema.py.)
"""

EXAMPLE_BODY = r"""
scanners:
  - name: support-mailbox
    active: true
    host: imap.example.com
    port: 993
    security: ssl
    verify_certificate: true
    auth: password
    username: support@example.com
    password_file: secrets/support.pass
    folders: [INBOX]
    scan: all_since_last
    interval: 60
    idle: true
    unmatched: pipeline
    rules:
      - name: invoices
        active: true
        folders: [INBOX]
        conditions:
          any:
            - {field: subject, op: contains, value: invoice}
            - all:
                - {field: from, op: ends_with, value: "@billing.test"}
                - {field: has_attachment, op: equals, value: true}
        actions:
          - create_contact
          - create_or_update_ticket: {status: Billing}
          - move_to_folder: Processed
      - name: partner-tickets
        conditions:
          - {field: header:X-Partner-Ticket, op: matches, value: "^TT\\d+$"}
        actions:
          - create_or_update_ticket: {status: Open, match: "TT(\\d+)", inbox: true}
          - stop
      - name: newsletters
        conditions:
          any:
            - {field: header:List-Id, op: not_matches, value: "^$"}
            - {field: subject, op: starts_with, value: "Newsletter"}
        actions:
          - mark_read
          - move_to_folder: Newsletters

  - name: m365-shared
    active: false
    host: outlook.office365.com
    security: ssl
    auth: xoauth2
    username: helpdesk-app@example.com
    mailbox: shared-support@example.com
    token_command: "/usr/local/bin/m365-token --mailbox shared-support@example.com"
    folders: [INBOX]
    scan: all_since_last
    unmatched: pipeline
"""


def _comment_lines(keys):
    """`#   key: default` then the doc, wrapped, below it."""
    for key in keys:
        default = key.default_text(code="")
        yield f"#   {key.name}: {default}" if default else f"#   {key.name}"
        yield from textwrap.wrap(key.doc.replace("`", ""), WIDTH, initial_indent="#       ",
                                 subsequent_indent="#       ")


def render_example():
    """config/scanners.yaml.example: every key with its default and doc, then a sample."""
    lines = [EXAMPLE_HEAD.rstrip("\n"), "#", "# Every key of a scanner, with its default:"]
    lines += _comment_lines(SCANNER)
    lines += ["#", "# Every key of a rule:"]
    lines += _comment_lines(RULE)
    lines += ["#", "# The fields create_or_update_ticket sets (all optional):"]
    lines += _comment_lines(TICKET)
    lines += ["#", "# Conditions: any / all, nested freely; leaves {field, op, value}:",
              "#   fields     from to cc subject body header:<Name> has_attachment size",
              "#   operators  contains not_contains equals starts_with ends_with matches not_matches",
              "#              (size: equals greater_than less_than; has_attachment: equals true|false)",
              "# Actions, run in order: create_contact, create_or_update_ticket: {...},",
              "#   move_to_folder: NAME, delete_message, mark_read, stop,",
              "#   assign_inbox: NAME (with create_or_update_ticket: the inbox of a new ticket)"]
    return "\n".join(lines) + "\n" + EXAMPLE_BODY


def render_table(keys):
    """The docs' Markdown table of `keys`."""
    rows = ["| key | default | |", "|---|---|---|"]
    rows += [f"| `{key.name}` | {key.default_text()} | {key.doc}{key.more} |" for key in keys]
    return "\n".join(rows) + "\n"
