"""What the pipeline reads about one message, and the plan it produces.

A `Context` is what the steps read: the spool entry, the parsed message, the
automatic-mail verdict, the sender and the referenced ticket. Its `plan` (a
`Plan`) is the decision: every value `apply` writes (action, ticket,
public/internal, recipients, each outgoing mail whole) is set there by the
deciding steps, so that `replay --dry-run` shows exactly what is sent.
`trace` records how the plan was reached: one `{step, link, result}` per
step, and per routing link tried.

A later feature extends the plan by adding a field here, set by the step that
decides it and written by `apply` (documented in the step's docstring and the
README's step table).
"""

from dataclasses import dataclass, field

from connector.health.template_failures import Renders

# Actions (the `action` of `replay --dry-run` and of each spool entry).
NEW_TICKET = "new_ticket"
FOLLOW_UP = "follow_up"
INTERNAL = "internal"
TRIAGE = "triage"
DUPLICATE = "duplicate"
IGNORED_AUTOMATIC = "ignored_automatic"
CONTACT_ONLY = "contact_only"
STAFF_COMMAND = "staff_command"  # a reply to a New Inbound Message Notice with commands (pipeline/commands.py)
FILED = (NEW_TICKET, FOLLOW_UP, INTERNAL)   # actions that file the message on a ticket
TRIAGED = (TRIAGE, IGNORED_AUTOMATIC)       # actions that leave a triage item

# Triage reasons.
REASON_NOTIFICATIONS = "notifications_address"
REASON_UNKNOWN_SENDER = "unknown_sender"
REASON_UNKNOWN_TICKET = "unknown_ticket"
REASON_STAFF_NO_TICKET = "staff_without_ticket"
REASON_UNAUTHENTICATED_STAFF = "unauthenticated_staff"  # an employee's From, not authenticated (sender step)
REASON_BOUNCE = "bounce"
REASON_PROCESSING_ERROR = "processing_error"

# Other reasons.
REASON_CUSTOMER = "customer"
REASON_SCANNER_RULE = "scanner_rule_match"  # a scanner rule's own `match` named the ticket
REASON_EMPLOYEE = "employee"
REASON_KEYWORD = "internal_keyword"
REASON_CC_ONLY = "public_address_not_in_to"
REASON_NEW = "no_ticket_reference"
REASON_CONTACT_ONLY = "scanner rule creates the contact only"
REASON_TRIAGE_NEW = "triage_create_ticket"     # staff made a ticket of a triage item
REASON_TRIAGE_ATTACHED = "triage_attached"      # staff filed a triage item into a ticket

# How the ticket was found (`Context.ref_via`).
VIA_SUBJECT = "subject"
VIA_REFERENCES = "references"
VIA_HINT = "hint"           # staff named the ticket (`inbound attach`)

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
    """One planned outgoing mail, whole: `apply` composes it from these values only."""

    kind: str                   # AUTO_RESPONSE | DISTRIBUTION | NOTICE | AUTO_EMAIL | ... (connector.store.models)
    rcpt: list                  # envelope recipients
    to: list
    cc: list = field(default_factory=list)
    bcc: list = field(default_factory=list)
    from_name: str = ""
    from_address: str = ""      # the From header's address (public or notifications address)
    mail_from: str = ""         # the envelope sender
    subject: str = ""
    template: str = ""          # the template the body was rendered from (auto-response, notice)
    body: str = ""              # the rendered text (a distribution carries the original's body)
    original_from: str = ""     # X-Connector-Original-From of a distribution copy
    message_id: str = ""
    automatic: bool = False     # auto-response, notice, auto-email: counted by the budgets
    loop: bool = False          # a copy or auto-email caused by a possible loop: counted too
    suppressed: bool = False    # automatic mail to a blocked recipient: an outbox row `suppressed`, never sent
    blocked: str = ""           # the block that applied (`connector.pipeline.blocking`), noted on the row
    event: int = None           # an auto-email: the index in `plan.events` of the event it is about (its
                                # row's auto_key is "<event id>:<address>", the id known when apply writes it)
    ticket_id: int = None       # the ticket it is about, when not the one the mail is filed on (a bounce's notices)

    @property
    def budgeted(self):
        """Counted by the loop budgets: the automatic mail a mail makes (a robot's mail can make
        it again and again) and what a possible loop caused. The auto-emails about a person's
        action (`connector.workqueue.auto_emails.Planner.plan_event`) are recorded unbudgeted."""
        return (self.automatic or self.loop) and not self.suppressed

    def summary(self):
        return {"kind": self.kind, "mail_from": self.mail_from, "rcpt": self.rcpt, "to": self.to, "cc": self.cc,
                "bcc": self.bcc, "from_name": self.from_name, "from_address": self.from_address,
                "subject": self.subject, "template": self.template or None, "message_id": self.message_id,
                "status": "suppressed" if self.suppressed else "pending", "blocked": self.blocked or None,
                "event": self.event}


@dataclass
class PlannedEvent:
    """A ticket event the plan writes (`connector.store.events`), in order; its auto-emails
    are planned with it (`connector.pipeline.ticket_events`)."""

    event: str                  # the event name (connector.store.events)
    by: str = None
    via: str = ""
    detail: dict = field(default_factory=dict)
    at: float = None            # when decided (what the auto-emails' templates show)
    ticket_id: int = None       # the ticket, when not the one the mail is filed on (a bounce's)
    decision: object = None     # who gets a mail about it and who not (`auto_emails.Decision`), for the log

    def summary(self):
        return {"event": self.event, "by": self.by, "via": self.via}


@dataclass
class Plan:
    """The decision: what `apply` writes, and nothing it has to work out itself."""

    action: str = ""
    reason: str = ""
    link: str = ""              # the routing link that fired
    ticket_number: int = None   # referenced, or the number the new ticket gets
    new_ticket: dict = None     # columns of the ticket to create (number and times added by apply)
    inboxes: list = field(default_factory=list)  # a new ticket's inbox entries: [(inbox name, placed_by)]
    ticket_changes: dict = field(default_factory=dict)   # columns of the ticket to change
    triage_status: str = ""
    triage_detail: str = ""     # the triage item's detail (a bounce: who failed, why)
    public: bool = True
    internal: bool = False
    distribute: bool = True
    set_inbox: bool = False
    reply_text: str = ""
    reply_extracted: bool = True  # False: reply_text is the full text (time budget spent)
    employee_recipients: list = field(default_factory=list)  # emails joining the ticket's employee recipients
    handed_only: list = field(default_factory=list)  # employees copied only because #forward/#inbox hands them the ticket
    external_recipients: list = field(default_factory=list)  # (address, kind) joining its external ones
    outgoing: list = field(default_factory=list)
    supersedes: list = field(default_factory=list)  # spool ids of copies triaged before this one
    notes: list = field(default_factory=list)       # what else was decided, for the log line
    suppressed: list = field(default_factory=list)  # mail a budget stopped: {kind, address, reason, detail}
    bounce: dict = None         # an attributed bounce (`connector.pipeline.attribute`): outbox row, reason, ticket
    blocks: list = field(default_factory=list)      # blocks to add: {kind, target, reason, source, hours, hard}
    events: list = field(default_factory=list)      # ticket events to write (PlannedEvent), in order
    renders: Renders = field(default_factory=Renders)  # which auto-email templates failed or rendered (status)
    commands: object = None     # staff commands of this mail (`connector.pipeline.commands.Commands`)


@dataclass
class Context:
    services: object
    spool: object               # SpoolEntry (may be unsaved for a dry run)
    templates: object = None    # outbound.compose.Templates: rendered while deciding
    parsed: object = None
    automatic: object = None
    sender: Sender = None
    ticket: object = None       # the referenced Ticket row, when it exists
    ref_via: str = ""           # VIA_SUBJECT | VIA_REFERENCES | VIA_HINT
    envelope: list = field(default_factory=list)    # recipients of this copy and its earlier copies
    associated: bool = None     # the sender is on the ticket (`route.associated`, asked once)
    plan: Plan = field(default_factory=Plan)
    trace: list = field(default_factory=list)       # {step, link, result}, in order
    done: bool = False          # decision final; later steps skipped
    previous: object = None     # the Context of this entry decided before, when deciding again under
                                # the filing lock: its pure results (parse, class, reply text) are reused
    extracted: str = None       # what reply extraction returned (`extract`), before commands change it
    sent_mark: int = 0          # the last `sent_mail` id when the decision began (`apply.plan_current`)
    budget_headroom: int = None  # how many more sent mails the tightest budget passed allowed
    replayed: bool = False      # decided again on a replay (`inbound replay`): its triage item is kept, not doubled

    @property
    def hints(self):
        return self.spool.hints or {}

    def record(self, step, link, result):
        self.trace.append({"step": step, "link": link, "result": result})

    def finish(self, action, reason, **fields):
        """The decision is final: `action` for `reason`; `fields` are further plan fields."""
        plan = self.plan
        plan.action, plan.reason, plan.distribute = action, reason, False
        for name, value in fields.items():
            setattr(plan, name, value)
        self.done = True

    def summary(self):
        """The decision as `replay --dry-run --json` prints it."""
        plan = self.plan
        return {
            "action": plan.action,
            "ticket": plan.ticket_number,
            "reason": plan.reason,
            "link": plan.link or None,
            "public": plan.public if plan.action in FILED else None,
            "internal": plan.internal,
            "sender": self.sender.address if self.sender else (self.parsed.from_addr if self.parsed else ""),
            "sender_kind": ("employee" if self.sender.is_staff else "contact") if self.sender else None,
            "recipients": sorted({a for out in plan.outgoing for a in out.rcpt}),
            "outgoing": [out.summary() for out in plan.outgoing],
            "inboxes": [{"inbox": name, "placed_by": why} for name, why in plan.inboxes],
            "events": [e.summary() for e in plan.events],
            "notes": plan.notes,
            "commands": plan.commands.summary() if plan.commands else None,
            "trace": self.trace,
        }
