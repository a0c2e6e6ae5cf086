"""Budgets on what we send without a person deciding to: auto-responses,
notices, and copies caused by a possible loop (used by `distribute` and
`notify`, before anything is queued).

Counted from `sent_mail` rows, one per recipient of every mail we queue
(`apply` writes them in the same transaction as the outbox rows):

    auto-response   per address, per recipient domain and in all, per hour;
                    none when the sender asked for none (X-Auto-Response-
                    Suppress) or the site's own MTA says the From domain
                    failed DMARC or SPF (spam relay protection)
    loop copy       a mail that repeats its sender's earlier text on the same
                    ticket within the hour (an out-of-office says the same
                    each time), or comes from an address we wrote to about
                    the same ticket less than `loop_reply_seconds` before
                    and answers one of our mails (threads on our Message-ID,
                    or on nothing: a robot without RFC 3834 headers answers
                    in seconds; a person's quick follow-up of their own
                    mail threads on that mail), is a possible loop: its
                    copies count, per (address, ticket) and per address
    notice          per address; never about a reply to one of our notices
                    or about mail from a notice recipient itself
    auto-email      a new ticket's confirmation to its requester: as an
                    auto-response (`confirmation_allowed`); one caused by a
                    possible loop: the loop budget (`connector.pipeline.ticket_events`)

A suppressed mail is noted on the decision and logged by `apply`
(`auto_response.suppressed`, `loop.suppressed`, `notice.suppressed`,
`auto_email.suppressed`).
"""

from connector.mail.automatic import failed_authentication
from connector.settings.addresses import unicode_domain
from connector.store.queries import answerable_since, same_text_since, sent_since
from connector.store.models import AUTO_RESPONSE

HOUR = 3600

# Reasons a mail is not sent, as logged.
ASKED_FOR_NONE = "x_auto_response_suppress"
ADDRESS_LIMIT = "address_limit"
DOMAIN_LIMIT = "domain_limit"
TOTAL_LIMIT = "total_limit"
TICKET_LIMIT = "ticket_limit"
REPLY_TO_NOTICE = "reply_to_notice"
FROM_NOTICE_RECIPIENT = "from_notice_recipient"

# Why a mail's copies count against the loop budget.
QUICK_REPLY = "quick_reply"
REPEATED_TEXT = "repeated_text"


def domain_of(address):
    return unicode_domain(address.rpartition("@")[2])   # xn-- and UTF-8 forms share one budget


def suppress(ctx, kind, address, reason, detail):
    """Record that `kind` to `address` is not sent, and why."""
    ctx.plan.suppressed.append({"kind": kind, "address": address, "reason": reason, "detail": detail})
    ctx.plan.notes.append(f"{kind} to {address} suppressed: {reason} ({detail})")


def _over(ctx, limits):
    """The first (reason, detail) whose hourly count reached its limit; a limit of 0 allows none.

    A budget whose columns include another's counts a subset of that one's rows, so the
    budgets with fewer columns are counted first (up to the largest limit), and a narrower
    one is not counted at all when a broader count is already below its limit."""
    since = ctx.services.clock() - HOUR
    cap = max(limit for _, limit, _ in limits)
    counted, sent = {}, {}
    for index in sorted(range(len(limits)), key=lambda i: len(limits[i][2])):
        _, limit, columns = limits[index]
        key = frozenset(columns.items())
        bound = min((n for broader, n in counted.items() if broader <= key), default=None)
        if not limit:
            sent[index] = 0
        elif bound is not None and bound < limit:
            sent[index] = bound
        else:
            sent[index] = counted[key] = sent_since(since, cap, **columns)
    for index, (reason, limit, _) in enumerate(limits):
        if sent[index] >= limit:
            return reason, f"{sent[index]} in the last hour, limit {limit}"
    # how many more mails the budgets passed would take: another filing process may spend
    # some before this plan is written (`apply.plan_current` decides again when it did)
    room = min(limit - sent[index] for index, (_, limit, _) in enumerate(limits))
    ctx.budget_headroom = room if ctx.budget_headroom is None else min(ctx.budget_headroom, room)
    return None


def _answer_refused(ctx, address):
    """Why the sender of this mail gets no automatic answer at all, or None."""
    parsed = ctx.parsed
    if parsed.has_header("x-auto-response-suppress"):
        return ASKED_FOR_NONE, "the sender asked for no automatic answer"
    if auth := failed_authentication(parsed, ctx.services.trusted_authserv_ids):
        return auth, f"Authentication-Results of a trusted host: {domain_of(address)} failed"
    return None


def auto_response_allowed(ctx, kind, address):
    settings = ctx.services.settings
    refusal = _answer_refused(ctx, address) or _over(ctx, (
        (ADDRESS_LIMIT, settings.auto_responses_per_hour, {"kind": kind, "address": address.lower()}),
        (DOMAIN_LIMIT, settings.auto_responses_per_domain_per_hour, {"kind": kind, "domain": domain_of(address)}),
        (TOTAL_LIMIT, settings.auto_responses_total_per_hour, {"kind": kind})))
    if refusal:
        suppress(ctx, kind, address, *refusal)
    return refusal is None


def _auto_response_refused(ctx, address):
    """The refusal of this mail's auto-response to `address`, if it had one: the confirmation
    stands in for it, so it never goes where the auto-response may not (an outside test: with
    the auto-response held by the per-domain limit, the confirmation went instead)."""
    held = next((s for s in ctx.plan.suppressed if s["kind"] == AUTO_RESPONSE
                 and s["address"].lower() == address.lower()), None)
    if held is None or _turned_off(ctx.services.settings, held["reason"]):
        return None   # auto-responses off by configuration: the confirmation is what answers
    return held["reason"], f"as the auto-response: {held['detail']}"


def _turned_off(settings, reason):
    """Whether `reason` is a limit configured as 0 (no auto-responses), not one reached."""
    limit = {ADDRESS_LIMIT: settings.auto_responses_per_hour,
             DOMAIN_LIMIT: settings.auto_responses_per_domain_per_hour,
             TOTAL_LIMIT: settings.auto_responses_total_per_hour}.get(reason)
    return limit == 0


def confirmation_allowed(ctx, kind, address):
    """A new ticket's auto-email to its requester (`ticket_created`, `request_by_email`) answers
    the mail like an auto-response: none when the sender asked for none or failed
    authentication, and none once the address got `auto_responses_per_hour` automatic mails
    in the hour (`loop_mails_per_address_per_hour` when auto-responses are off), so a robot
    opening ticket after ticket is not confirmed without end; never where this mail's
    auto-response was held back (by any limit), and within the auto-response's per-domain and
    total limits of its own."""
    settings = ctx.services.settings
    limit = settings.auto_responses_per_hour or settings.loop_mails_per_address_per_hour
    limits = [(ADDRESS_LIMIT, limit, {"address": address.lower(), "budgeted": True}),
              (DOMAIN_LIMIT, settings.auto_responses_per_domain_per_hour, {"kind": kind, "domain": domain_of(address)}),
              (TOTAL_LIMIT, settings.auto_responses_total_per_hour, {"kind": kind})]
    refusal = _auto_response_refused(ctx, address) or _answer_refused(ctx, address) or \
        _over(ctx, [entry for entry in limits if entry[1]])   # a limit set to 0 turns auto-responses off, not this
    if refusal:
        suppress(ctx, kind, address, *refusal)
    return refusal is None


def loop_cause(ctx):
    """Why this mail may be part of a loop (REPEATED_TEXT, QUICK_REPLY), or ''."""
    window, address = ctx.services.settings.loop_reply_seconds, ctx.sender.address
    if ctx.ticket is None or not address:
        return ""
    text = ctx.plan.reply_text
    if text.strip() and same_text_since(ctx.plan.ticket_number, ctx.parsed.from_addr, text,
                                ctx.spool.received_at - HOUR):
        return REPEATED_TEXT
    if window and answers_our_mail(ctx) and answerable_since(ctx.spool.received_at - window, address.lower(),
                                                             ctx.plan.ticket_number):
        return QUICK_REPLY
    return ""


def answers_our_mail(ctx):
    """Whether the mail may be an answer to one we sent: the mail it answers (In-Reply-To,
    else the last of References) is ours, or it threads on nothing at all (a robot that
    keeps only the subject). A mail answering its sender's own earlier mail ("forgot to
    say") is a person following up, however quickly, although its References also hold
    ours (every mail of a ticket carries the ticket's root): no robot's answer."""
    parent = (ctx.parsed.in_reply_to or ctx.parsed.references)[-1:]
    return not parent or ctx.services.signer.is_ours(parent[0])


def within_loop_budget(ctx, kind, addresses):
    """The `addresses` that may still get a loop-caused copy of this ticket."""
    settings, number = ctx.services.settings, ctx.plan.ticket_number
    kept = []
    for address in addresses:
        key = address.lower()
        refusal = _over(ctx, (
            (TICKET_LIMIT, settings.loop_mails_per_ticket_per_hour, {"address": key, "ticket": number,
                                                                     "budgeted": True}),
            (ADDRESS_LIMIT, settings.loop_mails_per_address_per_hour, {"address": key, "budgeted": True})))
        if refusal:
            suppress(ctx, kind, address, *refusal)
        else:
            kept.append(address)
    return kept


def notice_allowed(ctx, kind, address):
    parsed, signer = ctx.parsed, ctx.services.signer
    refusal = None
    if any(signer.is_notice(m) for m in parsed.in_reply_to + parsed.references):
        refusal = REPLY_TO_NOTICE, "a notice about an answer to a notice would feed itself"
    elif (parsed.from_addr or "").lower() == address.lower():
        refusal = FROM_NOTICE_RECIPIENT, "the mail is the recipient's own"
    else:
        refusal = _over(ctx, ((ADDRESS_LIMIT, ctx.services.settings.notices_per_hour,
                               {"kind": kind, "address": address.lower()}),))
    if refusal:
        suppress(ctx, kind, address, *refusal)
    return refusal is None
