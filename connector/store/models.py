"""The helpdesk's records: spool, tickets, recipients, messages, triage, outbox, scanner state.

SQLite in WAL mode is the embedded default; the models use only portable
field types, so the same models run on PostgreSQL (`connector.store.db`).
"""

import json

import peewee

database = peewee.DatabaseProxy()

# Spool states: where a received message stands.
SPOOL_QUEUED = "queued"        # committed, not yet processed
SPOOL_DONE = "done"            # processed: filed, triaged or ignored (see `action`)
SPOOL_SHUNTED = "shunted"      # processing raised; kept with its reason, replayable
SPOOL_PROCESSING_STATES = (SPOOL_QUEUED, SPOOL_DONE, SPOOL_SHUNTED)

# Triage statuses (seed 000).
TRIAGE_AWAITING_REVIEW = "awaiting_review"
TRIAGE_NEEDS_ATTENTION = "needs_attention"
TRIAGE_CLOSED = "closed"
TRIAGE_STATUSES = (TRIAGE_AWAITING_REVIEW, TRIAGE_NEEDS_ATTENTION, TRIAGE_CLOSED)

# A new ticket's status (seed 004); staff change it with `tickets set --status`.
TICKET_NEW = "New"

# A message's direction: a mail we received, or one we wrote (an auto-response).
INBOUND = "in"
OUTBOUND = "out"

# How an external recipient was addressed, and is addressed by the copies.
RECIPIENT_TO, RECIPIENT_CC, RECIPIENT_BCC = "to", "cc", "bcc"

# Kinds of outgoing mail (the outbox's and sent_mail's `kind`).
AUTO_RESPONSE = "auto_response"
DISTRIBUTION = "distribution"
NOTICE = "notice"
AUTO_EMAIL = "auto_email"       # an automatic mail on a ticket event (config/auto_emails.yaml)
COMMAND_REPLY = "command_reply"  # the outcome of a staff mail's commands, mailed back (pipeline/commands.py)

# Outbox statuses (`outbox list --status`).
OUTBOX_PENDING = "pending"      # waiting for its first attempt (or retried by the operator)
OUTBOX_DEFERRED = "deferred"    # a recipient was refused temporarily: retried with backoff
OUTBOX_SENT = "sent"            # done, at least one recipient accepted (the refused ones: `recipients`)
OUTBOX_FAILED = "failed"        # no recipient accepted: refused permanently or given up
OUTBOX_CANCELLED = "cancelled"  # stopped by the operator (`outbox cancel`)
OUTBOX_BOUNCED = "bounced"      # accepted by the relay, then a bounce came back for it (`blocked`: why)
OUTBOX_SUPPRESSED = "suppressed"  # automatic mail to a blocked address or ticket: never sent (`blocked`: why)
OUTBOX_STATUSES = (OUTBOX_PENDING, OUTBOX_DEFERRED, OUTBOX_SENT, OUTBOX_FAILED, OUTBOX_CANCELLED, OUTBOX_BOUNCED,
                   OUTBOX_SUPPRESSED)
OUTBOX_ACTIVE = (OUTBOX_PENDING, OUTBOX_DEFERRED)  # still to be delivered

# Inbox entry statuses (seed 001): a ticket's place in an inbox.
ENTRY_OPEN = "open"
ENTRY_COMPLETED = "completed"
ENTRY_CANCELLED = "cancelled"
ENTRY_FORWARDED = "forwarded"   # moved on: a new open entry exists in the target inbox
ENTRY_STATUSES = (ENTRY_OPEN, ENTRY_COMPLETED, ENTRY_CANCELLED, ENTRY_FORWARDED)

# Scanner message states (`ScannerMessage.state`): what became of one message of a mailbox.
SCANNER_IMPORTED = "imported"  # in the spool; mailbox actions still to do
SCANNER_DONE = "done"          # imported and its mailbox actions done
SCANNER_LEFT = "left"          # not imported (leave / rule without import); actions done
SCANNER_FAILED = "failed"      # could not be fetched, decided or acted on; retried
SCANNER_GIVEN_UP = "given_up"  # failed too often; kept on the server, reported
SCANNER_FINAL = (SCANNER_DONE, SCANNER_LEFT, SCANNER_GIVEN_UP)


class CharField(peewee.CharField):
    """Text of any length on both backends: a plain VARCHAR, as SQLite always read peewee's
    VARCHAR(255); PostgreSQL would refuse a longer Message-ID or address in one."""

    def get_modifiers(self):
        return None


_to_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False), built once


class JSONField(peewee.TextField):
    def db_value(self, value):
        return None if value is None else _to_json(value)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database


class SpoolEntry(BaseModel):
    """A received message exactly as it arrived, with its envelope.

    Lives in its own file (attached as schema `spool`), append-only, written
    only by the intakes: accepting mail never waits for the worker's writes.
    What became of an entry is its `Processing` row in the main database.
    """

    received_at = peewee.FloatField()
    intake = CharField()              # smtp | lmtp | pipe | replay | imap:<scanner>
    mail_from = peewee.TextField(null=True)  # envelope sender; '' = null path, None = unknown
    rcpt_to = JSONField(default=list)
    raw = peewee.BlobField()
    size = peewee.IntegerField()
    sha256 = CharField()
    hints = JSONField(null=True)             # intake-provided instructions (scanner rules)

    class Meta:
        table_name = "spool"
        schema = "spool"


class Processing(BaseModel):
    """What the pipeline made of a spool entry; no row (or `queued`) = still to do.

    Written in the same transaction as the ticket it files, so a crash leaves
    either both or neither.
    """

    spool_id = peewee.IntegerField(primary_key=True)
    state = CharField(default=SPOOL_QUEUED, index=True)
    action = CharField(null=True)     # the pipeline's decision, when done
    reason = peewee.TextField(null=True)
    message_id = peewee.TextField(null=True)  # '' for a mail without one
    sha256 = CharField(null=True)
    attempts = peewee.IntegerField(default=0)
    processed_at = peewee.FloatField(null=True, index=True)  # metrics read what was filed since a scrape
    node = CharField(null=True)       # the `[node] name` of the worker that filed (or shunted) it

    class Meta:
        # dedupe looks up (Message-ID, bytes); mail without a Message-ID all shares '',
        # so the bytes must be in the index too, or each lookup scans all of them
        indexes = ((("message_id", "sha256"), False),)


class Contact(BaseModel):
    email = CharField(unique=True)
    name = peewee.TextField(default="")
    account = peewee.TextField(null=True)
    created_at = peewee.FloatField()


class Ticket(BaseModel):
    number = peewee.IntegerField(unique=True)
    subject = peewee.TextField(default="")
    status = CharField(default=TICKET_NEW)
    priority = CharField(null=True)
    in_inbox = peewee.BooleanField(default=True)
    contact = peewee.ForeignKeyField(Contact, null=True, backref="tickets")
    manager = CharField(null=True)    # staff email
    account = peewee.TextField(null=True)
    created_at = peewee.FloatField()
    updated_at = peewee.FloatField()


class ExternalRecipient(BaseModel):
    # lookups by ticket use the unique (ticket, address) index (no index of the ticket alone)
    ticket = peewee.ForeignKeyField(Ticket, backref="external_recipients", on_delete="CASCADE", index=False)
    address = CharField()
    kind = CharField(default=RECIPIENT_TO)   # to | cc | bcc

    class Meta:
        indexes = ((("ticket", "address"), True),)


class EmployeeRecipient(BaseModel):
    # lookups by ticket use the unique (ticket, email) index
    ticket = peewee.ForeignKeyField(Ticket, backref="employee_recipients", on_delete="CASCADE", index=False)
    email = CharField()

    class Meta:
        indexes = ((("ticket", "email"), True),)


class Message(BaseModel):
    """One email in a ticket's history (inbound, or an automatic mail we wrote)."""

    ticket = peewee.ForeignKeyField(Ticket, null=True, backref="messages", on_delete="CASCADE")
    spool_id = peewee.IntegerField(null=True)   # the SpoolEntry holding the original bytes
    direction = CharField()          # in | out
    from_addr = peewee.TextField(default="")
    from_name = peewee.TextField(default="")
    to = JSONField(default=list)
    cc = JSONField(default=list)
    subject = peewee.TextField(default="")
    public = peewee.BooleanField(default=True)
    internal = peewee.BooleanField(default=False)
    text = peewee.TextField(default="")
    reply_text = peewee.TextField(default="")
    rules_version = CharField(default="")
    message_id = peewee.TextField(default="")   # looked up in thread_ref and processing, not here
    attachments = JSONField(default=list)
    received_at = peewee.FloatField()


class ThreadRef(BaseModel):
    """A Message-ID we filed or sent, so replies with an edited subject still thread."""

    message_id = CharField(unique=True)
    ticket = peewee.ForeignKeyField(Ticket, on_delete="CASCADE")


class TriageItem(BaseModel):
    """An inbound message that could not be routed (seed 000)."""

    spool_id = peewee.IntegerField()
    status = CharField(default=TRIAGE_AWAITING_REVIEW, index=True)
    reason = CharField()
    detail = peewee.TextField(default="")
    from_addr = peewee.TextField(default="")
    subject = peewee.TextField(default="")
    ticket_number = peewee.IntegerField(null=True)
    received_at = peewee.FloatField()

    class Meta:
        table_name = "triage"


class OutboxEntry(BaseModel):
    """An outgoing mail, rendered, waiting for (or done with) delivery."""

    ticket = peewee.ForeignKeyField(Ticket, null=True, on_delete="SET NULL")
    cause_id = peewee.IntegerField(null=True)  # the spool entry of the inbound message that caused it
    kind = CharField()                # AUTO_RESPONSE | DISTRIBUTION | NOTICE | COMMAND_REPLY
    mail_from = peewee.TextField()
    rcpt = JSONField()                        # envelope recipients
    to = JSONField(default=list)
    cc = JSONField(default=list)
    bcc = JSONField(default=list)
    subject = peewee.TextField(default="")
    message_id = peewee.TextField(default="")
    # the mail itself is in `outbox_body` (OutboxBody): a status update never rewrites it
    status = CharField(default=OUTBOX_PENDING, index=True)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.FloatField(index=True)
    last_error = peewee.TextField(null=True)
    created_at = peewee.FloatField()
    sent_at = peewee.FloatField(null=True)
    # per envelope recipient, once attempted: {address: {"state": accepted|refused|deferred,
    # "reply": the relay's answer, "at": time}}; accepted ones are never sent again
    recipients = JSONField(null=True)
    queued_at = peewee.FloatField(null=True)  # give_up_after counts from here (a retry resets it), else created_at
    # a block that applied (`connector.store.blocks`): why a `suppressed` row is not sent, that a
    # person's mail goes to a blocked address, or the reason a `bounced` row bounced
    blocked = peewee.TextField(null=True)
    # an auto-email's "<event id>:<recipient>": unique, so one event mails one address once
    auto_key = peewee.TextField(null=True, unique=True)
    # PostgreSQL, several nodes (`connector.store.claims`): the node that last claimed the row for a
    # delivery attempt, its process's token, and until when (the database's clock; NULL: released)
    claimed_by = CharField(null=True)
    claim_token = CharField(null=True)
    claimed_until = peewee.FloatField(null=True)
    sent_by = CharField(null=True)    # the node whose delivery the relay accepted it from

    class Meta:
        table_name = "outbox"


class OutboxBody(BaseModel):
    """An outgoing mail's bytes, apart from its row (`connector.store.outbox`): written once
    when the row is queued, read once by delivery when it sends, deleted by `[retention]
    raw_days` after it was sent. Kept out of `outbox` so that the status update of each
    attempt writes the row's small page, not the mail's overflow pages again."""

    outbox_id = peewee.IntegerField(primary_key=True)   # the OutboxEntry's id
    raw = peewee.BlobField()

    class Meta:
        table_name = "outbox_body"


class SentMail(BaseModel):
    """One recipient of one mail we queued: what the loop and flood budgets count.

    Plain columns (address and domain lower-cased), never JSON, so every
    budget is an indexed COUNT. `budgeted` marks what a loop makes us send:
    the automatic mail a mail causes (auto-responses, notices, its
    auto-emails) and the copies of a possible loop (`Outgoing.budgeted`); a copy of a
    person's mail is recorded too (unbudgeted): a quick answer to it is how
    a robot without RFC 3834 headers is recognised. Auto-emails about a
    person's action and command receipts are recorded unbudgeted, and a
    quick answer to them is no loop (`queries.answerable_since`).
    """

    address = CharField()
    domain = CharField()
    ticket = peewee.IntegerField(null=True)   # the ticket number; None for notices
    kind = CharField()                 # auto_response | distribution | notice | auto_email | command_reply
    budgeted = peewee.BooleanField(default=False)
    at = peewee.FloatField(index=True)       # rows older than the budgets' hour are pruned

    class Meta:
        table_name = "sent_mail"
        indexes = ((("address", "ticket", "at"), False), (("address", "kind", "at"), False),
                   (("domain", "kind", "at"), False), (("kind", "at"), False))


class DeliveryAttempt(BaseModel):
    """One attempt to deliver an outbox row; `detail` has the relay's answer for each recipient tried."""

    # no index: written once per attempt, read by id only (`/metrics`); one fewer page per delivery commit
    outbox = peewee.ForeignKeyField(OutboxEntry, backref="delivery_attempts", on_delete="CASCADE", index=False)
    at = peewee.FloatField()
    ok = peewee.BooleanField()
    detail = peewee.TextField(default="")


class TicketEvent(BaseModel):
    """One thing that happened to a ticket (`tickets history`), written in the
    same transaction as the change it records. Names: `connector.store.events`."""

    ticket = peewee.ForeignKeyField(Ticket, backref="events", on_delete="CASCADE", index=False)  # (ticket, at)
    at = peewee.FloatField()
    event = CharField()
    by = peewee.TextField(null=True)         # who: a staff or sender address; None for the system
    via = CharField()                 # mail | cli | scanner | system
    detail = JSONField(default=dict)

    class Meta:
        table_name = "ticket_event"
        indexes = ((("ticket", "at"), False), (("event", "at"), False))


class InboxEntry(BaseModel):
    """A ticket's place in an inbox (seed 001). At most one open entry per
    (ticket, inbox): a partial unique index, see `InboxEntry.add_index` below."""

    ticket = peewee.ForeignKeyField(Ticket, backref="inbox_entries", on_delete="CASCADE")
    inbox = CharField()               # the inbox's name as configured in inboxes.yaml
    owner = CharField(null=True)      # staff email
    status = CharField(default=ENTRY_OPEN)
    due_type = CharField(null=True)
    due_at = peewee.FloatField(null=True)    # epoch seconds (ISO 8601 with zone in JSON)
    message = peewee.TextField(null=True)
    created_at = peewee.FloatField()
    created_by = CharField(null=True)
    forwarded_from = peewee.IntegerField(null=True)  # the entry this one was forwarded from
    deadline_fired = peewee.FloatField(null=True)    # the due_at whose deadline_passed has fired

    class Meta:
        table_name = "inbox_entry"
        indexes = ((("inbox", "status"), False), (("ticket", "status"), False))


InboxEntry.add_index(InboxEntry.index(InboxEntry.ticket, InboxEntry.inbox, unique=True,
                                      where=(InboxEntry.status == ENTRY_OPEN)))


class TriageTombstone(BaseModel):
    """What is left of a triage item deleted as spam or phishing (`inbound delete`): its
    raw bytes are gone; this says what the mail was, who deleted it and when, so the same
    mail delivered again is recognised (`classify`) and `message export` can say so."""

    item_id = peewee.IntegerField(unique=True)   # the deleted triage item's id
    spool_id = peewee.IntegerField(index=True)
    message_id = peewee.TextField(default="", index=True)  # '' for a mail without one
    from_addr = peewee.TextField(default="")
    subject = peewee.TextField(default="")
    sha256 = CharField(index=True)
    deleted_by = peewee.TextField()              # staff email
    deleted_at = peewee.FloatField()

    class Meta:
        table_name = "triage_tombstone"


class ScannerFolder(BaseModel):
    """An IMAP scanner's folder: its UIDVALIDITY and the highest UID scanned."""

    scanner = CharField()
    folder = CharField()
    uidvalidity = peewee.IntegerField(null=True)
    last_uid = peewee.IntegerField(default=0)
    updated_at = peewee.FloatField(null=True)

    class Meta:
        table_name = "scanner_folder"
        indexes = ((("scanner", "folder"), True),)


class ScannerStatus(BaseModel):
    """An IMAP scanner's last success, last error (text, time) and messages imported."""

    scanner = CharField(unique=True)
    last_success = peewee.FloatField(null=True)
    last_error = peewee.TextField(null=True)
    last_error_at = peewee.FloatField(null=True)
    imported = peewee.IntegerField(default=0)

    class Meta:
        table_name = "scanner_status"


class ScannerMessage(BaseModel):
    """The outcome (SCANNER_* state) per (scanner, folder, UIDVALIDITY, UID); `sha256` of an
    imported message lets a rescan recognise it under another UID or in another folder."""

    scanner = CharField()
    folder = CharField()
    uidvalidity = peewee.IntegerField()
    uid = peewee.IntegerField()
    state = CharField()
    rule = CharField(null=True)
    spool_id = peewee.IntegerField(null=True)
    sha256 = CharField(null=True)
    attempts = peewee.IntegerField(default=0)
    error = peewee.TextField(null=True)
    updated_at = peewee.FloatField()

    class Meta:
        table_name = "scanner_message"
        indexes = ((("scanner", "folder", "uidvalidity", "uid"), True), (("scanner", "sha256"), False))


# Block kinds and statuses (`connector blocks list`).
BLOCK_ADDRESS = "address"
BLOCK_TICKET = "ticket"
BLOCK_ACTIVE = "active"
BLOCK_LIFTED = "lifted"     # by `blocks lift` or a later successful delivery
BLOCK_EXPIRED = "expired"   # shown for an active row past `until`; never written


class Block(BaseModel):
    """Automatic mail to `target` (an address, lower-cased, or a ticket number) is held back until `until`."""

    target = CharField()
    kind = CharField()                # BLOCK_ADDRESS | BLOCK_TICKET
    reason = CharField()              # sisimai's reason (mailboxfull, userunknown, ...) or `loop`
    source = peewee.TextField(default="")    # what caused it: the bounce's spool entry, outbox row
    created_at = peewee.FloatField()
    until = peewee.FloatField()
    status = CharField(default=BLOCK_ACTIVE)
    hard = peewee.BooleanField(default=False)   # a hard bounce: lifted by a later successful delivery

    class Meta:
        table_name = "block"
        indexes = ((("target", "status", "until"), False), (("status", "until"), False))


class Node(BaseModel):
    """A connector node (one daemon, `[node] name`) and its last heartbeat: `connector nodes`."""

    name = CharField(unique=True)
    version = CharField()
    pid = peewee.IntegerField()
    run = CharField(null=True)               # the daemon's run id (its daemon.lock's): a restart has another
    started_at = peewee.FloatField()
    heartbeat_at = peewee.FloatField()
    holds = JSONField(default=list)          # what it runs: its background processes (its leases: `lease`)

    class Meta:
        table_name = "node"


class Lease(BaseModel):
    """Who runs a singleton (an IMAP scanner, the deadline timer, pruning) until when:
    `connector.store.leases`. Times are the database's clock; a released lease has
    expired (`expires_at` set to the release time) and keeps its last holder."""

    name = CharField(unique=True)            # scanner:<name>, deadlines, retention
    node = CharField()                       # the holder's [node] name
    pid = peewee.IntegerField()              # the holding process on that node
    token = CharField()                      # the holding process's own random id (names and pids can repeat)
    acquired_at = peewee.FloatField()
    expires_at = peewee.FloatField()

    class Meta:
        table_name = "lease"


class FilingClaim(BaseModel):
    """A spool entry a filing worker has taken (PostgreSQL, `connector.store.claims`): by which
    node and process, until when (the database's clock). Deleted with the filing; one of a
    dead process comes back to the pool when `claimed_until` has passed."""

    spool_id = peewee.IntegerField(primary_key=True)
    claimed_by = CharField()
    claim_token = CharField(index=True)
    claimed_until = peewee.FloatField()

    class Meta:
        table_name = "filing_claim"


class StoreKey(BaseModel):
    """Which hmac.key this store's mail is signed with: a fingerprint, written by the first
    daemon (`connector.store.storekey`); every node of the store must have that key."""

    name = CharField(primary_key=True)   # "hmac"
    fingerprint = CharField()
    set_at = peewee.FloatField()

    class Meta:
        table_name = "store_key"


ALL_MODELS = (SpoolEntry, Processing, Contact, Ticket, ExternalRecipient, EmployeeRecipient, Message,
              ThreadRef, TriageItem, OutboxEntry, OutboxBody, SentMail, DeliveryAttempt, TicketEvent, InboxEntry,
              TriageTombstone, ScannerFolder, ScannerStatus, ScannerMessage, Block, Node,
              Lease, FilingClaim, StoreKey)
