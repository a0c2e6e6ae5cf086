"""Values written by people, read once for every file: sizes and yes/no.

`connector.ini` (`settings.loader`) and the scanner rules of
`config/scanners.yaml` (`connector.scanners.conditions`) read them with these
functions, so `25M` or `yes` means the same in both. Each returns None for
text it cannot read: the caller names the file and key in its error.
"""

import re

SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.I)
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
BOOL_WORDS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False,
              "0": False}


def parse_size(text):
    """Bytes of `26214400`, `100k`, `25M`, `1 GB` (units of 1024, any case), else None."""
    match = SIZE_RE.match(str(text))
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()] if match else None


def parse_bool(text):
    """True or False of yes/no, true/false, on/off, 1/0 (any case), else None."""
    return BOOL_WORDS.get(str(text).strip().lower())


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class PostgresURL(str):
    """`[connector] database` naming a PostgreSQL database (libpq's URL, TLS options and all)
    rather than an SQLite file; `password_file` is `[connector] password_file` (None: libpq
    reads PGPASSWORD or ~/.pgpass itself)."""

    password_file = None
    node = ""                        # [node] name: the processes of one node share wake-ups (store.wakeup)
    origin = "connector.ini"         # where it was given, for error lines: the ini file, or a command
    key = "[connector] database"     # ... and under which name

    @staticmethod
    def of(text, origin=None, key=None):
        """The URL when `text` is one, else None (a path: SQLite)."""
        if not text.strip().lower().startswith(POSTGRES_SCHEMES):
            return None
        url = PostgresURL(text)
        url.origin, url.key = origin or url.origin, key or url.key
        return url
