"""Automatic e-mails on ticket events (seed 002; config/auto_emails.yaml).

Where it stands: every ticket event goes through `connector.store.events.record`;
the process's wiring (the worker's `configure`, the commands' settings load)
calls `install(settings)`, which makes `record` call `plan_event` in the
transaction of the change. `plan_event` decides who gets which mail
(`decide`) and writes one outbox row (kind `auto_email`) per (event,
recipient): the row's `auto_key` "<event id>:<address>" is unique in the
outbox, so a worker killed at any instant and restarted, or a delivery
retried, never mails one address twice about one event. The delivery
process sends the rows like every other mail.

`decide` is the whole decision and changes nothing: `connector auto-emails
preview` prints it. Who never gets a mail, and why (`Skipped.reason`):
  causing_person  the person whose action the event is (`event.by`), except the
                  requester's own confirmation of a new ticket
  duplicate       already a recipient of this event (another rule or group)
  confirmed       the requester of a new ticket already got its auto-response
                  (or the ticket_created mail)
  no_address      the group is empty for this ticket (no contact, no inbox, ...)
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone

import jinja2

from connector.log import get_logger
from connector.mail.automatic import LOOP_HEADER
from connector.outbound import compose
from connector.outbound.msgid import MessageIdSigner
from connector.pipeline.budget import domain_of
from connector.pipeline.context import Outgoing
from connector.settings import auto_emails as config_of
from connector.settings import inboxes as inbox_config
from connector.settings.auto_emails import DISPATCHERS, EXTERNAL, MANAGER, OWNER, REQUESTER, RESOURCE
from connector.store import events
from connector.store.db import load_hmac_key
from connector.store.models import (
    AUTO_EMAIL, AUTO_RESPONSE, ENTRY_OPEN, OUTBOX_PENDING, ExternalRecipient, InboxEntry, OutboxEntry, SentMail,
    Ticket, TicketEvent)

log = get_logger("auto_email")

CAUSING_PERSON = "causing_person"
DUPLICATE = "duplicate"
CONFIRMED = "confirmed"
NO_ADDRESS = "no_address"
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


def _group(kind, ticket, settings, config):
    """The addresses of one recipient kind for this ticket now (a plain address is itself)."""
    if kind == REQUESTER:
        return [ticket.contact.email] if ticket.contact_id else []
    if kind == RESOURCE:
        configured = inbox_config.of(settings)
        return [m for e in _open_entries(ticket.id) if (i := configured.get(e.inbox)) for m in i.members]
    if kind == OWNER:
        return [e.owner for e in _open_entries(ticket.id) if e.owner]
    if kind == MANAGER:
        return [ticket.manager] if ticket.manager else []
    if kind == DISPATCHERS:
        acting = _acting_dispatcher(ticket.id, settings)
        return [acting] if acting else list(config.dispatchers)
    if kind == EXTERNAL:
        return [r.address for r in ExternalRecipient.select().where(ExternalRecipient.ticket == ticket.id)]
    return [kind]


def _confirmed(ticket_id, address):
    """Whether the ticket's requester already got an auto-response or an auto-email of its creation."""
    rows = OutboxEntry.select(OutboxEntry.rcpt).where((OutboxEntry.ticket == ticket_id)
                                                     & OutboxEntry.kind.in_((AUTO_RESPONSE, AUTO_EMAIL)))
    return any(address in [a.lower() for a in row.rcpt or ()] for row in rows)


def _causer(by, settings):
    """Every address of the person who caused the event."""
    if not by:
        return set()
    member = settings.staff_by_email(by)
    return {e.lower() for e in member.emails} if member is not None else {by.lower()}


def decide(ticket, event, by, settings):
    """Who gets which mail about `event` on `ticket` now, and who does not and why."""
    config = config_of.of(settings)
    decision, seen = Decision(), set()
    causer = _causer(by, settings)
    for rule in config.for_event(event):
        for kind in rule.to:
            addresses = _group(kind, ticket, settings, config)
            if not addresses:
                decision.skipped.append(Skipped("", rule.name, kind, NO_ADDRESS))
            for address in dict.fromkeys(a.lower() for a in addresses):
                own_confirmation = kind == REQUESTER and event in CREATION_EVENTS
                if address in seen:
                    reason = DUPLICATE
                elif address in causer and not own_confirmation:
                    reason = CAUSING_PERSON
                elif own_confirmation and _confirmed(ticket.id, address):
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


def iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


class Planner:
    """The auto-emails of one process's settings: renders and queues what `decide` says."""

    def __init__(self, settings):
        self.settings = settings
        self.templates = compose.Templates(settings.folder_candidates("templates"))
        self._signer = None

    @property
    def signer(self):
        if self._signer is None:   # the key is read when the first mail is planned
            domain = self.settings.public_address.rpartition("@")[2]
            self._signer = MessageIdSigner(load_hmac_key(self.settings.data_dir), domain)
        return self._signer

    def sender(self, ticket):
        """(address, name) the mail is from: the sender of the ticket's inbox, else default_sender,
        else the public address."""
        configured = inbox_config.of(self.settings)
        for entry in _open_entries(ticket.id):
            inbox = configured.get(entry.inbox)
            if inbox is not None and inbox.sender_address:
                return inbox.sender_address, inbox.sender_name
        config = config_of.of(self.settings)
        if config.sender_address:
            return config.sender_address, config.sender_name
        return self.settings.public_address, self.settings.response_from_name

    def values(self, ticket, event, mail):
        config = config_of.of(self.settings)
        return {
            "server_url": config.server_url,
            "ticket": {"number": ticket.number, "subject": ticket.subject, "status": ticket.status,
                       "tag": self.settings.ticket_tag.format(number=ticket.number),
                       "url": f"{config.server_url}/ticketlist/ticket/{ticket.number}" if config.server_url else "",
                       "inboxes": [e.inbox for e in _open_entries(ticket.id)]},
            "event": {"name": event.event, "at": iso(event.at), "by": event.by, "via": event.via,
                      "detail": event.detail or {}},
            "recipient": {"address": mail.address, "kind": mail.kind},
            "rule": mail.rule,
        }

    def text(self, ticket, event, mail):
        """(subject with the ticket tag, body) of one mail."""
        subject, body = self.templates.render(mail.template, **self.values(ticket, event, mail))
        tag = self.settings.ticket_tag.format(number=ticket.number)
        return (subject if tag in subject else f"{tag} {subject or ticket.subject}".strip()), body

    def outgoing(self, ticket, event, mail):
        """The outbox row of one mail (without its ids)."""
        subject, body = self.text(ticket, event, mail)
        address, name = self.sender(ticket)
        out = Outgoing(AUTO_EMAIL, [mail.address], [mail.address], from_name=name, from_address=address,
                       mail_from=self.settings.public_address, subject=subject, template=mail.template, body=body,
                       message_id=self.signer.make(ticket.number), automatic=True)
        raw = compose.auto_email(out, self.settings.public_address, self.settings.public_address)
        return {"kind": AUTO_EMAIL, "mail_from": out.mail_from, "rcpt": out.rcpt, "to": out.to, "cc": [], "bcc": [],
                "subject": subject, "message_id": out.message_id,
                "raw": f"{LOOP_HEADER}: {self.signer.loop_token}\r\n".encode("ascii") + raw}

    def plan_event(self, event):
        """Queue the auto-emails of `event` (a TicketEvent just written, in its transaction)."""
        if not config_of.of(self.settings).for_event(event.event):
            return
        ticket = Ticket.get_by_id(event.ticket)
        decision = decide(ticket, event.event, event.by, self.settings)
        for skipped in decision.skipped:
            log.info("auto_email.skipped", ticket=ticket.number, ticket_event=event.event, event_id=event.id,
                     rule=skipped.rule, kind=skipped.kind, to=skipped.address or None, reason=skipped.reason)
        for mail in decision.mails:
            try:
                outgoing = self.outgoing(ticket, event, mail)
            except jinja2.TemplateError as exc:   # check-config rendered it with samples: a value it lacked
                log.error("auto_email.render_failed", ticket=ticket.number, ticket_event=event.event,
                          event_id=event.id, rule=mail.rule, template=mail.template, to=mail.address,
                          error=str(exc), hint="fix the template; the ticket's mail is filed without this mail")
                continue
            row = {**outgoing, "ticket": ticket.id, "status": OUTBOX_PENDING,
                   "attempts": 0, "next_attempt_at": event.at, "created_at": event.at,
                   "auto_key": f"{event.id}:{mail.address}"}
            if not OutboxEntry.insert(row).on_conflict_ignore().as_rowcount().execute():
                continue   # already planned: an event is mailed to an address once
            SentMail.insert(address=mail.address, domain=domain_of(mail.address), ticket=ticket.number,
                            kind=AUTO_EMAIL, budgeted=True, at=event.at).execute()
            log.info("auto_email.planned", ticket=ticket.number, ticket_event=event.event, event_id=event.id,
                     rule=mail.rule, kind=mail.kind, to=mail.address)


_planner = None


def install(settings):
    """Plan auto-emails from these settings for every event this process records."""
    global _planner
    _planner = Planner(settings)
    events.on_record(_on_record)


def _on_record(event):
    if _planner is not None:
        _planner.plan_event(event)
