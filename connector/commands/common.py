"""What several commands share: loading settings with a clear error, printing JSON or tables.

Every command prints through `printable_stdout` (installed by `connector.cli.main`): a
subject or body a stranger wrote never sends an ESC sequence to the operator's
terminal; control characters print as \\u001b escapes (valid in JSON output too).
`message export` writes the original bytes to the binary stream, untouched.
"""

import contextlib
import json
import sys
from datetime import datetime, timezone

from connector.log import printable, setup_logging
from connector.settings import ConfigError, load_settings
from connector.settings.loader import load_ini
from connector.store.db import open_store

EX_OK = 0
ALL = "all"  # a --status that lists every status (inbox list, inbound list)
EX_CONFIG = 1
EX_DATAERR = 65   # sysexits: input that can never be accepted
EX_TEMPFAIL = 75  # sysexits: try again later


def settings_or_exit(args, code=EX_CONFIG, log=True):
    """Load the settings; on a bad config print the error to stderr and exit with `code`."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(code) from None
    if log:
        setup_logging(settings.log_level, stream=sys.stderr if getattr(args, "quiet_log", True) else None,
                      node=settings.node_name)
    from connector.workqueue import auto_emails  # here: a command with the ini alone never loads the pipeline
    auto_emails.install(settings)   # a command's ticket events plan their auto-emails too
    return settings


def ini_values_or_exit(args, code=EX_CONFIG):
    """The ini's values alone: read-only commands keep working while a YAML file in
    config/ is broken (and the daemon runs on its last good config). A bad ini: exit `code`."""
    try:
        _, values = load_ini(args.config)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(code) from None
    return values


def database_or_exit(args):
    """The database (path or URL) from the ini alone (see `ini_values_or_exit`)."""
    return ini_values_or_exit(args)["database"]


def open_store_of(args, settings=None, create=False, upgrade=None):
    """Open the store a command works on (the ini alone, or `settings` when the command
    loaded them). An older schema is upgraded only with `[connector] auto_upgrade = yes`
    (or `upgrade`); otherwise SchemaOutdated (one line naming `connector db upgrade`) and
    nothing changes. A store that is not there is made only when `create` (an intake:
    `scanners run`); otherwise StoreMissing, one line (`connector.store.db`)."""
    if settings is not None:
        database, auto_upgrade = settings.database, settings.auto_upgrade
    else:
        values = ini_values_or_exit(args)
        database, auto_upgrade = values["database"], values["auto_upgrade"]
    return open_store(database, upgrade=auto_upgrade if upgrade is None else upgrade, create=create)


class PrintableStream:
    """A text stream that writes through `printable`; everything else is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(printable(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def printable_stdout():
    """sys.stdout as a `PrintableStream` for the duration of one command."""
    previous = sys.stdout
    sys.stdout = PrintableStream(previous)
    try:
        yield
    finally:
        sys.stdout = previous


def with_json(parser):
    """`parser` with the `--json` flag every listing and showing command takes."""
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def positive_int(text, least=1):
    """argparse type of --limit and --days: a whole number of 1 or more (`--limit -5` listed
    everything, `db prune --days -1` pruned every mail)."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is not {least} or more")
    return value


def limit_or_zero(text):
    """argparse type of a --limit with a default: a whole number of 1 or more, or 0 for no limit."""
    return positive_int(text, least=0)


def parse_since(text):
    """An ISO 8601 date or date-time as a timestamp (naive means UTC), or None when it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def emit(args, data, columns=None):
    """Print `data` (a list of dicts or a dict) as JSON with --json, else as a table."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=None if isinstance(data, list) else 2))
        return
    rows = data if isinstance(data, list) else [data]
    if columns is None:
        columns = list(rows[0]) if rows else []
    if not rows:
        print("(none)")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value):
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
