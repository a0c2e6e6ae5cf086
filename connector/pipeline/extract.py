"""Step 6: the new reply text, without quoted history (rules in `rules/`)."""


def run(ctx):
    ctx.reply_text = ctx.services.extractor.extract_message(ctx.parsed)
