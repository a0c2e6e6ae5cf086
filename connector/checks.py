"""Everything `connector run` loads, loaded and checked in one place: `load_checked`.

`check-config`, `run` before it starts, and every process on a reload call
it, so what check-config accepts is exactly what the daemon can run on, and
a reload that fails here leaves the running configuration in force:

    ini + config/*.yaml   (connector.settings; scanners.yaml: connector.scanners.config)
    reply rules           (rules/quotes.yaml + quotes.local.yaml)
    mail templates        every file compiled, the known ones rendered with sample values
    data directory        writable by the user this process runs as, the database files too

It sits above settings, reply and outbound, below the commands and the daemon.
Every problem is a `ConfigError`: file, key, what is wrong, a hint.
"""

import os
import pwd
import time
from pathlib import Path

import jinja2

from connector.log import get_logger, setup_logging
from connector.outbound.compose import Templates
from connector.reply import RuleError, load_extractor
from connector.reply.rules import RULES_FILE
from connector.scanners.config import scanners_of
from connector.settings import ConfigError, inboxes, load_settings
from connector.settings import auto_emails as auto_email_config
from connector.settings.errors import permission_denied
from connector.settings.values import PostgresURL
from connector.store.db import spool_path
from connector.workqueue import auto_emails

log = get_logger("config")

RECHECK_EVERY = 2.0  # seconds between two looks at a bad configuration by a waiting process
TEMPLATE_SAMPLES = {
    "auto_response.txt.j2": {
        "ticket": {"number": 1, "subject": "Printer", "tag": "[Ticket #1]"},
        "sender": {"name": "Ann", "address": "ann@example.org"}, "message": {"subject": "Printer"},
        "settings": {"public_address": "support@example.com", "response_from_name": "Support"},
        "reply_above": "##- Please type your reply above this line -##"},
    "inbound_notice.txt.j2": {
        "reason": "unknown_sender", "ticket_number": 1, "item_id": 7,
        "message": {"subject": "Printer", "from_addr": "ann@example.org", "from_name": "Ann",
                    "message_id": "<1@example.org>"},
        "settings": {"public_address": "support@example.com", "notifications_address": "noreply@example.com"}},
    "staff_command_result.txt.j2": {
        "ok": False, "refusal": "nothing was done: a command was refused", "summary": "#take\n  refused: owned",
        "lines": [{"text": "#take", "outcome": "refused: owned by jane@example.com", "done": False}],
        "ticket": {"number": 1, "subject": "Printer", "tag": "[Ticket #1]"}, "item": None,
        "message": {"subject": "[Ticket #1] Printer", "message_id": "<1@example.com>"},
        "settings": {"public_address": "support@example.com", "notifications_address": "noreply@example.com"}},
}
TEMPLATE_SUFFIX = ".j2"
DATA_DIR_HINT = ("create it for that user, e.g. install -d -o connector -g connector -m 0700 /var/lib/connector "
                 "(the systemd unit's StateDirectory= does this), or set [connector] database")


def load_checked(ini_path):
    """Settings, rules, templates and data directory as `run` will use them; raises ConfigError
    (a folder or file the connector's user may not read is one too)."""
    try:
        return _load_checked(ini_path)
    except PermissionError as exc:
        raise permission_denied(exc) from None


def _load_checked(ini_path):
    settings = load_settings(ini_path)
    scanners_of(settings)  # config/scanners.yaml, read and checked
    check_rules(settings)
    check_templates(settings)
    check_data_dir(settings)
    inboxes.install(settings)  # only now: a reload refused by any check changes nothing
    return settings


def checked_or_wait(ini_path, process):
    """`load_checked`, waiting while the configuration is bad: a background process
    (re)started while the files on disk are broken logs `config.invalid` once per
    distinct problem and starts when they are fixed, rather than exiting and being
    restarted in a loop. The running daemon keeps accepting mail meanwhile."""
    reported = None
    while True:
        try:
            return load_checked(ini_path)
        except ConfigError as exc:
            if str(exc) != reported:
                if reported is None:
                    setup_logging()
                log.error("config.invalid", process=process, error=str(exc),
                          waiting="for a good configuration")
                reported = str(exc)
        time.sleep(RECHECK_EVERY)


def check_rules(settings):
    """The reply rules load and compile (a bad regex in quotes.local.yaml shows now)."""
    try:
        extractor = load_extractor(settings.folder_candidates("rules"))
    except RuleError as exc:
        file, sep, rest = str(exc).partition(": ")
        if not sep:
            raise ConfigError(settings.find("rules", RULES_FILE), "-", str(exc),
                              "the shipped rules are missing: reinstall connector") from None
        key, sep, problem = rest.partition(": ")
        if not sep:
            key, problem = "-", rest
        raise ConfigError(file, key, problem, "fix the rule; `connector strip-reply --rules FOLDER FILE` "
                          "tries rules on a reply") from None
    settings.files["reply rules"] = f"{extractor.version} ({', '.join(extractor.ruleset.files)})"


def check_templates(settings):
    """Compile every template and render the known ones, so a typo shows now, not on the first mail."""
    try:
        templates = Templates(settings.folder_candidates("templates"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(getattr(exc, "filename", None) or settings.base_dir / "templates", "-",
                          f"cannot be read: {exc}", "templates are UTF-8 text files the daemon's user can read") \
            from None
    named = {rule.template for rule in auto_email_config.of(settings).rules}
    for name, path in templates.files.items():
        if name.endswith(TEMPLATE_SUFFIX):
            sample = TEMPLATE_SAMPLES.get(name) or (auto_emails.SAMPLE_VALUES if name in named else None)
            _check_template(templates, name, path, sample)
    for name in TEMPLATE_SAMPLES:
        if name not in templates.files:
            raise ConfigError(settings.find("templates", name), "-", "is missing",
                              "the shipped templates are missing: reinstall connector")
    settings.files["templates"] = ", ".join(str(path) for path in templates.files.values())


def _check_template(templates, name, path, sample):
    try:
        template = templates.env.get_template(name)
        if sample is not None:
            template.render(**sample)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(path, f"line {exc.lineno}", f"template syntax: {exc.message}",
                          "check the {{ }} and {% %} pairs") from None
    except Exception as exc:
        line = _template_line(exc, str(path))
        raise ConfigError(path, f"line {line}" if line else "-", f"cannot be rendered: {exc}",
                          f"the variables {name} can use: {', '.join(sorted(sample or {}))}") from None


def _template_line(exc, filename):
    """The template line a render error happened on (jinja puts template frames in the traceback)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def check_data_dir(settings):
    """The data directory (and the outgoing maildir) writable by this process's user; the files ours.

    The database files are never opened here: closing any descriptor of a file
    drops the SQLite locks this process holds on it (a reload runs this in
    processes that have the store open). `open_store` reports a file that is
    not a database.
    """
    folders = [("[connector] database", settings.data_dir)]
    if settings.mode == "maildir":
        folders.append(("[outbound] maildir", settings.maildir))
    for key, folder in folders:
        _check_writable(settings.ini_path, key, Path(folder))
    database = settings.database
    if isinstance(database, PostgresURL):
        return  # a server's files are the server's: `check-config` connects to it instead
    for path in (database, spool_path(database)):
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if name.exists() and not os.access(name, os.R_OK | os.W_OK):
                raise ConfigError(settings.ini_path, "[connector] database",
                                  f"user {_user()} cannot read and write {name}",
                                  f"give the data directory's files to that user: chown -R {_user()} {name.parent}")


def _check_writable(ini_path, key, folder):
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(ini_path, key, f"{folder} does not exist and user {_user()} cannot create it",
                              DATA_DIR_HINT)
        return
    if not folder.is_dir():
        raise ConfigError(ini_path, key, f"{folder} is not a folder", DATA_DIR_HINT)
    probe = folder / f".connector-write-check-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(ini_path, key, f"user {_user()} cannot write in {folder}: {exc.strerror}",
                          DATA_DIR_HINT) from None
