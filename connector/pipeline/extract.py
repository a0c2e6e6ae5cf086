"""Step 6: the new reply text, without quoted history (rules in `rules/`).

Extraction reads only the parsed mail and writes nothing, so it runs inside
the message's time budget as a block that can be abandoned
(`connector.timebudget.interruptible`): a rule that backtracks for minutes on a
hostile mail, or a budget already spent by the parse, files the mail with
its full text as the reply text, marked as not extracted (`rules_version`
REPLY_NOT_EXTRACTED), instead of holding up every mail behind it.
"""

from connector.timebudget import OverBudget, interruptible
from connector.log import get_logger

log = get_logger("pipeline")


def run(ctx):
    try:
        with interruptible():
            ctx.reply_text = ctx.services.extractor.extract_message(ctx.parsed)
    except OverBudget:
        ctx.reply_text = ctx.parsed.text or ""
        ctx.reply_extracted = False
        ctx.notes.append("reply_not_extracted: time budget spent")
        log.warning("reply.not_extracted", reason="time_budget", size=len(ctx.parsed.text or ""))
