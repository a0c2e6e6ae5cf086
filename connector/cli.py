"""`connector [-c INI] COMMAND ...`: parse arguments, dispatch to a command module.

Commands live in `connector.commands`; this module only builds the parser,
with the subcommands of the command asked for (`command_word`), or all of them
for `--help` and a mistyped word. The ini comes from -c/--config, else
$CONNECTOR_CONFIG, else /etc/connector/connector.ini.
"""

import argparse
import os
import sys

from connector import __version__
from connector.commands import register_for
from connector.commands.common import EX_CONFIG, printable_stdout
from connector.settings import ConfigError
from connector.settings.errors import permission_denied

DEFAULT_CONFIG = "/etc/connector/connector.ini"


def command_word(argv):
    """The command word of `argv` (its first argument that is neither an option nor the
    value of -c/--config), or None; None too after -h/--help (`connector --help tickets`
    lists every command, as `connector --help` does)."""
    options_with_value = ("-c", "--config")
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return next(args, None)
        if arg in ("-h", "--help"):
            return None
        if arg in options_with_value:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv=None):
    """The parser for `argv` (None: sys.argv), knowing the subcommands of its command only."""
    parser = argparse.ArgumentParser(prog="connector", description="Email connector for helpdesks.")
    parser.add_argument("-c", "--config", default=os.environ.get("CONNECTOR_CONFIG", DEFAULT_CONFIG),
                        help="path of connector.ini (default: $CONNECTOR_CONFIG or %(default)s)")
    parser.add_argument("--version", action="version", version=f"connector {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    register_for(subparsers, command_word(sys.argv[1:] if argv is None else argv))
    return parser


def main(argv=None):
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        with printable_stdout():
            return args.handler(args) or 0
    except ConfigError as exc:  # e.g. a database that cannot be opened: one line, no traceback
        print(f"connector: {exc}", file=sys.stderr)
        return EX_CONFIG
    except PermissionError as exc:   # a file of the configuration or the store this user may not read
        print(f"connector: {permission_denied(exc)}", file=sys.stderr)
        return EX_CONFIG
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
