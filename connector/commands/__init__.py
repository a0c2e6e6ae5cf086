"""Operator commands, one module per group. Each module has `register(subparsers)`
that adds its subcommands; each subcommand's handler takes (args) and returns an exit code.

Commands sit on top: nothing below `connector.commands` imports them. A new
command group is one module here plus one line in `MODULES`.
"""

from connector.commands import (
    auto_emails, blocks, daemon, db, inbound, inbox, intake, mailtools, nodes, outbox, scanners, status, tickets)

MODULES = (
    daemon,      # run, worker, deliver, check-config, example-config
    intake,      # inject, replay
    tickets,     # tickets, message
    inbound,     # inbound list|replay|create-ticket|attach|close|status|delete
    inbox,       # inbox list|show|add|take|complete|cancel|forward
    outbox,      # outbox list|retry|cancel
    blocks,      # blocks list|lift, why
    mailtools,
    scanners,    # scanners status|run|test
    db,          # db status|upgrade|prune|vacuum
    status,      # status (health check)
    auto_emails,  # auto-emails preview
    nodes,       # nodes (heartbeats)
)


def register_all(subparsers):
    for module in MODULES:
        module.register(subparsers)
