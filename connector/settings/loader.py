"""Load and validate `connector.ini` and the YAML files in `config/`.

Files in `rules/` and `templates/` are looked up next to the ini first and
fall back one by one to the ones shipped with the package
(`connector.settings.shipped`); `config/` falls back only as a whole folder,
and every file in a local `config/` must be one the connector reads. Every
problem raises `ConfigError` with the file, the key, what is wrong and a
hint; unknown keys are errors, never silently ignored.
"""

import configparser
import difflib
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from connector.settings import auto_emails, inboxes, yamlfile
from connector.settings.addresses import ADDRESS_RE, unicode_domain
from connector.settings.errors import ConfigError
from connector.settings.schema import BY_NAME, KEYS, MAX_PROCESSES, RECEIVE_MANAGER, RECEIVE_OPTIONS, SECTIONS
from connector.settings.shipped import SHIPPED_DIR
from connector.settings.values import PostgresURL, parse_bool, parse_size

STAFF_KEYS = {"name", "emails", "active", "receive"}
ACCOUNT_KEYS = {"name", "domains", "manager", "main_contact"}
# Every file of config/: scanners.yaml is read by connector.scanners.config, called by its
# users (connector.checks, the scanners' commands); settings knows only that the name is valid.
CONFIG_FILES = ("staff.yaml", "accounts.yaml", "inboxes.yaml", "auto_emails.yaml", "scanners.yaml")
IGNORED_SUFFIXES = ("~", ".example", ".bak", ".orig", ".old", ".swp", ".dpkg-dist", ".dpkg-old", ".dpkg-new",
                    ".rpmnew", ".rpmsave", ".ucf-dist", ".ucf-old")
WILDCARD_HOSTS = ("0.0.0.0", "::", "*")
SIZE_MIN, SIZE_MAX = 10 * 1024, 1 << 30  # a size key below 10K is a unit forgotten (25 for 25M); above 1G no store takes
DEFAULT_DATA_DIR = Path("/var/lib/connector")  # with a PostgreSQL database and no [connector] data_dir


@dataclass(frozen=True)
class Staff:
    """An employee: identified by any of their emails; `receive` is seed 004's Recipient Option."""

    name: str
    emails: tuple
    active: bool = True
    receive: str = RECEIVE_MANAGER

    @property
    def email(self):
        """The address mail to this employee goes to (the first listed)."""
        return self.emails[0]


@dataclass(frozen=True)
class Account:
    """A customer organisation, recognised by the domains of its contacts' addresses."""

    name: str
    domains: tuple
    manager: str = ""
    main_contact: str = ""


@dataclass
class Settings:
    """Everything the daemon and the commands need, validated."""

    ini_path: Path
    values: dict
    staff: list = field(default_factory=list)
    accounts: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # what was loaded from where
    extra: dict = field(default_factory=dict)  # indexes, and what packages above settings read (scanners)

    def __getattr__(self, name):
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def base_dir(self):
        return self.ini_path.parent

    @property
    def data_dir(self):
        return data_dir_of(self.values)

    def find(self, folder, name):
        """A file of `rules/`, `templates/` or `config/`: next to the ini first, then shipped.

        `config/` falls back as a whole: when the ini has a config/ folder beside
        it, the shipped demo staff and accounts are never mixed in.
        """
        local = self.base_dir / folder / name
        if local.exists() or (folder == "config" and local.parent.is_dir()):
            return local
        return SHIPPED_DIR / folder / name

    def folder_candidates(self, folder):
        """Both places a folder is looked up, local first."""
        return [self.base_dir / folder, SHIPPED_DIR / folder]

    def staff_by_email(self, address):
        return self.extra["_staff_index"].get(address.lower())

    def account_for(self, address):
        return self.extra["_account_index"].get(unicode_domain(address.rpartition("@")[2]))

    def summary(self):
        lines = [
            f"configuration OK: {self.ini_path}",
            f"  public address {self.public_address}, notifications {self.notifications_address}",
            f"  intake {self.protocol} on {self.listen_host}:{self.listen_port}, "
            f"max {self.max_message_size} bytes",
            f"  outbound {self.mode}: "
            + (f"relay {self.relay_host}:{self.relay_port}, tls {self.tls}"
               + (f", login {self.username}" if self.username else "")
               if self.mode == "smtp" else str(self.maildir)),
            f"  database {self.database}",
            f"  {len(self.staff)} staff ({sum(1 for s in self.staff if s.active)} active), "
            f"{len(self.accounts)} accounts",
        ]
        config = inboxes.of(self)
        if config.inboxes:
            lines.append(f"  {len(config.inboxes)} inboxes (default {config.default_inbox or 'none'})")
        for what, path in self.files.items():
            lines.append(f"  {what}: {path}")
        return "\n".join(lines)


def data_dir_of(values):
    """The key, state file and wake-up names: `[connector] data_dir`, else the SQLite file's folder."""
    if values.get("data_folder"):
        return values["data_folder"]
    return DEFAULT_DATA_DIR if isinstance(values["database"], PostgresURL) else values["database"].parent


def _convert(key, raw, ini_path):
    where = f"[{key.section}] {key.name}"
    value = raw.strip()
    if key.kind == "str":
        return {key.field: value}
    if key.kind == "address":
        if not ADDRESS_RE.match(value):
            raise ConfigError(ini_path, where, f"{value!r} is not an email address",
                              "write a plain address such as support@example.com")
        return {key.field: value.lower()}
    if key.kind == "addresses":
        addresses = [a.strip().lower() for a in value.replace(";", ",").split(",") if a.strip()]
        for address in addresses:
            if not ADDRESS_RE.match(address):
                raise ConfigError(ini_path, where, f"{address!r} is not an email address",
                                  "write plain addresses separated by commas")
        return {key.field: addresses}
    if key.kind == "bool":
        truth = parse_bool(value)
        if truth is None:
            raise ConfigError(ini_path, where, f"{value!r} is not yes or no", "write yes or no")
        return {key.field: truth}
    if key.kind == "count":
        if not value.isdigit():
            raise ConfigError(ini_path, where, f"{value!r} is not a whole number", "write 0 or more, e.g. 5")
        return {key.field: int(value)}
    if key.kind == "processes":  # auto, or how many
        if value != "auto" and not (value.isdigit() and 1 <= int(value) <= MAX_PROCESSES):
            raise ConfigError(ini_path, where, f"{value!r} is not auto or a number from 1 to {MAX_PROCESSES}",
                              "write auto, or a number such as 2")
        return {key.field: value if value == "auto" else int(value)}
    if key.kind == "choice":
        if value not in key.choices:
            raise ConfigError(ini_path, where, f"{value!r} is not one of {', '.join(key.choices)}",
                              f"use one of: {', '.join(key.choices)}")
        return {key.field: value}
    if key.kind == "size":
        size = parse_size(value)
        if not size:
            raise ConfigError(ini_path, where, f"{value!r} is not a positive size in bytes",
                              "write a number of bytes such as 10000000, or 10M")
        if not SIZE_MIN <= size <= SIZE_MAX:
            raise ConfigError(ini_path, where, f"{value!r} is {size} bytes, outside {SIZE_MIN} (10K) to "
                              f"{SIZE_MAX} (1G)", "a bare number is bytes: write the unit, such as 25M")
        return {key.field: size}
    if key.kind == "float":
        try:
            number = float(value)
        except ValueError:
            number = -1
        if number < 0:
            raise ConfigError(ini_path, where, f"{value!r} is not a number of seconds",
                              "write a number such as 30 or 0.5")
        return {key.field: number}
    if key.kind == "database" and PostgresURL.of(value):
        return {key.field: PostgresURL.of(value, origin=str(ini_path))}
    if key.kind in ("path", "database"):
        if not value:
            raise ConfigError(ini_path, where, "is empty", "give a file or folder path")
        path = Path(value)
        return {key.field: path if path.is_absolute() else (ini_path.parent / path).resolve()}
    if key.kind == "file":  # optional: empty means none
        if not value:
            return {key.field: None}
        path = Path(value)
        return {key.field: path if path.is_absolute() else (ini_path.parent / path).resolve()}
    if key.kind == "hostport":
        if not value and not key.default:  # optional, e.g. [metrics] listen: empty turns it off
            return {f"{key.field}_host": None, f"{key.field}_port": None, key.field: ""}
        match = re.match(r"^\[?([^\[\]]*?)\]?:(\d+)$", value)
        port = int(match.group(2)) if match else 0
        if not match or not match.group(1) or not 0 < port < 65536:
            raise ConfigError(ini_path, where, f"{value!r} is not HOST:PORT",
                              f"write it as HOST:PORT, e.g. {key.default or '127.0.0.1:9325'}, or [::1]:PORT")
        return {f"{key.field}_host": match.group(1), f"{key.field}_port": port, key.field: value}
    raise AssertionError(key.kind)


def unreadable_hint():
    """What to do about a configuration file this process may not read, in the user's words."""
    import getpass
    return (f"it must be readable by the user the connector runs as (here: {getpass.getuser()}), "
            "e.g. chgrp connector FILE && chmod 0640 FILE")


def _read_ini(ini_path):
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",),
                                       comment_prefixes=(";", "#"), strict=True)
    try:
        with open(ini_path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(ini_path, "-", "file not found",
                          "pass -c PATH or set CONNECTOR_CONFIG; "
                          "connector.ini.example shows every key") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(ini_path, "-", f"cannot be read as INI: {exc}".replace("\n", " "),
                          "sections look like [connector], keys like name = value") from None
    except OSError as exc:
        raise ConfigError(ini_path, "-", f"cannot be read: {exc.strerror}", unreadable_hint()) from None
    return parser


def load_ini(ini_path):
    """The INI's values, converted, with defaults for missing keys."""
    ini_path = Path(ini_path).resolve()
    parser = _read_ini(ini_path)
    for section in parser.sections():
        if section not in SECTIONS:
            raise ConfigError(ini_path, f"[{section}]", "unknown section",
                              f"known sections: {', '.join(SECTIONS)}")
        for name in parser[section]:
            if (section, name) not in BY_NAME:
                known = ", ".join(k.name for k in KEYS if k.section == section)
                raise ConfigError(ini_path, f"[{section}] {name}", "unknown key",
                                  f"keys of [{section}]: {known}")
    values = {}
    for key in KEYS:
        raw = parser.get(key.section, key.name, fallback=key.default)
        values.update(_convert(key, raw, ini_path))
    if isinstance(values["database"], PostgresURL):
        values["database"].password_file = values["database_password_file"]
    values["node_name"] = values["node_name"] or socket.gethostname()
    if isinstance(values["database"], PostgresURL):
        values["database"].node = values["node_name"]
    if values["failover_seconds"] <= 0:
        raise ConfigError(ini_path, "[node] failover_seconds", "must be more than 0",
                          "write the seconds another node may take to take over, e.g. 30")
    if "{number}" not in values["ticket_tag"]:
        raise ConfigError(ini_path, "[connector] ticket_tag", "does not contain {number}",
                          "write it like [Ticket #{number}]")
    if set("{}") & set(values["ticket_tag"].replace("{number}", "")):
        # Anything else in braces is a format field the tag cannot fill: every new ticket
        # would fail at processing time.
        raise ConfigError(ini_path, "[connector] ticket_tag", "has braces other than {number}",
                          "write it like [Ticket #{number}]; {number} is the only placeholder")
    if " " in values["internal_keyword"]:
        raise ConfigError(ini_path, "[connector] internal_keyword", "contains a space",
                          "the keyword must be a single word, e.g. *123*")
    if values["public_address"] == values["notifications_address"]:
        raise ConfigError(ini_path, "[connector] notifications_address",
                          "is the same as public_address",
                          "mail to the notifications address goes to review; use another address")
    if values["staff_authentication"] == "authentication_results" and not values["trusted_authserv_ids"].strip():
        raise ConfigError(ini_path, "[security] trusted_authserv_ids", "is empty while staff_authentication = "
                          "authentication_results", "no employee's mail would count as theirs: list your MTA's "
                          "authserv-id (e.g. mx.example.com), or set staff_authentication = from")
    if values["mode"] == "smtp" and _same_endpoint(values):
        raise ConfigError(ini_path, "[outbound] relay", f"{values['relay']} is the connector's own [smtp] listen "
                          "address", "outgoing mail would come straight back in: point relay at your MTA "
                          "(usually Postfix on 127.0.0.1:25)")
    if not values["hostname"]:
        values["hostname"] = values["public_address"].rpartition("@")[2]
    return ini_path, values


def _readable(ini_path, name, path, hint):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(ini_path, f"[outbound] {name}", f"cannot read {path}: {exc.strerror}", hint) from None


def _check_relay(ini_path, values):
    """The smarthost keys: a timeout, a login with its password file, over TLS."""
    if values["timeout"] <= 0:
        raise ConfigError(ini_path, "[outbound] timeout", "must be more than 0 seconds", "write e.g. 30")
    if values["ca_file"]:
        _readable(ini_path, "ca_file", values["ca_file"], "give the PEM file of the CA that signed the relay's certificate")
    if values["password_file"] and not values["username"]:
        raise ConfigError(ini_path, "[outbound] username", "is empty while password_file is set",
                          "write the relay login, e.g. username = support@example.com")
    if not values["username"]:
        return
    if not values["password_file"]:
        raise ConfigError(ini_path, "[outbound] password_file", "is empty while username is set",
                          "put the password in a file readable only by the connector and name it here")
    _readable(ini_path, "password_file", values["password_file"],
              "the connector's user must be able to read it (chown connector, chmod 600)")
    if values["tls"] == "none":
        raise ConfigError(ini_path, "[outbound] tls", "is none while username is set",
                          "the password would cross the network in clear: use tls = starttls (port 587) "
                          "or tls = tls (port 465)")


LOCALHOST_NAMES = ("localhost", "localhost.localdomain")


def _loopback_family(host):
    """4 or 6 for a loopback address or a name for one (localhost: both), else None."""
    if host in LOCALHOST_NAMES:
        return {4, 6}
    if host.startswith("127."):
        return {4}
    if host == "::1":
        return {6}
    return None


def _same_endpoint(values):
    """Whether [outbound] relay reaches the socket [smtp] listen accepts mail on.

    Equal hosts; a wildcard listen (any address) and a relay on this machine; a
    wildcard relay (connecting to 0.0.0.0 reaches this machine) and a loopback or
    wildcard listen; or loopback addresses of the same family (localhost is both).
    127.0.0.1 and ::1 are different sockets.
    """
    if values["relay_port"] != values["listen_port"]:
        return False
    relay, listen = values["relay_host"].lower(), values["listen_host"].lower()
    if relay == listen:
        return True
    relay_loop, listen_loop = _loopback_family(relay), _loopback_family(listen)
    if listen in WILDCARD_HOSTS:
        return relay in WILDCARD_HOSTS or relay_loop is not None
    if relay in WILDCARD_HOSTS:
        return listen_loop is not None
    return bool(relay_loop and listen_loop and relay_loop & listen_loop)


def read_yaml(path):
    """A YAML file's document (None when empty); unreadable or invalid is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "-", f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot be read: {exc.strerror}", unreadable_hint()) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, *yamlfile.problem(exc), "check indentation and quoting") from None
    return data


def load_yaml(path, top_key):
    """A YAML file whose top level is a mapping with one list under `top_key`."""
    return yamlfile.entries(path, yamlfile.top_mapping(path, read_yaml(path), (top_key,)), top_key)


def _email_list(path, where, value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(path, where, "must be a non-empty list of addresses",
                          "write emails: [jane@example.com]")
    out = []
    for item in value:
        if not isinstance(item, str) or not ADDRESS_RE.match(item.strip()):
            raise ConfigError(path, where, f"{item!r} is not an email address",
                              "write plain addresses such as jane@example.com")
        out.append(item.strip().lower())
    return tuple(out)


def _refuse_own_addresses(path, staff, values):
    """The connector's own addresses are not an employee's: their mail would be filed as staff mail."""
    own = {values["public_address"]: "public_address", values["notifications_address"]: "notifications_address"}
    for index, member in enumerate(staff):
        for email in member.emails:
            local, _, domain = email.partition("@")
            bare = f"{local.partition('+')[0]}@{domain}"  # support+billing@ reaches us too
            if bare in own:
                raise ConfigError(path, f"staff[{index}].emails", f"{email} is the connector's own "
                                  f"{own[bare]} ({member.name})",
                                  "staff write to this address from their own; list their personal address")


def check_config_folder(settings):
    """Every file in the config/ folder next to the ini is one the connector reads.

    A typo (scanner.yaml, staff.yml) would otherwise be ignored without a word.
    Hidden files, editor backups and package-manager leftovers are let be.
    """
    folder = settings.base_dir / "config"
    if not folder.is_dir():
        return
    known = CONFIG_FILES
    for path in sorted(folder.iterdir()):
        name = path.name
        if name in known or path.is_dir() or name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            continue
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(path, "-", "is not a file the connector reads",
                          f"{hint}config/ holds {', '.join(known)}; rename the file, "
                          "or move it out of config/ (names ending in .example or .bak are let be)")


def load_staff(path):
    staff, seen = [], {}
    for index, entry in enumerate(load_yaml(path, "staff")):
        where = f"staff[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, where, "must be a mapping", "each entry has name, emails, active, receive")
        unknown = set(entry) - STAFF_KEYS
        if unknown:
            raise ConfigError(path, f"{where}.{sorted(unknown)[0]}", "unknown key",
                              f"staff entries take: {', '.join(sorted(STAFF_KEYS))}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(path, f"{where}.name", "is missing", "give the employee's full name")
        emails = _email_list(path, f"{where}.emails", entry.get("emails"))
        for email in emails:
            if email in seen:
                raise ConfigError(path, f"{where}.emails", f"{email} is already listed for {seen[email]}",
                                  "an address must identify exactly one employee: remove one of the two")
            seen[email] = name
        active = entry.get("active", True)
        if not isinstance(active, bool):
            raise ConfigError(path, f"{where}.active", f"{active!r} is not true or false", "write true or false")
        receive = entry.get("receive", RECEIVE_MANAGER)
        if receive is False:
            # YAML 1.1 reads an unquoted `off` (the seed's "OFF") as false.
            receive = "off"
        elif isinstance(receive, str):
            receive = receive.strip().lower()
        if receive not in RECEIVE_OPTIONS:
            raise ConfigError(path, f"{where}.receive", f"{receive!r} is not a recipient option",
                              f"use one of: {', '.join(RECEIVE_OPTIONS)}")
        staff.append(Staff(name.strip(), emails, active, receive))
    return staff


def load_accounts(path, staff_index):
    accounts, domains = [], {}
    for index, entry in enumerate(load_yaml(path, "accounts")):
        where = f"accounts[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, where, "must be a mapping", "each entry has name, domains, manager")
        unknown = set(entry) - ACCOUNT_KEYS
        if unknown:
            raise ConfigError(path, f"{where}.{sorted(unknown)[0]}", "unknown key",
                              f"account entries take: {', '.join(sorted(ACCOUNT_KEYS))}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(path, f"{where}.name", "is missing", "give the account's name")
        raw_domains = entry.get("domains") or []
        if isinstance(raw_domains, str):
            raw_domains = [raw_domains]
        if not isinstance(raw_domains, list) or not all(isinstance(d, str) and d.strip() for d in raw_domains):
            raise ConfigError(path, f"{where}.domains", "must be a list of domains", "write domains: [customer.example]")
        for domain in raw_domains:
            domain = unicode_domain(domain.lstrip().lstrip("@"))
            if domain in domains:
                raise ConfigError(path, f"{where}.domains", f"{domain} is already the domain of {domains[domain]}",
                                  "a domain can belong to one account only")
            domains[domain] = name
        manager = (entry.get("manager") or "").strip().lower()
        if manager and manager not in staff_index:
            raise ConfigError(path, f"{where}.manager", f"{manager} is not a staff email",
                              "list the manager in config/staff.yaml first")
        main_contact = (entry.get("main_contact") or "").strip().lower()
        if main_contact and not ADDRESS_RE.match(main_contact):
            raise ConfigError(path, f"{where}.main_contact", f"{main_contact!r} is not an email address",
                              "write a plain address")
        staff_email = staff_index[manager].email if manager else ""
        accounts.append(Account(name.strip(), tuple(unicode_domain(d.lstrip().lstrip("@")) for d in raw_domains),
                                staff_email, main_contact))
    return accounts


def load_settings(ini_path):
    """Read the ini, config/staff.yaml and config/accounts.yaml (packages above settings read
    their own files of config/ from the result, e.g. `connector.scanners.config`)."""
    ini_path, values = load_ini(ini_path)
    if values["mode"] == "smtp":
        _check_relay(ini_path, values)  # here, not in load_ini: `outbox list` needs no password
    settings = Settings(ini_path=ini_path, values=values)
    check_config_folder(settings)
    staff_path = settings.find("config", "staff.yaml")
    settings.staff = load_staff(staff_path) if staff_path.exists() else []
    settings.files["staff"] = staff_path if staff_path.exists() else "(none)"
    index = {email: member for member in settings.staff for email in member.emails}
    _refuse_own_addresses(staff_path, settings.staff, values)
    settings.extra["_staff_index"] = {e: s for e, s in index.items() if s.active}
    accounts_path = settings.find("config", "accounts.yaml")
    settings.accounts = load_accounts(accounts_path, index) if accounts_path.exists() else []
    settings.files["accounts"] = accounts_path if accounts_path.exists() else "(none)"
    settings.extra["_account_index"] = {d: a for a in settings.accounts for d in a.domains}
    inboxes.load_inboxes(settings, read_yaml)
    auto_emails.load_auto_emails(settings, read_yaml)
    return settings
