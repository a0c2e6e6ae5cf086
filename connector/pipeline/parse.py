"""Step 1: the raw bytes of the spool entry -> `ctx.parsed`.

What the parse capped (issue 9: parts, nesting, headers, References) is noted
in the decision, so `replay --dry-run` and the log line say it.

Reads: the spool entry's raw bytes. Sets: `ctx.parsed`; `plan.notes` (caps).
"""

from connector.mail.parse import parse_message

STEP = "parse"
PARSED, CAPPED = "parsed", "capped"


def run(ctx):
    ctx.parsed = ctx.previous.parsed if ctx.previous else parse_message(bytes(ctx.spool.raw))
    if ctx.parsed.capped:
        ctx.plan.notes.append("parse capped: " + ", ".join(f"{name} {count}"
                                                           for name, count in ctx.parsed.capped.items()))
    ctx.record(STEP, STEP, CAPPED if ctx.parsed.capped else PARSED)
