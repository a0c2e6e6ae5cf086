"""`[metrics] listen`, as a settings plug-in (`connector.settings.plugins`).

The loader keeps one flat namespace of key names, in which `listen` is the
SMTP intake's; so the [metrics] key is declared in the schema (documented,
known, in the example) and read here from the ini itself, validated like
every key, into `settings.extra["metrics_listen"]`: (host, port), or None
when empty (no metrics served).
"""

import configparser
import re

from connector.settings.errors import ConfigError

SECTION, KEY = "metrics", "listen"
HOSTPORT_RE = re.compile(r"^\[?([^\[\]]*?)\]?:(\d+)$")


def load_metrics(settings):
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",),
                                       comment_prefixes=(";", "#"))
    parser.read(settings.ini_path, encoding="utf-8")  # the loader has read and checked it already
    value = parser.get(SECTION, KEY, fallback="").strip()
    settings.extra["metrics_listen"] = parse_listen(settings.ini_path, value)


def parse_listen(ini_path, value):
    if not value:
        return None
    match = HOSTPORT_RE.match(value)
    port = int(match.group(2)) if match else 0
    if not match or not match.group(1) or not 0 < port < 65536:
        raise ConfigError(ini_path, f"[{SECTION}] {KEY}", f"{value!r} is not HOST:PORT",
                          "write it as 127.0.0.1:9325, or leave it empty to serve no metrics")
    return match.group(1), port
