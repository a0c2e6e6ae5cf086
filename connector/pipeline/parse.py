"""Step 1: the raw bytes of the spool entry -> `ctx.parsed`."""

from connector.mail.parse import parse_message


def run(ctx):
    ctx.parsed = parse_message(bytes(ctx.spool.raw))
