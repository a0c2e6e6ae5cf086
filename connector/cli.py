"""`connector [-c INI] COMMAND ...`: parse arguments, dispatch to a command module.

Commands live in `connector.commands`; this module only builds the parser.
The ini comes from -c/--config, else $CONNECTOR_CONFIG, else
/etc/connector/connector.ini.
"""

import argparse
import os
import sys

from connector import __version__
from connector.commands import register_all
from connector.commands.common import EX_CONFIG, printable_stdout
from connector.settings import ConfigError
from connector.settings.errors import permission_denied

DEFAULT_CONFIG = "/etc/connector/connector.ini"


def build_parser():
    parser = argparse.ArgumentParser(prog="connector", description="Email connector for helpdesks.")
    parser.add_argument("-c", "--config", default=os.environ.get("CONNECTOR_CONFIG", DEFAULT_CONFIG),
                        help="path of connector.ini (default: $CONNECTOR_CONFIG or %(default)s)")
    parser.add_argument("--version", action="version", version=f"connector {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    register_all(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
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
