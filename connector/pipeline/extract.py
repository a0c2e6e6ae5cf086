"""Step 6: the new reply text, without quoted history (rules in `rules/`).

Extraction reads only the parsed mail and writes nothing, so it runs inside
the message's time budget as a block that can be abandoned
(`connector.timebudget.interruptible`): a rule that backtracks for minutes on a
hostile mail, or a budget already spent by the parse, files the mail with
its full text as the reply text, marked as not extracted (`rules_version`
REPLY_NOT_EXTRACTED), instead of holding up every mail behind it.

Reads: the parsed message, the reply rules. Sets: `plan.reply_text`,
`plan.reply_extracted`; a note when the budget ran out.
"""

from connector.log import get_logger
from connector.timebudget import OverBudget, interruptible

log = get_logger("pipeline")

STEP = "extract"
EXTRACTED, NOT_EXTRACTED = "extracted", "not_extracted"


def run(ctx):
    plan = ctx.plan
    previous = ctx.previous.extracted if ctx.previous else None
    try:
        if previous is not None:
            plan.reply_text = previous  # decided again: the same bytes, the same reply
        else:
            with interruptible():
                plan.reply_text = ctx.services.extractor.extract_message(ctx.parsed)
        ctx.extracted = plan.reply_text
    except OverBudget:
        plan.reply_text = ctx.parsed.text or ""
        plan.reply_extracted = False
        plan.notes.append("reply_not_extracted: time budget spent")
        log.warning("reply.not_extracted", reason="time_budget", size=len(ctx.parsed.text or ""))
    ctx.record(STEP, STEP, EXTRACTED if plan.reply_extracted else NOT_EXTRACTED)
