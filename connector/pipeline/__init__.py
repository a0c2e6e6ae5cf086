"""The pipeline: what happens to one spooled message, in order.

`STEPS` decide (read-only: a dry run stops here); `apply.apply_decision`
writes the outcome in one transaction; `runner` drives both and shunts a
message whose processing raises.

    parse -> classify -> sender -> reference -> commands.read -> route -> extract -> commands.settle
          -> distribute -> notify
"""

from connector.pipeline import classify, commands, distribute, extract, notify, parse, reference, route, sender

STEPS = (
    parse.run,        # bytes -> ParsedMessage
    classify.run,     # automatic mail? bounce? duplicate?
    sender.run,       # employee or contact
    reference.run,    # which ticket, if any (subject tag, References)
    commands.read,    # staff commands (#take, ...); a reply to a notice acts on its triage item
    route.run,        # new_ticket | follow_up | internal | triage | duplicate | ignored_automatic
    extract.run,      # the new reply text
    commands.settle,  # a command mail's own filing: the rest of its text, or a note
    distribute.run,   # who gets what: planned outgoing mail
)
FINALLY = (
    notify.run,       # a notice when the mail went to triage
)


def decide(ctx):
    for step in STEPS:
        step(ctx)
        if ctx.done:
            break
    for step in FINALLY:
        step(ctx)
    return ctx
