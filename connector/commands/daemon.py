"""`run`, `worker`, `check-config`, `example-config`."""

import os
import sys

from connector.checks import checked_or_wait, load_checked
from connector.commands.common import EX_CONFIG
from connector.settings import ConfigError
from connector.settings.schema import render_example
from connector.store.db import PostgresUnavailable, probe


def cmd_run(args):
    settings = checked_or_exit(args)
    from connector.app import ListenError, run_daemon, wait_for_database
    from connector.health.daemonlock import DaemonRunning
    from connector.store.nodes import NameInUse
    from connector.store.storekey import KeyMismatch
    from connector.log import setup_logging
    setup_logging(settings.log_level, node=settings.node_name)
    try:
        wait_for_database(settings)
        return run_daemon(settings, settings.ini_path, with_worker=not args.no_worker)
    except (ListenError, DaemonRunning, NameInUse, KeyMismatch) as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return EX_CONFIG


def _background(args, name, **options):
    settings = checked_or_wait(args.config, name)
    from connector.app import run_background
    from connector.log import setup_logging
    setup_logging(settings.log_level, node=settings.node_name)
    return run_background(name, settings, **options)


def cmd_worker(args):
    return _background(args, "worker", partition=args.partition)


def _partition(text):
    import argparse

    from connector.worker import parse_partition
    try:
        return parse_partition(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N, e.g. 1/2") from None


def cmd_deliver(args):
    return _background(args, "deliver")


def checked_or_exit(args):
    """Everything `run` loads (connector.checks), or the one-line error and exit 1."""
    try:
        return load_checked(args.config)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def cmd_check_config(args):
    settings = checked_or_exit(args)
    away = None
    try:
        probe(settings.database)
    except PostgresUnavailable as exc:
        if not exc.unreachable:  # it answers and refuses us: the configuration's fault
            print(f"connector: configuration error: {exc}", file=sys.stderr)
            return EX_CONFIG
        away = exc
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if away is not None:  # down or restarting: not the configuration's fault, and `run` waits for it
        print(f"connector: warning: {away.problem}, so the daemon will wait for it to come back "
              f"(hint: if it should be up, check host and port in {away.file} {away.key})", file=sys.stderr)
    for warning in warnings(settings):
        print(f"connector: warning: {warning}", file=sys.stderr)
    print(settings.summary())
    return 0


def _owner(folder):
    """The user owning `folder` (or its nearest existing parent), unless that is root."""
    import pwd
    from pathlib import Path
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        name = pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return None
    return None if name == "root" else name


def warnings(settings):
    """What works but should be changed, in the user's words."""
    if os.geteuid() == 0:
        owner = _owner(settings.data_dir)
        yield (f"checked as root, who may read and write everything; the daemon runs as its own user "
               f"(the unit's: connector): check as that user, e.g. "
               f"`runuser -u {owner or 'connector'} -- connector -c {settings.ini_path} check-config`")
    for secret, key in ((settings.password_file, "[outbound] password_file"),
                        (settings.database_password_file, "[connector] password_file")):
        if secret and secret.exists() and secret.stat().st_mode & 0o004:
            yield (f"{secret} ({key}) can be read by every user of this machine; "
                   f"chmod 0600 it (or 0640 with group connector)")


def cmd_example_config(args):
    sys.stdout.write(render_example())
    return 0


def register(subparsers):
    p = subparsers.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--no-worker", action="store_true",
                   help="only accept mail; file and deliver it with separately run `connector worker` "
                        "and `connector deliver`")
    p.set_defaults(handler=cmd_run)
    p = subparsers.add_parser("worker", help="file spooled messages (started by `run`)")
    p.add_argument("--partition", type=_partition, metavar="I/N",
                   help="file only the spool entries whose id modulo N is I - 1 (the daemon runs "
                        "[worker] processes = N workers this way); default: all")
    p.set_defaults(handler=cmd_worker)
    p = subparsers.add_parser("deliver", help="deliver the outbox (started by `run`)")
    p.set_defaults(handler=cmd_deliver)
    p = subparsers.add_parser("check-config", help="validate the configuration and print a summary")
    p.set_defaults(handler=cmd_check_config)
    p = subparsers.add_parser("example-config", help="print connector.ini.example (every key, its default)")
    p.set_defaults(handler=cmd_example_config)
