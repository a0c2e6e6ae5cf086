"""`config/auto_emails.yaml` (seed 002): which ticket events send which automatic mail to whom.

Read by `load_settings` after inboxes.yaml. A missing file means no auto-emails.
Every problem is a `ConfigError` naming the file, the key, what is wrong and a
hint. The result is `auto_emails.of(settings)`; `connector.workqueue.auto_emails`
plans the mails from it when a ticket event is recorded.

    default_sender: {address: support@example.com, name: Example Support}
    dispatchers: [dispatch@example.com]
    server_url: https://helpdesk.example.com
    auto_emails:
      - name: ack-new-request
        event: ticket_created
        to: [requester]
        template: ticket_created.txt.j2
"""

from dataclasses import dataclass

from connector.settings import yamlfile
from connector.settings.addresses import ADDRESS_RE
from connector.settings.errors import ConfigError
from connector.settings.inboxes import read_sender
from connector.store import events

FILE = "auto_emails.yaml"
TOP_KEYS = ("default_sender", "dispatchers", "server_url", "auto_emails")
RULE_KEYS = ("name", "event", "to", "template")

# Recipient kinds of `to` (besides a plain address).
REQUESTER = "requester"        # the ticket's contact
RESOURCE = "resource"          # the members of the inbox(es) the ticket is open in at the time of the event
OWNER = "owner"                # the owner(s) of the ticket's open inbox entries
MANAGER = "manager"            # the ticket's manager
DISPATCHERS = "dispatchers"    # the acting dispatcher, else the whole `dispatchers` group
EXTERNAL = "external"          # the ticket's external recipients
KINDS = (REQUESTER, RESOURCE, OWNER, MANAGER, DISPATCHERS, EXTERNAL)

EVENTS = (events.TICKET_CREATED, events.REQUEST_BY_EMAIL, events.CUSTOMER_REPLIED, events.EMPLOYEE_REPLIED,
          events.STATUS_CHANGED, events.TICKET_TAKEN, events.TICKET_FORWARDED, events.TICKET_COMPLETED,
          events.TICKET_CANCELLED, events.DEADLINE_PASSED, events.TICKET_ESCALATED, events.DELIVERY_FAILED)


@dataclass(frozen=True)
class Rule:
    name: str
    event: str
    to: tuple           # recipient kinds and plain addresses, in order
    template: str


@dataclass(frozen=True)
class AutoEmails:
    rules: tuple = ()
    sender_address: str = ""     # default_sender: when the ticket's inbox has no sender
    sender_name: str = ""
    dispatchers: tuple = ()
    server_url: str = ""

    def for_event(self, event):
        return [rule for rule in self.rules if rule.event == event]


NONE = AutoEmails()


def of(settings):
    """The auto-emails of these settings (none when made without them)."""
    return settings.extra.get("auto_emails", NONE)


def load_auto_emails(settings, read_yaml):
    """Read config/auto_emails.yaml (if any) into `settings.extra["auto_emails"]`."""
    path = settings.find("config", FILE)
    if not path.exists():
        settings.extra["auto_emails"] = NONE
        settings.files["auto_emails"] = "(none)"
        return
    data = yamlfile.top_mapping(path, read_yaml(path), TOP_KEYS, main="auto_emails")
    sender_address, sender_name = read_sender(path, "default_sender", data.get("default_sender"))
    dispatchers = tuple(_address(path, "dispatchers", item) for item in _list(path, "dispatchers",
                                                                                data.get("dispatchers")))
    server_url = data.get("server_url") or ""
    if not isinstance(server_url, str):
        raise ConfigError(path, "server_url", f"{server_url!r} is not text",
                          "write server_url: https://helpdesk.example.com")
    items = yamlfile.entries(path, data, "auto_emails")
    rules = []
    for index, entry in enumerate(items):
        rules.append(_rule(path, index, entry, settings, rules))
    settings.extra["auto_emails"] = AutoEmails(tuple(rules), sender_address, sender_name, dispatchers,
                                               server_url.strip().rstrip("/"))
    settings.files["auto_emails"] = path


def _list(path, where, value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ConfigError(path, where, "must be a list of addresses", f"write {where}: [dispatch@example.com]")
    return value


def _address(path, where, value):
    address = value.strip().lower() if isinstance(value, str) else ""
    if not ADDRESS_RE.match(address):
        raise ConfigError(path, where, f"{value!r} is not an email address",
                          "write a plain address such as dispatch@example.com")
    return address


def _rule(path, index, entry, settings, earlier):
    where = f"auto_emails[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(path, where, "must be a mapping", "each auto-email has name, event, to, template")
    unknown = sorted(set(entry) - set(RULE_KEYS))
    if unknown:
        raise ConfigError(path, f"{where}.{unknown[0]}", "unknown key", f"auto-emails take: {', '.join(RULE_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(path, f"{where}.name", "is missing", "give the auto-email a name, e.g. name: ack-new-request")
    name = name.strip()
    where = f"auto_emails[{name}]"
    if any(rule.name.lower() == name.lower() for rule in earlier):
        raise ConfigError(path, f"{where}.name", f"{name!r} is already the name of another auto-email",
                          "auto-email names are unique: rename one")
    event = entry.get("event")
    if event not in EVENTS:
        raise ConfigError(path, f"{where}.event", f"{event!r} is not a ticket event",
                          f"use one of: {', '.join(EVENTS)}")
    to = entry.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        raise ConfigError(path, f"{where}.to", "must be a non-empty list of recipients",
                          f"write to: [requester]; recipients are {', '.join(KINDS)} or an address")
    recipients = []
    for item in to:
        word = item.strip().lower() if isinstance(item, str) else item
        if word not in KINDS and not (isinstance(word, str) and ADDRESS_RE.match(word)):
            raise ConfigError(path, f"{where}.to", f"{item!r} is not a recipient",
                              f"use {', '.join(KINDS)} or a plain address such as boss@example.com")
        recipients.append(word)
    template = entry.get("template")
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(path, f"{where}.template", "is missing",
                          "name a file of templates/, e.g. template: ticket_created.txt.j2")
    template = template.strip()
    if not settings.find("templates", template).is_file():
        raise ConfigError(path, f"{where}.template", f"{template} is not in templates/",
                          f"create templates/{template} next to the ini, or name a shipped template "
                          "(ticket_created.txt.j2, ticket_forwarded.txt.j2, deadline_passed.txt.j2)")
    return Rule(name, event, tuple(dict.fromkeys(recipients)), template)
