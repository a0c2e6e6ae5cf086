"""Inboxes and their entries (seed 001): where a ticket waits, who owns it.

CONTRACT (the inbox work fills these in; the triage actions and staff mail
commands call them; every function runs in the caller's transaction, writes
one ticket event (`connector.store.events`) and one log line, and raises
`Refused` without changing anything):

    placement(config, delivered_to, inbox=None) -> [(Inbox, placed_by)]  (read while deciding: plan.inboxes)
    place_planned(ticket_id, planned, *, by, via, now) -> entry id | None   (apply writes the plan's)
    add(ticket_number, inbox, *, by, via, now, due_type=None, due_at=None, message=None) -> entry id
    entry_for(ticket_number, *, by) -> InboxEntry   (the open entry a staff mail command acts on)
    take(entry_id, *, by, via, now, force=False)
    complete(entry_id, *, by, via, now)
    cancel(entry_id, *, by, via, now, message=None)
    forward(entry_id, *, to, due_type, due_at, by, via, now, message=None) -> new entry id

Every function also takes `settings=None`: the inboxes come from
`inboxes.of(settings)`, or, without settings, from the configuration the
process loaded last (`connector.settings.inboxes.in_force()`). `by` is a
staff email (the caller has checked it is an active employee's; any of their
addresses, the first listed is the one recorded). `due_at` is epoch seconds or a text
`parse_due` reads (ISO 8601; a date alone is the end of that day, UTC).

Each change is one conditional UPDATE or INSERT inside a savepoint, so two
processes acting on one entry at once cannot both succeed: the loser is
refused, and the partial unique index keeps one open entry per (ticket, inbox).
"""

from datetime import datetime, time as day_time, timezone

import peewee

from connector.log import get_logger, iso
from connector.settings import inboxes as inbox_config
from connector.store import events
from connector.store.models import (
    ENTRY_CANCELLED, ENTRY_COMPLETED, ENTRY_FORWARDED, ENTRY_OPEN, InboxEntry, Ticket, database)
from connector.workqueue.errors import Refused

log = get_logger("inbox")

# Why a new ticket got its entry (detail.placed_by of its inbox_added event).
BY_ADDRESS = "address"
BY_SCANNER_RULE = "scanner_rule"
BY_DEFAULT = "default_inbox"
BY_STAFF = "staff"


def config_of(settings):
    """The inboxes of `settings` (None: of the configuration this process loaded last)."""
    return inbox_config.of(settings) if settings is not None else inbox_config.in_force()



def parse_due(text, *, now):
    """A due date as epoch seconds: ISO 8601 date-time (no zone means UTC) or a date alone
    (the end of that day, 23:59:59 UTC). Refused when unparseable or in the past."""
    if isinstance(text, (int, float)):
        moment = float(text)
    else:
        raw = (text or "").strip()
        try:
            if len(raw) == 10:  # 2026-12-05
                parsed = datetime.combine(datetime.strptime(raw, "%Y-%m-%d").date(), day_time(23, 59, 59))
            else:
                parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise Refused(f"due date {raw!r} is not a date: write 2026-12-05 (end of that day, UTC) "
                          "or 2026-12-05T17:00+01:00") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        moment = parsed.timestamp()
    if moment <= now:
        raise Refused(f"due date {iso(moment)} is in the past (now {iso(now)}): give a later date")
    return moment


def _inbox(config, name):
    found = config.get(name)
    if found is None:
        raise Refused(f"unknown inbox {name!r}: the inboxes are {config.names} (config/inboxes.yaml)")
    return found


def _due(config, due_type, due_at, now, required):
    """(due_type, due_at epoch) checked: both or neither (both when `required`)."""
    if due_type is None and due_at is None and not required:
        return None, None
    if due_type is None or due_at is None or (isinstance(due_at, str) and not due_at.strip()):
        raise Refused("a due type and a due date go together: give both (e.g. --due-type response "
                      "--due 2026-12-05)" if not required else "a forward needs a due type and a due date")
    wanted = str(due_type).strip().lower()
    if wanted not in config.due_types:
        raise Refused(f"unknown due type {due_type!r}: use one of {', '.join(config.due_types)}")
    return wanted, parse_due(due_at, now=now)


def _entry(entry_id):
    entry = InboxEntry.get_or_none(InboxEntry.id == entry_id)
    if entry is None:
        raise Refused(f"no inbox entry {entry_id}")
    return entry


def _open_entry(entry_id, action):
    entry = _entry(entry_id)
    if entry.status != ENTRY_OPEN:
        raise Refused(f"entry {entry.id} is {entry.status}, not open: it cannot be {action}")
    return entry


def _configured_inbox_of(config, entry):
    found = config.get(entry.inbox)
    if found is None:
        raise Refused(f"entry {entry.id} is in {entry.inbox!r}, which config/inboxes.yaml no longer lists: "
                      "add the inbox back to act on it")
    return found


def _insert(ticket_id, inbox, *, by, now, due_type=None, due_at=None, message=None, forwarded_from=None):
    """A new open entry; Refused when the ticket already has one in that inbox."""
    try:
        with database.atomic():
            return InboxEntry.insert(ticket=ticket_id, inbox=inbox.name, owner=None, status=ENTRY_OPEN,
                                     due_type=due_type, due_at=due_at, message=message or None,
                                     created_at=now, created_by=by,
                                     forwarded_from=forwarded_from).execute()
    except peewee.IntegrityError:
        other = InboxEntry.get_or_none((InboxEntry.ticket == ticket_id) & (InboxEntry.inbox == inbox.name)
                                       & (InboxEntry.status == ENTRY_OPEN))
        number = Ticket.get_by_id(ticket_id).number
        raise Refused(f"ticket {number} already has an open entry in {inbox.name}"
                      + (f" (entry {other.id})" if other else "")) from None


def _record(ticket_id, entry_id, event, name, *, by, via, now, **detail):
    """The ticket event and the log line of one action."""
    detail = {"entry": entry_id, **detail}
    events.record(ticket_id, event, at=now, by=by, via=via, detail=detail)
    log.info(name, ticket_id=ticket_id, by=by, via=via, **detail)


def _added(entry_id, ticket_id, inbox, *, by, via, now, placed_by, due_type=None, due_at=None, message=None):
    _record(ticket_id, entry_id, events.INBOX_ADDED, "inbox.added", by=by, via=via, now=now, inbox=inbox.name,
            placed_by=placed_by, due_type=due_type, due_at=iso(due_at), message=message or None)
    return entry_id


def placement(config, delivered_to, inbox=None):
    """Where a new ticket goes, as (Inbox, placed_by) pairs: the inboxes whose address it was
    sent to (in the order of the recipients), else `inbox` (a scanner rule's), else
    default_inbox, else none. Reads nothing but the configuration."""
    by_address = list(dict.fromkeys(i for i in map(config.for_address, delivered_to or ()) if i is not None))
    if by_address:
        return [(i, BY_ADDRESS) for i in by_address]
    if inbox and config.get(inbox) is not None:
        return [(config.get(inbox), BY_SCANNER_RULE)]
    if config.default_inbox:
        return [(config.get(config.default_inbox), BY_DEFAULT)]
    return []


def place_planned(ticket_id, planned, *, by, via, now, settings=None):
    """The open entries a new ticket's plan names (`planned`: [(inbox name, placed_by)], made
    by `placement` while deciding, so a dry run shows them); the first entry's id, or None."""
    config = config_of(settings)
    ids = []
    for name, why in planned:
        target = config.get(name)
        if target is None:  # removed from inboxes.yaml between deciding and writing
            log.warning("inbox.unknown_hint", inbox=name, ticket_id=ticket_id)
            continue
        ids.append(_added(_insert(ticket_id, target, by=by, now=now), ticket_id, target, by=by, via=via, now=now,
                          placed_by=why))
    return ids[0] if ids else None


def sender_of(planned, *, settings=None):
    """The (address, name) a new ticket's auto-response is sent from: the `sender` of the
    first inbox it is planned into, or None for the default sender."""
    target = config_of(settings).get(planned[0][0]) if planned else None
    if target is not None and target.sender_address:
        return target.sender_address, target.sender_name
    return None


def add(ticket_number, inbox, *, by, via, now, due_type=None, due_at=None, message=None, settings=None):
    """An open entry for an existing ticket in `inbox` (any active employee may add one)."""
    config = config_of(settings)
    by = config.who(by)
    target = _inbox(config, inbox)
    ticket = Ticket.get_or_none(Ticket.number == ticket_number)
    if ticket is None:
        raise Refused(f"no ticket {ticket_number}")
    due_type, due_at = _due(config, due_type, due_at, now, required=False)
    entry_id = _insert(ticket.id, target, by=by, now=now, due_type=due_type, due_at=due_at, message=message)
    return _added(entry_id, ticket.id, target, by=by, via=via, now=now, placed_by=BY_STAFF,
                  due_type=due_type, due_at=due_at, message=message)


def entry_for(ticket_number, *, by, settings=None):
    """The open entry of this ticket a staff member's command acts on: the only one, else
    the one they own, else the only one in an inbox they are a member of."""
    ticket = Ticket.get_or_none(Ticket.number == ticket_number)
    if ticket is None:
        raise Refused(f"no ticket {ticket_number}")
    entries = list(InboxEntry.select().where((InboxEntry.ticket == ticket.id) & (InboxEntry.status == ENTRY_OPEN))
                   .order_by(InboxEntry.id))
    if not entries:
        raise Refused(f"ticket {ticket_number} has no open inbox entry")
    if len(entries) == 1:
        return entries[0]
    config = config_of(settings)
    by = config.who(by)
    for pick in ([e for e in entries if e.owner == by],
                 [e for e in entries if (i := config.get(e.inbox)) is not None and by in i.members]):
        if len(pick) == 1:
            return pick[0]
    raise Refused(f"ticket {ticket_number} is open in several inboxes ("
                  + ", ".join(f"entry {e.id} in {e.inbox}" for e in entries) + "): act on the entry by its id")


def _update_open(entry, action, extra_where=None, **changes):
    """Change an entry that is still open (and matches `extra_where`); Refused when another
    process changed it first."""
    where = (InboxEntry.id == entry.id) & (InboxEntry.status == ENTRY_OPEN)
    if extra_where is not None:
        where &= extra_where
    if InboxEntry.update(**changes).where(where).execute() != 1:
        current = _entry(entry.id)
        raise Refused(f"entry {entry.id} changed meanwhile (now {current.status}, owner {current.owner or 'none'}): "
                      f"not {action}; look again with inbox show {entry.id}")


def take(entry_id, *, by, via, now, force=False, settings=None):
    """`by` owns the entry: a member of its inbox, or anybody with `force`; another
    owner is replaced only with `force`."""
    config = config_of(settings)
    by = config.who(by)
    entry = _open_entry(entry_id, "taken")
    inbox = _configured_inbox_of(config, entry)
    if by not in inbox.members and not force:
        raise Refused(f"{by} is not a member of {inbox.name}: only its members "
                      f"({', '.join(inbox.members)}) take its entries (or use --force)")
    if entry.owner == by:
        raise Refused(f"entry {entry.id} is already owned by {by}")
    if entry.owner and not force:
        raise Refused(f"entry {entry.id} is owned by {entry.owner}: they complete, cancel or forward it "
                      "(or use --force to take it over)")
    previous = entry.owner
    owner_was = InboxEntry.owner.is_null() if previous is None else (InboxEntry.owner == previous)
    _update_open(entry, "taken", owner_was, owner=by)
    _record(entry.ticket_id, entry.id, events.TICKET_TAKEN, "inbox.taken", by=by, via=via, now=now,
            inbox=entry.inbox,
            owner=by, previous_owner=previous, forced=bool(force and (previous or by not in inbox.members)))


def _may_act(entry, inbox, by, action):
    if by != entry.owner and by not in inbox.members:
        raise Refused(f"{by} is neither the owner of entry {entry.id} ({entry.owner or 'none'}) nor a member of "
                      f"{inbox.name}: not {action}")


def complete(entry_id, *, by, via, now, settings=None):
    """The entry is done: it leaves the open list (the owner or a member)."""
    _close(entry_id, ENTRY_COMPLETED, events.TICKET_COMPLETED, "inbox.completed", by=by, via=via, now=now,
           settings=settings)


def cancel(entry_id, *, by, via, now, message=None, settings=None):
    """The entry is dropped: it leaves the open list (the owner or a member)."""
    _close(entry_id, ENTRY_CANCELLED, events.TICKET_CANCELLED, "inbox.cancelled", by=by, via=via, now=now,
           settings=settings, message=message or None)


def _close(entry_id, status, event, log_name, *, by, via, now, settings, **detail):
    config = config_of(settings)
    by = config.who(by)
    entry = _open_entry(entry_id, status)
    _may_act(entry, _configured_inbox_of(config, entry), by, status)
    _update_open(entry, status, status=status)
    _record(entry.ticket_id, entry.id, event, log_name, by=by, via=via, now=now, inbox=entry.inbox,
            owner=entry.owner, **detail)


def forward(entry_id, *, to, due_type, due_at, by, via, now, message=None, settings=None):
    """The entry moves on to the inbox `to`: it becomes `forwarded`, and a new open entry
    without owner (due type and date required) is made there. Returns the new entry's id.

    The owner or a member of the entry's inbox forwards it."""
    config = config_of(settings)
    by = config.who(by)
    entry = _open_entry(entry_id, "forwarded")
    _may_act(entry, _configured_inbox_of(config, entry), by, "forwarded")
    target = _inbox(config, to)
    if target.name.lower() == entry.inbox.lower():
        raise Refused(f"entry {entry.id} is already in {target.name}: forward it to another inbox")
    due_type, due_at = _due(config, due_type, due_at, now, required=True)
    with database.atomic():
        _update_open(entry, "forwarded", status=ENTRY_FORWARDED)
        new_id = _insert(entry.ticket_id, target, by=by, now=now, due_type=due_type, due_at=due_at,
                         message=message, forwarded_from=entry.id)
    _record(entry.ticket_id, entry.id, events.TICKET_FORWARDED, "inbox.forwarded", by=by, via=via, now=now,
            inbox=entry.inbox,
            to=target.name, new_entry=new_id, due_type=due_type, due_at=iso(due_at), message=message or None,
            owner=entry.owner)
    return new_id


def escalate(entry_id, *, now, settings=None):
    """The system moves an overdue entry to its inbox's `escalate_to` (seed 002): it becomes
    `forwarded`, a new open entry without owner or due date is made there (keeping the due
    type), and the ticket gets `ticket_escalated`. Returns the new entry's id; Refused
    when the ticket is open in that inbox already or the entry changed meanwhile."""
    config = config_of(settings)
    entry = _open_entry(entry_id, "escalated")
    target = _inbox(config, _configured_inbox_of(config, entry).escalate_to)
    with database.atomic():
        _update_open(entry, "escalated", status=ENTRY_FORWARDED)
        new_id = _insert(entry.ticket_id, target, by=None, now=now, due_type=entry.due_type,
                         forwarded_from=entry.id)
    _record(entry.ticket_id, entry.id, events.TICKET_ESCALATED, "inbox.escalated", by=None, via=events.VIA_SYSTEM,
            now=now, inbox=entry.inbox, to=target.name, new_entry=new_id, owner=entry.owner)
    return new_id
