"""The pipeline: what happens to one spooled message, in order.

`STEPS` decide (they read the store but write nothing: a dry run stops
here) and fill the context's `plan`; `apply.apply_decision` writes that plan
in one transaction; `runner` drives both and shunts a message whose
processing raises. Each step's docstring says what it reads and what it sets.

    parse -> classify -> sender -> reference -> commands.read -> route -> extract -> commands.settle
          -> distribute -> commands.reply -> notify -> events -> blocks
"""

from connector.pipeline import (
    blocking, classify, commands, distribute, extract, notify, parse, reference, route, sender, ticket_events)

STEPS = (
    parse.run,        # bytes -> ParsedMessage
    classify.run,     # duplicate? bounce? automatic mail (our own come back included)?
    sender.run,       # employee or contact
    reference.run,    # which ticket, if any (subject tag, References)
    commands.read,    # staff commands (#take, ...); a reply to a notice acts on its triage item
    route.run,        # the routing links: new_ticket | follow_up | internal | triage | ignored_automatic | ...
    extract.run,      # the new reply text
    commands.settle,  # a command mail's own filing: the rest of its text, or a note
    distribute.run,   # who gets what: every outgoing mail, whole
)
FINALLY = (
    commands.reply,   # the result of a mail's staff commands, mailed back to its sender
    notify.run,       # a notice when the mail went to triage
    ticket_events.run,  # the ticket events this mail writes, and their auto-emails
    blocking.run,     # automatic mail to a blocked address or ticket: suppressed
)


def decide(ctx):
    for step in STEPS:
        step(ctx)
        if ctx.done:
            break
    for step in FINALLY:
        step(ctx)
    return ctx
