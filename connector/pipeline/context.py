"""What the pipeline knows about one message while it decides, and the decision itself."""

from dataclasses import dataclass, field

# Actions (the `action` of `replay --dry-run` and of each spool entry).
NEW_TICKET = "new_ticket"
FOLLOW_UP = "follow_up"
INTERNAL = "internal"
TRIAGE = "triage"
DUPLICATE = "duplicate"
IGNORED_AUTOMATIC = "ignored_automatic"
CONTACT_ONLY = "contact_only"
STAFF_COMMAND = "staff_command"  # a reply to a New Inbound Message Notice with commands (pipeline/commands.py)

# Triage reasons.
R_NOTIFICATIONS = "notifications_address"
R_UNKNOWN_SENDER = "unknown_sender"
R_UNKNOWN_TICKET = "unknown_ticket"
R_STAFF_NO_TICKET = "staff_without_ticket"
R_UNAUTHENTICATED_STAFF = "unauthenticated_staff"  # an employee's From, not authenticated (sender step)
R_BOUNCE = "bounce"
R_PROCESSING_ERROR = "processing_error"

# Other reasons.
R_CUSTOMER = "customer"
R_SCANNER_RULE = "scanner_rule_match"  # a scanner rule's own `match` named the ticket
R_EMPLOYEE = "employee"
R_KEYWORD = "internal_keyword"
R_CC_ONLY = "public_address_not_in_to"
R_NEW = "no_ticket_reference"

# The rules_version of a message whose reply text is its full text: the time budget ran out.
REPLY_NOT_EXTRACTED = "not-extracted"


@dataclass
class Sender:
    address: str
    name: str
    staff: object = None        # settings.Staff when an active employee
    contact: object = None      # store Contact when known
    account: object = None      # settings.Account by domain
    unauthenticated: str = ""   # why an employee's From did not count as theirs (then staff is None)

    @property
    def is_staff(self):
        return self.staff is not None


@dataclass
class Outgoing:
    """One planned outgoing mail; rendered into an outbox row by `apply`."""

    kind: str                   # auto_response | distribution
    rcpt: list                  # envelope recipients
    to: list
    cc: list = field(default_factory=list)
    bcc: list = field(default_factory=list)
    from_name: str = ""
    subject: str = ""
    automatic: bool = False     # auto-response, notice: counted by the budgets
    loop: bool = False          # a copy caused by a possible loop: counted too

    @property
    def budgeted(self):
        return self.automatic or self.loop


@dataclass
class Context:
    services: object
    spool: object               # SpoolEntry (may be unsaved for a dry run)
    parsed: object = None
    automatic: object = None
    sender: Sender = None
    ticket_number: int = None   # referenced or to be created
    ticket: object = None       # the Ticket row, when it exists
    ref_via: str = ""           # subject | references | hint
    envelope: list = field(default_factory=list)    # recipients of this copy and its earlier copies
    supersedes: list = field(default_factory=list)  # spool ids of copies triaged before this one
    action: str = ""
    reason: str = ""
    triage_status: str = ""
    public: bool = True
    internal: bool = False
    distribute: bool = True
    set_inbox: bool = False
    reply_text: str = ""
    reply_extracted: bool = True  # False: reply_text is the full text (time budget spent)
    outgoing: list = field(default_factory=list)
    employee_defaults: list = field(default_factory=list)  # new ticket's employee recipients
    notes: list = field(default_factory=list)  # what else was decided, for the log line
    commands: object = None     # staff commands of this mail (pipeline/commands.py), run by apply
    suppressed: list = field(default_factory=list)  # mail a budget stopped: {kind, address, reason, detail}
    done: bool = False          # decision final; later steps skipped

    @property
    def hints(self):
        return self.spool.hints or {}

    def finish(self, action, reason, **fields):
        self.action, self.reason = action, reason
        for name, value in fields.items():
            setattr(self, name, value)
        self.done = True

    def summary(self):
        """The decision as `replay --dry-run --json` prints it."""
        return {
            "action": self.action,
            "ticket": self.ticket_number,
            "reason": self.reason,
            "public": self.public if self.action in (NEW_TICKET, FOLLOW_UP, INTERNAL) else None,
            "internal": self.internal,
            "sender": self.sender.address if self.sender else (self.parsed.from_addr if self.parsed else ""),
            "sender_kind": ("employee" if self.sender and self.sender.is_staff else "contact") if self.sender else None,
            "recipients": sorted({a for out in self.outgoing for a in out.rcpt}),
            "outgoing": [{"kind": o.kind, "to": o.to, "cc": o.cc, "bcc": o.bcc, "subject": o.subject}
                         for o in self.outgoing],
            "notes": self.notes,
        }
