"""`config/inboxes.yaml` (seed 001): the work queues staff take tickets from.

Read by `load_settings` after staff.yaml (members are staff emails), before the
plug-ins (a scanner rule's `assign_inbox` names an inbox). A missing file means
no inboxes. Every problem is a `ConfigError` naming the file, the key, what is
wrong and a hint. The result is `inboxes.of(settings)`; the actions of
`connector.workqueue.inbox` use the configuration of the last good load of the
process (`in_force()`) when their caller passes no settings.

    inboxes:
      - name: Technical                 # unique, case-insensitive
        members: [bob@example.com]      # active staff emails
        address: tech@example.com       # optional: ours, with its +tag forms
        sender: {address: support@example.com, name: Technical Support}   # optional
        escalate_to: Finance            # optional: where an entry goes when its due date passes
    default_inbox: Technical            # optional
    due_types: [response, resolution, follow_up]
"""

import dataclasses
import re
from dataclasses import dataclass, field

from connector.mail.addresses import own_address_re
from connector.settings import yamlfile
from connector.settings.addresses import ADDRESS_RE
from connector.settings.errors import ConfigError

FILE = "inboxes.yaml"
DEFAULT_DUE_TYPES = ("response", "resolution", "follow_up")
TOP_KEYS = ("inboxes", "default_inbox", "due_types")
INBOX_KEYS = ("name", "members", "address", "sender", "escalate_to")
SENDER_KEYS = ("address", "name")
DUE_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Inbox:
    name: str
    members: tuple                  # staff emails (each member's first listed address)
    address: str = ""               # mail to it (and its +tag forms) lands here
    sender_address: str = ""
    sender_name: str = ""
    pattern: object = field(default=None, compare=False, repr=False)   # `address` and its +tag forms
    escalate_to: str = ""           # another inbox's name: an overdue entry moves there

    def receives(self, address):
        return self.pattern is not None and bool(self.pattern.match(address or ""))


@dataclass(frozen=True)
class Inboxes:
    inboxes: tuple = ()
    default_inbox: str = None       # an inbox's name, as configured
    due_types: tuple = DEFAULT_DUE_TYPES
    staff: dict = field(default_factory=dict, compare=False, repr=False)   # any active staff email -> first

    def who(self, email):
        """The recorded address of the employee `email` is one of (as given when unknown)."""
        email = (email or "").strip().lower()
        return self.staff.get(email, email)

    def get(self, name):
        """The inbox called `name` (any case), or None."""
        wanted = (name or "").strip().lower()
        return next((i for i in self.inboxes if i.name.lower() == wanted), None)

    def for_address(self, address):
        """The inbox whose address (or a +tag form of it) `address` is, or None."""
        return next((i for i in self.inboxes if i.receives(address)), None)

    def is_inbox_address(self, address):
        return self.for_address(address) is not None

    @property
    def names(self):
        return ", ".join(i.name for i in self.inboxes) or "(none configured)"


NONE = Inboxes()
_in_force = NONE


def of(settings):
    """The inboxes of these settings (none when the settings were made without them)."""
    return settings.extra.get("inboxes", NONE)


def in_force():
    """The inboxes of the settings this process loaded last."""
    return _in_force


def install(settings):
    """Make these settings' inboxes the ones in force (called once the whole load succeeded)."""
    global _in_force
    _in_force = of(settings)


def load_inboxes(settings, read_yaml):
    """Read config/inboxes.yaml (if any) into `settings.extra["inboxes"]`."""
    path = settings.find("config", FILE)
    if not path.exists():
        settings.extra["inboxes"] = NONE
        settings.files["inboxes"] = "(none)"
        return
    data = yamlfile.top_mapping(path, read_yaml(path), TOP_KEYS)
    items = yamlfile.entries(path, data, "inboxes")
    inboxes = []
    for index, entry in enumerate(items):
        inbox = _inbox(path, f"inboxes[{index}]", entry, settings, inboxes)
        inboxes.append(inbox)
    staff = {email: member.email for email, member in settings.extra["_staff_index"].items()}
    config = Inboxes(tuple(_escalations(path, items, inboxes)), None, _due_types(path, data.get("due_types")), staff)
    default = data.get("default_inbox")
    if default is not None:
        found = config.get(default) if isinstance(default, str) else None
        if found is None:
            raise ConfigError(path, "default_inbox", f"{default!r} is not one of the inboxes",
                              f"name one of: {config.names}, or remove default_inbox")
        config = dataclasses.replace(config, default_inbox=found.name)
    settings.extra["inboxes"] = config
    settings.files["inboxes"] = path


def _inbox(path, where, entry, settings, earlier):
    if not isinstance(entry, dict):
        raise ConfigError(path, where, "must be a mapping", "each inbox has name, members, address, sender")
    unknown = sorted(set(entry) - set(INBOX_KEYS))
    if unknown:
        raise ConfigError(path, f"{where}.{unknown[0]}", "unknown key", f"inboxes take: {', '.join(INBOX_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(path, f"{where}.name", "is missing", "give the inbox a name, e.g. name: Technical")
    name = name.strip()
    where = f"inboxes[{name}]"
    for other in earlier:
        if other.name.lower() == name.lower():
            raise ConfigError(path, f"{where}.name", f"{name!r} is already the name of another inbox",
                              "inbox names are unique, whatever their case: rename one")
    members = _members(path, f"{where}.members", entry.get("members"), settings)
    address = _address(path, f"{where}.address", entry.get("address"), settings, earlier)
    sender_address, sender_name = read_sender(path, f"{where}.sender", entry.get("sender"))
    return Inbox(name, members, address, sender_address, sender_name, own_address_re(address) if address else None)


def _escalations(path, items, inboxes):
    """Each inbox with its `escalate_to` checked: another configured inbox, by its configured name."""
    names = {i.name.lower(): i.name for i in inboxes}
    out = []
    for entry, inbox in zip(items, inboxes):
        target = entry.get("escalate_to")
        if target is None:
            out.append(inbox)
            continue
        where = f"inboxes[{inbox.name}].escalate_to"
        name = names.get(target.strip().lower()) if isinstance(target, str) else None
        if name is None:
            raise ConfigError(path, where, f"{target!r} is not one of the inboxes",
                              f"name one of: {', '.join(names.values())}, or remove escalate_to")
        if name == inbox.name:
            raise ConfigError(path, where, "names the inbox itself",
                              "escalate to another inbox, or remove escalate_to")
        out.append(dataclasses.replace(inbox, escalate_to=name))
    return out


def _members(path, where, value, settings):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(path, where, "must be a non-empty list of staff emails",
                          "write members: [bob@example.com]")
    members = []
    for item in value:
        email = item.strip().lower() if isinstance(item, str) else item
        member = settings.staff_by_email(email) if isinstance(email, str) else None
        if member is None:
            raise ConfigError(path, where, f"{item!r} is not an active staff email",
                              "list the employee in config/staff.yaml (active: true) first")
        if member.email not in members:
            members.append(member.email)
    return tuple(members)


def _address(path, where, value, settings, earlier):
    if value is None:
        return ""
    address = value.strip().lower() if isinstance(value, str) else ""
    if not ADDRESS_RE.match(address):
        raise ConfigError(path, where, f"{value!r} is not an email address",
                          "write a plain address such as tech@example.com, or leave address out")
    own = {settings.public_address: "public_address", settings.notifications_address: "notifications_address"}
    if address in own:
        raise ConfigError(path, where, f"{address} is the connector's {own[address]}",
                          "an inbox needs an address of its own, e.g. tech@example.com")
    if own_address_re(settings.notifications_address).match(address):
        raise ConfigError(path, where, f"{address} is a +tag form of the notifications address",
                          "mail there goes to review; give the inbox another address")
    if settings.extra["_staff_index"].get(address) is not None:
        raise ConfigError(path, where, f"{address} is the address of an employee",
                          "staff mail from that address would be filed as the employee's; use another address")
    for other in earlier:
        if other.address == address:
            raise ConfigError(path, where, f"{address} is already the address of the inbox {other.name}",
                              "each address leads to one inbox")
    return address


def read_sender(path, where, value):
    """(address, name) of a `sender: {address, name}` mapping (("", "") when absent)."""
    if value is None:
        return "", ""
    if not isinstance(value, dict) or "address" not in value:
        raise ConfigError(path, where, "must be a mapping with an address",
                          "write sender: {address: support@example.com, name: Technical Support}")
    unknown = sorted(set(value) - set(SENDER_KEYS))
    if unknown:
        raise ConfigError(path, f"{where}.{unknown[0]}", "unknown key", "sender takes: address, name")
    address = value["address"].strip().lower() if isinstance(value["address"], str) else ""
    if not ADDRESS_RE.match(address):
        raise ConfigError(path, f"{where}.address", f"{value['address']!r} is not an email address",
                          "write a plain address such as support@example.com")
    name = value.get("name") or ""
    if not isinstance(name, str):
        raise ConfigError(path, f"{where}.name", f"{name!r} is not text", "write name: Technical Support")
    return address, name.strip()


def _due_types(path, value):
    if value is None:
        return DEFAULT_DUE_TYPES
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "due_types", "must be a non-empty list of words",
                          f"write due_types: [{', '.join(DEFAULT_DUE_TYPES)}], or leave it out for that list")
    types = []
    for item in value:
        if not isinstance(item, str) or not DUE_TYPE_RE.match(item.strip()):
            raise ConfigError(path, "due_types", f"{item!r} is not a single word",
                              "write words such as response or follow_up (letters, digits, _ and -)")
        if item.strip().lower() in types:
            raise ConfigError(path, "due_types", f"{item!r} is listed twice", "list each due type once")
        types.append(item.strip().lower())
    return tuple(types)
