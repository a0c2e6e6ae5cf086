"""Step 1: the raw bytes of the spool entry -> `ctx.parsed`.

What the parse capped (issue 9: parts, nesting, headers, References) is noted
in the decision, so `replay --dry-run` and the log line say it."""

from connector.mail.parse import parse_message


def run(ctx):
    ctx.parsed = parse_message(bytes(ctx.spool.raw))
    if ctx.parsed.capped:
        ctx.notes.append("parse capped: " + ", ".join(f"{name} {count}" for name, count in ctx.parsed.capped.items()))
