"""`run`, `worker`, `check-config`, `example-config`."""

import sys

from connector.commands.common import EX_CONFIG, settings_or_exit
from connector.settings import ConfigError, load_settings
from connector.settings.schema import render_example


def cmd_run(args):
    settings = settings_or_exit(args, EX_CONFIG, log=False)
    try:
        check_templates(settings)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    from connector.app import ListenError, run_daemon
    from connector.log import setup_logging
    setup_logging(settings.log_level)
    try:
        return run_daemon(settings, settings.ini_path, with_worker=not args.no_worker)
    except ListenError as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return EX_CONFIG


def _background(args, loop_name):
    settings = settings_or_exit(args, EX_CONFIG, log=False)
    from connector import worker
    from connector.log import setup_logging
    setup_logging(settings.log_level)
    return worker.process_main(getattr(worker, loop_name), settings)


def cmd_worker(args):
    return _background(args, "FilingWorker")


def cmd_deliver(args):
    return _background(args, "DeliveryWorker")


TEMPLATE_SAMPLES = {
    "auto_response.txt.j2": {
        "ticket": {"number": 1, "subject": "Printer", "tag": "[Ticket #1]"},
        "sender": {"name": "Ann", "address": "ann@example.org"}, "message": {"subject": "Printer"},
        "settings": {"public_address": "support@example.com", "response_from_name": "Support"},
        "reply_above": "##- Please type your reply above this line -##"},
    "inbound_notice.txt.j2": {
        "reason": "unknown_sender", "ticket_number": 1,
        "message": {"subject": "Printer", "from_addr": "ann@example.org", "from_name": "Ann",
                    "message_id": "<1@example.org>"},
        "settings": {"public_address": "support@example.com", "notifications_address": "noreply@example.com"}},
}


def check_templates(settings):
    """Render every mail template once with sample values, so a typo shows now, not on the first mail."""
    from connector.outbound.compose import Templates
    templates = Templates(settings.folder_candidates("templates"))
    for name, sample in TEMPLATE_SAMPLES.items():
        try:
            templates.render(name, **sample)
        except Exception as exc:
            raise ConfigError(settings.find("templates", name), "-", f"cannot be rendered: {exc}",
                              "check the jinja2 syntax and the variable names") from None


def cmd_check_config(args):
    try:
        settings = load_settings(args.config)
        check_templates(settings)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(settings.summary())
    return 0


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
    p.set_defaults(handler=cmd_worker)
    p = subparsers.add_parser("deliver", help="deliver the outbox (started by `run`)")
    p.set_defaults(handler=cmd_deliver)
    p = subparsers.add_parser("check-config", help="validate the configuration and print a summary")
    p.set_defaults(handler=cmd_check_config)
    p = subparsers.add_parser("example-config", help="print connector.ini.example (every key, its default)")
    p.set_defaults(handler=cmd_example_config)
