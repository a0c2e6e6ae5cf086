"""Scanner rules (seed 003, "Setting Up Conditions and Actions"): the first active
rule whose folders and conditions match a message decides what becomes of it.

A decision has two halves, done in this order by `connector.intake.imap`:

1. the import (`create_contact`, `create_or_update_ticket`, or no rule matched
   with `unmatched: pipeline`): the raw message goes to the spool with hints
   for the pipeline, and is flagged \\Seen once the spool has committed it;
2. the mailbox actions (`mark_read`, then `move_to_folder` or
   `delete_message`), only after that commit.

`stop` ends the rule's action list (later actions are not run); no further
rule is ever tried after the first match, `stop` or not.
"""

import re
from dataclasses import dataclass, field

from connector.scanners.conditions import MessageFields
from connector.scanners.schema import UNMATCHED_PIPELINE

CREATE_CONTACT = "create_contact"
CREATE_OR_UPDATE_TICKET = "create_or_update_ticket"
MOVE_TO_FOLDER = "move_to_folder"
DELETE_MESSAGE = "delete_message"
MARK_READ = "mark_read"
STOP = "stop"
ASSIGN_INBOX = "assign_inbox"   # a new ticket's inbox entry (config/inboxes.yaml), a hint to the pipeline
ACTIONS = (CREATE_CONTACT, CREATE_OR_UPDATE_TICKET, MOVE_TO_FOLDER, DELETE_MESSAGE, MARK_READ, STOP, ASSIGN_INBOX)


@dataclass(frozen=True)
class Action:
    name: str
    folder: str = ""                            # move_to_folder
    fields: tuple = ()                          # create_or_update_ticket: ((name, value), ...)
    match: str = ""                             # create_or_update_ticket: ticket number regex
    inbox: str = ""                             # assign_inbox: the inbox's name

    def describe(self, sender="", imports=True):
        """What this action would do; `imports`: whether its rule puts the message in the spool."""
        after = "after the spool commit" if imports else \
            "without importing it (the rule has neither create_contact nor create_or_update_ticket)"
        if self.name == CREATE_CONTACT:
            return f"create_contact: the sender {sender or '(none)'} becomes a contact if not one yet"
        if self.name == CREATE_OR_UPDATE_TICKET:
            fields = ", ".join(f"{k}={v!r}" for k, v in self.fields) or "no fields"
            how = f"ticket number by /{self.match}/ on the subject" if self.match else "ticket tag in the subject"
            return f"create_or_update_ticket: new ticket or follow-up ({how}); set {fields}"
        if self.name == MOVE_TO_FOLDER:
            return f"move_to_folder: moved to {self.folder!r} {after}"
        if self.name == DELETE_MESSAGE:
            return f"delete_message: deleted from the mailbox {after}"
        if self.name == MARK_READ:
            return "mark_read: flagged \\Seen"
        if self.name == ASSIGN_INBOX:
            return f"assign_inbox: a new ticket gets an entry in the inbox {self.inbox}"
        return "stop: no further action"


@dataclass(frozen=True)
class Rule:
    name: str
    active: bool
    folders: tuple                              # empty: all the scanner's folders
    conditions: object                          # conditions.Group | Leaf | MatchAll
    actions: tuple

    def applies_to(self, folder):
        return self.active and (not self.folders or folder in self.folders)

    @property
    def effective_actions(self):
        """The actions that run: up to and including `stop`."""
        out = []
        for action in self.actions:
            out.append(action)
            if action.name == STOP:
                break
        return tuple(out)


@dataclass
class Decision:
    """What to do with one message; `hints` go to the pipeline with the spool entry."""

    rule: str = None
    imports: bool = False
    hints: dict = None
    mark_read: bool = False
    move_to: str = None
    delete: bool = False
    described: list = field(default_factory=list)

    @property
    def touches_mailbox(self):
        return self.imports or self.mark_read or bool(self.move_to) or self.delete

    def as_json(self):
        return {"rule": self.rule, "import": self.imports, "hints": self.hints, "mark_read": self.mark_read,
                "move_to_folder": self.move_to, "delete_message": self.delete, "actions": self.described}


def hints_for(scanner_name, rule):
    """The pipeline's instructions for a message this rule imports (None: imports nothing)."""
    names = [a.name for a in rule.effective_actions]
    if CREATE_OR_UPDATE_TICKET not in names and CREATE_CONTACT not in names:
        return None
    hints = {"scanner": scanner_name, "rule": rule.name}
    ticket = next((a for a in rule.effective_actions if a.name == CREATE_OR_UPDATE_TICKET), None)
    if ticket is None:
        hints["create_ticket"] = False
        return hints
    hints["ticket_fields"] = dict(ticket.fields)
    assign = next((a for a in rule.effective_actions if a.name == ASSIGN_INBOX), None)
    if assign is not None:
        hints["assign_inbox"] = assign.inbox
    if ticket.match:
        hints["ticket_match"] = ticket.match
    return hints


def decide(scanner, folder, raw, parsed=None):
    """The decision for `raw` found in `folder` of `scanner` (a ScannerConfig); the message is
    parsed only as far as the rules read it, unless `parsed` (`parse_message`) is given."""
    message = MessageFields(raw, parsed)
    for rule in scanner.rules:
        if not rule.applies_to(folder) or not rule.conditions.test(message):
            continue
        decision = Decision(rule=rule.name)
        hints = hints_for(scanner.name, rule)
        if hints is not None:
            decision.imports, decision.hints = True, hints
        for action in rule.effective_actions:
            if action.name == MARK_READ:
                decision.mark_read = True
            elif action.name == MOVE_TO_FOLDER:
                decision.move_to = action.folder
            elif action.name == DELETE_MESSAGE:
                decision.delete = True
            decision.described.append(action.describe(message.head.from_addr, decision.imports))
        return decision
    if scanner.unmatched == UNMATCHED_PIPELINE:
        return Decision(imports=True, hints=None,
                        described=["no rule matched: imported as if it came by SMTP (unmatched: pipeline)"])
    return Decision(described=["no rule matched: left untouched in the mailbox (unmatched: leave)"])


def valid_regex(pattern):
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None
