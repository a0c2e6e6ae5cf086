"""Operator commands, one module per group. Each module has `register(subparsers)`
that adds its subcommands; each subcommand's handler takes (args) and returns an exit code.

A new command group is one module here plus one line in `MODULES`.
"""

import importlib

MODULES = (
    "connector.commands.daemon",     # run, worker, check-config, example-config
    "connector.commands.intake",     # inject, replay
    "connector.commands.tickets",    # tickets, inbound, message
    "connector.commands.inbox",      # inbox list|show|add|take|complete|cancel|forward
    "connector.commands.outbox",     # outbox list|retry|cancel
    "connector.commands.mailtools",
    "connector.commands.scanners",   # scanners status|run|test
    "connector.commands.db",         # db status|upgrade|prune|vacuum
    "connector.commands.status",     # status (health check)
)


def register_all(subparsers):
    for name in MODULES:
        importlib.import_module(name).register(subparsers)
