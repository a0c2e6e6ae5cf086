"""Automatic e-mails on ticket events (seed 002; config/auto_emails.yaml).

Where it stands: the pipeline plans the auto-emails of the events a mail
writes in its decision (`connector.pipeline.ticket_events`: `replay --dry-run`
shows them) with `decide` and `Planner.outgoing` from here. Every other event
(an `inbox` or `tickets set` command, the deadline timer, an escalation, a
staff mail's commands) goes through `connector.store.events.record`: the
process's wiring (the worker's `configure`, the commands' settings load)
calls `install(settings)`, which makes `record` call `plan_event` in the
transaction of the change. Either way the mails are decided (`decide`),
rendered (`Planner.outgoing`) and blocked (`connector.pipeline.blocking.
apply_blocks`: a blocked recipient's mail is a `suppressed` row) the same
way, and written one outbox row (kind `auto_email`) per (event, recipient):
the row's `auto_key` "<event id>:<address>" is unique in the outbox, so a
worker killed at any instant and restarted, or a delivery retried, never
mails one address twice about one event. The delivery process sends the
rows like every other mail.

A template that fails to render on real values (it passed `check-config`'s
samples) leaves its mail out, logs `auto_email.render_failed` and, for mail
that is queued, is noted for `connector status` (`connector.health.
template_failures`, which says what clears it).

`decide` is the whole decision and changes nothing: `connector auto-emails
preview` prints it (with the blocks applied). Who never gets a mail, and why
(`Skipped.reason`):
  causing_person    the person whose action the event is (`event.by`), except the
                    requester's own confirmation of a new ticket
  duplicate         already a recipient of this event (another rule or group)
  failed_recipient  a `delivery_failed` event's failed address (never told of itself)
  confirmed         the requester of a new ticket already got its auto-response
                    (or the ticket_created mail)
  no_address        the group is empty for this ticket (no contact, no inbox, ...)
"""

from dataclasses import dataclass, field
from functools import cached_property

import jinja2

from connector.health import template_failures
from connector.log import get_logger, iso
from connector.mail.automatic import LOOP_HEADER
from connector.outbound import compose
from connector.outbound.msgid import MessageIdSigner
from connector.pipeline import blocking
from connector.pipeline.budget import domain_of
from connector.pipeline.context import Outgoing
from connector.settings import auto_emails as config_of
from connector.settings import inboxes as inbox_config
from connector.settings.auto_emails import DISPATCHERS, EXTERNAL, KINDS, MANAGER, OWNER, REQUESTER, RESOURCE
from connector.store import events, outbox
from connector.store.db import load_hmac_key
from connector.store.models import (
    AUTO_EMAIL, AUTO_RESPONSE, ENTRY_OPEN, OUTBOX_PENDING, OUTBOX_SUPPRESSED, ExternalRecipient, InboxEntry, OutboxEntry, SentMail,
    Ticket, TicketEvent)

log = get_logger("auto_email")

CAUSING_PERSON = "causing_person"
DUPLICATE = "duplicate"
CONFIRMED = "confirmed"
NO_ADDRESS = "no_address"
FAILED_RECIPIENT = "failed_recipient"
NOT_PUBLIC = "not_public"          # about a Not Public mail: only the helpdesk's side is told
# A new ticket's confirmation goes to its requester even when they caused it.
CREATION_EVENTS = (events.TICKET_CREATED, events.REQUEST_BY_EMAIL)
# Events whose `by` is the acting dispatcher of the ticket (seed 002: who forwarded or assigned it).
DISPATCHING_EVENTS = (events.TICKET_FORWARDED, events.INBOX_ADDED)


@dataclass(frozen=True)
class Mail:
    address: str
    rule: str
    kind: str           # the recipient kind (or the address) of the rule that named them first
    template: str


@dataclass(frozen=True)
class Skipped:
    address: str        # "" for a group without addresses
    rule: str
    kind: str
    reason: str


@dataclass
class Decision:
    mails: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def summary(self):
        return {"mails": [m.__dict__ for m in self.mails], "skipped": [s.__dict__ for s in self.skipped]}


def _open_entries(ticket_id):
    return list(InboxEntry.select().where((InboxEntry.ticket == ticket_id) & (InboxEntry.status == ENTRY_OPEN))
                .order_by(InboxEntry.id))


def _acting_dispatcher(ticket_id, settings):
    """The employee who last forwarded the ticket or put it in an inbox (their first address), or None."""
    rows = (TicketEvent.select(TicketEvent.by).where((TicketEvent.ticket == ticket_id)
                                                    & (TicketEvent.event.in_(DISPATCHING_EVENTS))
                                                    & TicketEvent.by.is_null(False))
            .order_by(TicketEvent.at.desc(), TicketEvent.id.desc()))
    for row in rows:
        member = settings.staff_by_email(row.by)
        if member is not None:
            return member.email
    return None


def _confirmed(ticket_id):
    """Who already got an auto-response or an auto-email on this ticket."""
    rows = OutboxEntry.select(OutboxEntry.rcpt).where((OutboxEntry.ticket == ticket_id)
                                                     & OutboxEntry.kind.in_((AUTO_RESPONSE, AUTO_EMAIL)))
    return {a.lower() for row in rows for a in row.rcpt or ()}


class TicketView:
    """A ticket as the recipient groups see it when an event happens: read from the store,
    except what `known` gives (the pipeline's plan, about to be written: a new ticket, a
    manager a scanner rule sets, recipients joining). Each part is read once, when asked."""

    def __init__(self, ticket, settings, **known):
        self.ticket, self.settings, self.known = ticket, settings, known
        self.id = known.get("id", ticket.id if ticket is not None else None)
        self.number = known.get("number", ticket.number if ticket is not None else None)
        self.subject = known.get("subject", ticket.subject if ticket is not None else "")
        self.status = known.get("status", ticket.status if ticket is not None else "")

    def _known(self, name, read):
        return self.known[name] if name in self.known else read()

    @cached_property
    def requester(self):
        return self._known("requester", lambda: self.ticket.contact.email if self.ticket.contact_id else None)

    @cached_property
    def entries(self):
        """[(inbox name, owner)] of the open entries."""
        return self._known("entries", lambda: [(e.inbox, e.owner) for e in _open_entries(self.id)])

    @cached_property
    def placing(self):
        """The inboxes a new ticket is being placed in (the pipeline's plan): their members are
        its resource already, although its entries are written after its creation events."""
        return list(self.known.get("placing", ()))

    @cached_property
    def manager(self):
        return self._known("manager", lambda: self.ticket.manager)

    @cached_property
    def external(self):
        stored = [] if self.id is None else [
            r.address for r in ExternalRecipient.select().where(ExternalRecipient.ticket == self.id)]
        return list(dict.fromkeys(stored + list(self.known.get("joining", ()))))

    @cached_property
    def dispatcher(self):
        return self._known("dispatcher", lambda: _acting_dispatcher(self.id, self.settings))

    @cached_property
    def confirmed(self):
        """The addresses that got an auto-response or an auto-email on the ticket (a set the
        planner adds to)."""
        return set(self.known.get("confirmed", ())) | (_confirmed(self.id) if self.id is not None else set())


def _group(kind, view, settings, config):
    """The addresses of one recipient kind for this ticket now (a plain address is itself)."""
    if kind == REQUESTER:
        return [view.requester] if view.requester else []
    if kind == RESOURCE:
        configured = inbox_config.of(settings)
        names = [name for name, _ in view.entries] + view.placing
        return [m for name in dict.fromkeys(names) if (i := configured.get(name)) for m in i.members]
    if kind == OWNER:
        return [owner for _, owner in view.entries if owner]
    if kind == MANAGER:
        return [view.manager] if view.manager else []
    if kind == DISPATCHERS:
        return [view.dispatcher] if view.dispatcher else list(config.dispatchers)
    if kind == EXTERNAL:
        return view.external
    return [kind]


def _outside(kind, address, settings):
    """Whether a recipient is outside the helpdesk: the requester, an external recipient or a
    plain address that is no employee's (the inbox members, owners, manager and dispatchers are
    in; so is an employee who is the requester of an internal ticket)."""
    if kind in (REQUESTER, EXTERNAL) or kind not in KINDS:
        return settings.staff_by_email(address) is None
    return False


def _causer(by, settings):
    """Every address of the person who caused the event."""
    if not by:
        return set()
    member = settings.staff_by_email(by)
    return {e.lower() for e in member.emails} if member is not None else {by.lower()}


def failed_of(event, detail):
    """The addresses a `delivery_failed` event says failed (never mailed about their failure)."""
    if event != events.DELIVERY_FAILED:
        return set()
    return {r["address"].lower() for r in (detail or {}).get("recipients", ()) if r.get("address")}


def decide(view, event, by, settings, detail=None):
    """Who gets which mail about `event` on the ticket (`view`) now, and who does not and why."""
    config = config_of.of(settings)
    decision, seen = Decision(), set()
    causer, failed = _causer(by, settings), failed_of(event, detail)
    internal = (detail or {}).get("public") is False   # an internal note, an employee's internal mail
    for rule in config.for_event(event):
        for kind in rule.to:
            addresses = _group(kind, view, settings, config)
            if not addresses:
                decision.skipped.append(Skipped("", rule.name, kind, NO_ADDRESS))
            for address in dict.fromkeys(a.lower() for a in addresses):
                own_confirmation = kind == REQUESTER and event in CREATION_EVENTS
                if address in seen:
                    reason = DUPLICATE
                elif address in causer and not own_confirmation:
                    reason = CAUSING_PERSON
                elif address in failed:
                    reason = FAILED_RECIPIENT
                elif internal and _outside(kind, address, settings):
                    reason = NOT_PUBLIC
                elif own_confirmation and address in view.confirmed:
                    reason = CONFIRMED
                else:
                    seen.add(address)
                    decision.mails.append(Mail(address, rule.name, kind, rule.template))
                    continue
                decision.skipped.append(Skipped(address, rule.name, kind, reason))
    return decision


# What check-config renders each auto-email template with (every value a template may use).
SAMPLE_VALUES = {
    "server_url": "https://helpdesk.example.com",
    "ticket": {"number": 1, "subject": "Printer", "status": "New", "tag": "[Ticket #1]",
               "url": "https://helpdesk.example.com/ticketlist/ticket/1", "inboxes": ["Technical"]},
    "event": {"name": events.TICKET_FORWARDED, "at": "2026-01-01T09:00:00+00:00", "by": "bob@example.com",
              "via": events.VIA_CLI, "detail": {"entry": 1, "inbox": "Technical", "to": "Finance"}},
    "recipient": {"address": "jane@example.com", "kind": RESOURCE},
    "rule": "forwarded",
}


class Planner:
    """The auto-emails of one process's settings: renders what `decide` says, applies the
    blocks (`connector.pipeline.blocking.apply_blocks`) and queues them."""

    def __init__(self, settings, templates=None, signer=None):
        self.settings = settings
        self.templates = templates or compose.Templates(settings.folder_candidates("templates"))
        self._signer = signer

    @property
    def signer(self):
        if self._signer is None:   # the key is read when the first mail is planned
            domain = self.settings.public_address.rpartition("@")[2]
            self._signer = MessageIdSigner(load_hmac_key(self.settings.data_dir), domain)
        return self._signer

    def sender(self, view):
        """(address, name) the mail is from: the sender of the ticket's inbox, else default_sender,
        else the public address."""
        configured = inbox_config.of(self.settings)
        for name, _ in view.entries:
            inbox = configured.get(name)
            if inbox is not None and inbox.sender_address:
                return inbox.sender_address, inbox.sender_name
        config = config_of.of(self.settings)
        if config.sender_address:
            return config.sender_address, config.sender_name
        return self.settings.public_address, self.settings.response_from_name

    def values(self, view, event, mail):
        config = config_of.of(self.settings)
        return {
            "server_url": config.server_url,
            "ticket": {"number": view.number, "subject": view.subject, "status": view.status,
                       "tag": self.settings.ticket_tag.format(number=view.number),
                       "url": f"{config.server_url}/ticketlist/ticket/{view.number}" if config.server_url else "",
                       "inboxes": [name for name, _ in view.entries]},
            "event": {"name": event.event, "at": iso(event.at), "by": event.by, "via": event.via,
                      "detail": event.detail or {}},
            "recipient": {"address": mail.address, "kind": mail.kind},
            "rule": mail.rule,
        }

    def text(self, view, event, mail):
        """(subject with the ticket tag, body) of one mail."""
        subject, body = self.templates.render(mail.template, **self.values(view, event, mail))
        tag = self.settings.ticket_tag.format(number=view.number)
        return (subject if tag in subject else f"{tag} {subject or view.subject}".strip()), body

    def outgoing(self, view, event, decision, index=None, renders=None):
        """The planned mails of `decision` about `event` (`index`: its place in the plan's events),
        whole; a mail whose template fails to render is logged and left out. `renders` (a
        `template_failures.Renders`, from the callers that queue the mails) collects which
        templates failed and which rendered, for `connector status`."""
        planned = []
        address, name = self.sender(view)
        for mail in decision.mails:
            try:
                subject, body = self.text(view, event, mail)
            except jinja2.TemplateError as exc:   # check-config rendered it with samples: a value it lacked
                log.error("auto_email.render_failed", ticket=view.number, ticket_event=event.event,
                          rule=mail.rule, template=mail.template, to=mail.address, error=str(exc),
                          hint="fix the template; the ticket's mail is filed without this mail")
                if renders is not None:
                    renders.failure(mail.template, mail.rule, view.number, event.event, str(exc))
                continue
            if renders is not None:
                renders.rendered.add(mail.template)
            planned.append(Outgoing(AUTO_EMAIL, [mail.address], [mail.address], from_name=name,
                                    from_address=address, mail_from=self.settings.public_address, subject=subject,
                                    template=mail.template, body=body, message_id=self.signer.make(view.number),
                                    automatic=True, event=index))
        return planned

    def plan_event(self, event):
        """Queue the auto-emails of `event` (a TicketEvent just written outside the pipeline, in its
        transaction): decided, rendered and blocked as the pipeline's are."""
        if not config_of.of(self.settings).for_event(event.event):
            return
        ticket = Ticket.get_by_id(event.ticket)
        view = TicketView(ticket, self.settings)
        decision = decide(view, event.event, event.by, self.settings, event.detail)
        renders = template_failures.Renders()
        planned, loop, _ = blocking.apply_blocks(self.outgoing(view, event, decision, renders=renders), ticket.id,
                                                 ticket.number, event.at)
        template_failures.note(self.settings.data_dir, renders, event.at)
        if loop is not None:
            blocking.write([loop], event.at)
        public = self.settings.public_address
        written = []
        for out in planned:
            raw = compose.auto_email(out, public, public, self.signer)
            row = {"kind": AUTO_EMAIL, "mail_from": out.mail_from, "rcpt": out.rcpt, "to": out.to, "cc": [],
                   "bcc": [], "subject": out.subject, "message_id": out.message_id,
                   "raw": f"{LOOP_HEADER}: {self.signer.loop_token}\r\n".encode("ascii") + raw,
                   "ticket": ticket.id, "status": OUTBOX_SUPPRESSED if out.suppressed else OUTBOX_PENDING,
                   "blocked": out.blocked or None, "attempts": 0, "next_attempt_at": event.at,
                   "created_at": event.at, "auto_key": auto_key(event.id, out)}
            if outbox.queue(row, or_ignore=True) is None:
                continue   # already planned: an event is mailed to an address once
            written.append(out)
            if not out.suppressed:
                SentMail.insert(address=out.rcpt[0], domain=domain_of(out.rcpt[0]), ticket=ticket.number,
                                kind=AUTO_EMAIL, budgeted=False, at=event.at).execute()  # a person's action
        log_planned(ticket.number, event.event, event.id, decision, written)


def auto_key(event_id, out):
    """The outbox key of one auto-email: unique, so an event mails an address once."""
    return f"{event_id}:{out.rcpt[0].lower()}"


def log_planned(ticket_number, event, event_id, decision, written):
    """One line per recipient: skipped (and why), suppressed by a block, or planned."""
    for skipped in decision.skipped:
        log.info("auto_email.skipped", ticket=ticket_number, ticket_event=event, event_id=event_id,
                 rule=skipped.rule, kind=skipped.kind, to=skipped.address or None, reason=skipped.reason)
    mails = {m.address: m for m in decision.mails}
    for out in written:
        mail = mails.get(out.rcpt[0])
        fields = {"ticket": ticket_number, "ticket_event": event, "event_id": event_id,
                  "rule": mail.rule if mail else None, "kind": mail.kind if mail else None, "to": out.rcpt[0]}
        if out.suppressed:
            log.info("auto_email.suppressed", **fields, blocked=out.blocked)
        else:
            log.info("auto_email.planned", **fields)


_planner = None


def install(settings):
    """Plan auto-emails from these settings for every event this process records outside the pipeline."""
    global _planner
    _planner = Planner(settings)
    events.on_record(_on_record)


def _on_record(event):
    if _planner is not None:
        _planner.plan_event(event)
