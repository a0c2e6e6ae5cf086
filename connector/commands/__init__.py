"""Operator commands, one module per group. Each module has `register(subparsers)`
that adds its subcommands; each subcommand's handler takes (args) and returns an exit code.

Commands sit on top: nothing below `connector.commands` imports them. A new
command group is one module here plus its line in `COMMANDS`.

`connector tickets list` imports the tickets module alone (`register_for`), not
the daemon, the pipeline and every other group: a command's start-up is most
of its time (`tickets list --limit 100` at 50,000 tickets: 0.27-0.31 s with
every module loaded; issue 14's target is 0.3 s). `connector --help`, and a
word that is no command, load them all.
"""

# Each module, in the order `connector --help` lists them, and its top-level command words
# (tests/test_cli_arguments.py checks them against what the module's `register` adds).
COMMANDS = {
    "daemon": ("run", "worker", "deliver", "check-config", "example-config"),
    "intake": ("inject", "replay"),
    "tickets": ("tickets", "message"),
    "inbound": ("inbound",),
    "inbox": ("inbox",),
    "outbox": ("outbox",),
    "blocks": ("blocks", "why"),
    "mailtools": ("strip-reply", "parse"),
    "scanners": ("example-scanners", "scanners"),
    "db": ("db",),
    "status": ("status",),
    "auto_emails": ("auto-emails",),
    "nodes": ("nodes",),
}
MODULE_OF = {word: module for module, words in COMMANDS.items() for word in words}


def module(name):
    """The command module `name`, imported now (one written-out import per module)."""
    if name == "daemon":
        from connector.commands import daemon as found
    elif name == "intake":
        from connector.commands import intake as found
    elif name == "tickets":
        from connector.commands import tickets as found
    elif name == "inbound":
        from connector.commands import inbound as found
    elif name == "inbox":
        from connector.commands import inbox as found
    elif name == "outbox":
        from connector.commands import outbox as found
    elif name == "blocks":
        from connector.commands import blocks as found
    elif name == "mailtools":
        from connector.commands import mailtools as found
    elif name == "scanners":
        from connector.commands import scanners as found
    elif name == "db":
        from connector.commands import db as found
    elif name == "status":
        from connector.commands import status as found
    elif name == "auto_emails":
        from connector.commands import auto_emails as found
    elif name == "nodes":
        from connector.commands import nodes as found
    else:
        raise KeyError(name)
    return found


def register_all(subparsers):
    for name in COMMANDS:
        module(name).register(subparsers)


def register_for(subparsers, word):
    """Register the module of command `word` only; every module when `word` is none of ours."""
    if word in MODULE_OF:
        module(MODULE_OF[word]).register(subparsers)
    else:
        register_all(subparsers)
