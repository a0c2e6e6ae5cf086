"""Is this mail automatic (a bounce, an auto-reply, a list mail)? Such mail is never answered.

RFC 3834 `Auto-Submitted`, `Precedence`, the X-Autoreply family, `List-Id`,
a null return path, mailer-daemon/postmaster senders, delivery reports,
abuse reports (ARF), challenge-response systems, and out-of-office replies
that carry no header but say so in their subject. The patterns are data:
rules/automatic.yaml, each with samples. What a delivery report says (who
failed, why) is mail/bounce.py's; its `Report` rides on the result.
Also: our own mail coming back (`own_mail`), and what the site's own MTA
says about the sender's authentication (`failed_authentication`), which
decides whether an auto-response may go out.
"""

from dataclasses import dataclass

import authres

from connector.mail.bounce import (AUTO_REPLY, CHALLENGE_RESPONSE, DELIVERED, FEEDBACK, flufl_failures,
                                   has_delivery_status, read_report, returns_message)
from connector.mail.rules import LazyRuleFile

# Our loop marker: every mail we send carries it, signed (connector.outbound.msgid).
LOOP_HEADER = "X-Connector-Loop"

# Reasons, as logged and stored.
BOUNCE = "bounce"
AUTO_SUBMITTED = "auto_submitted"
PRECEDENCE = "precedence"
AUTOREPLY_HEADER = "autoreply_header"
AUTOREPLY_SUBJECT = "autoreply_subject"
CHALLENGE = "challenge_response"
DELIVERY_REPORT = "delivery_report"          # a success notice: delivered, not a failure
FEEDBACK_REPORT = "feedback_report"          # an ARF abuse report about a mail we sent
READ_RECEIPT = "read_receipt"                # an MDN (RFC 8098)
MAILING_LIST = "mailing_list"
NULL_RETURN_PATH = "null_return_path"
SYSTEM_SENDER = "system_sender"
LOOP = "loop"

# Why the sender's own MTA says the From domain is forged (Authentication-Results).
DMARC_FAIL = "dmarc_fail"
SPF_FAIL = "spf_fail"

RULES = LazyRuleFile("automatic.yaml", ("system_sender", "bounce_subject", "autoreply_header", "precedence",
                                          "auto_reply_subject", "challenge_header", "challenge_text"))
REPORT_OPENING_CHARS = 1000      # where a report without a telling subject says what it is
CHALLENGE_TEXT_CHARS = 3000      # a challenge says what it wants at the top of its text
AUTO_REPLIED = "auto-replied"    # RFC 3834's value for an answer (auto-generated is a notification)
REPLY_PRECEDENCE = ("junk", "auto_reply")   # answers, where bulk/list is also newsletters


@dataclass(frozen=True)
class Automatic:
    is_automatic: bool
    is_bounce: bool = False
    reason: str = ""
    kind: str = None          # `automatic_kind`: bounce | delayed | delivered | feedback | auto_reply | challenge_response
    report: object = None     # mail.bounce.Report of a delivery or feedback report

    @property
    def is_auto_reply(self):
        """Machine-written mail (auto-reply, out-of-office, bounce, bulk), as `parse --json` reports it;
        mailing-list posts are automatic for answering purposes but written by people."""
        return self.is_automatic and self.reason != MAILING_LIST


NOT_AUTOMATIC = Automatic(False)


def _report_type(parsed):
    msg = parsed.msg
    if msg.get_content_type() == "multipart/report":
        return msg.get_param("report-type", "").lower()
    return ""


def _all(parsed, name):
    """Every value of a header (a message may carry Precedence twice)."""
    if hasattr(parsed, "header_all"):
        return parsed.header_all(name)
    return [parsed.header(name)]


def _exchange_rule_reply(parsed):
    """Exchange out-of-office / inbox-rule replies: 'X-Auto-Response-Suppress: All' on a
    message an inbox rule generated. The header alone is also on human Outlook mail."""
    return (parsed.has_header("x-ms-exchange-inbox-rules-loop")
            and "all" in parsed.header("x-auto-response-suppress").lower().replace(" ", "").split(","))


def _challenge(parsed):
    """A challenge-response system asks the sender to prove they are a person."""
    return any(RULES.any("challenge_header", name) for name in parsed.headers) or \
        RULES.any("challenge_text", parsed.text[:CHALLENGE_TEXT_CHARS])


def _is_report(parsed, mail_from, sender_is_system):
    """A delivery report: RFC 3464 by its type, else by its sender and subject."""
    if _report_type(parsed) == "delivery-status" or has_delivery_status(parsed.msg) or (
            sender_is_system and RULES.any("bounce_subject", parsed.subject)):
        return True
    if RULES.any("bounce_subject", parsed.subject) and (
            mail_from == "" or not parsed.from_addr or (mail_from or "").lower().startswith("mailer-daemon@")):
        return True
    if RULES.any("bounce_subject", parsed.subject) and any(flufl_failures(parsed.msg)):
        return True
    # KDDI: no telling subject, but a mail system returns a message and says it was not delivered
    return (mail_from == "" or sender_is_system) and returns_message(parsed.msg) and (
        RULES.any("bounce_subject", parsed.text[:REPORT_OPENING_CHARS]) or any(flufl_failures(parsed.msg)))


def _from_report(parsed):
    report = read_report(parsed)
    if report.kind == DELIVERED:
        return Automatic(True, False, DELIVERY_REPORT, DELIVERED, report)
    return Automatic(True, True, BOUNCE, report.kind, report)


def _auto_reply_kind(parsed, reason, precedence):
    """AUTO_REPLY when the automatic mail is an answer (vacation, out-of-office), else None."""
    if reason == AUTO_SUBMITTED:
        return AUTO_REPLY if parsed.header("auto-submitted").strip().lower().startswith(AUTO_REPLIED) else None
    if reason == PRECEDENCE:
        answer = any(value in REPLY_PRECEDENCE for value in precedence) or parsed.subject.lower().startswith("re:")
        return AUTO_REPLY if answer or RULES.any("auto_reply_subject", parsed.subject) else None
    return AUTO_REPLY if reason in (AUTOREPLY_HEADER, AUTOREPLY_SUBJECT) else None


def _header_reason(parsed):
    """(reason, precedence values) of an automatic mail by its headers or subject; '' when none says."""
    precedence = [value.strip().lower() for value in _all(parsed, "precedence")]
    auto_submitted = parsed.header("auto-submitted").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return AUTO_SUBMITTED, precedence
    if any(RULES.any("precedence", value) for value in precedence):
        return PRECEDENCE, precedence
    if any(RULES.any("autoreply_header", name) for name in parsed.headers) or _exchange_rule_reply(parsed):
        return AUTOREPLY_HEADER, precedence
    if RULES.any("auto_reply_subject", parsed.subject):
        return AUTOREPLY_SUBJECT, precedence
    return "", precedence


def classify(parsed, mail_from=None, own_loop_value=""):
    """Classify `parsed`; `mail_from` is the envelope sender ('' = null return path, None = unknown)."""
    if own_loop_value and own_loop_value.lower() in parsed.header("x-loop").lower():
        return Automatic(True, False, LOOP)
    report_type = _report_type(parsed)
    if report_type == "feedback-report":
        return Automatic(True, False, FEEDBACK_REPORT, FEEDBACK, read_report(parsed, feedback=True))
    if report_type == "disposition-notification":
        return Automatic(True, False, READ_RECEIPT)
    if _challenge(parsed):
        return Automatic(True, False, CHALLENGE, CHALLENGE_RESPONSE)
    if mail_from is None:
        return_path = parsed.header("return-path").strip()
        mail_from = None if not return_path else return_path.strip("<> ")
    sender_is_system = RULES.any("system_sender", parsed.from_addr or "")
    if _is_report(parsed, mail_from, sender_is_system):
        return _from_report(parsed)
    reason, precedence = _header_reason(parsed)
    if reason:
        return Automatic(True, False, reason, _auto_reply_kind(parsed, reason, precedence))
    if parsed.has_header("list-id"):
        return Automatic(True, False, MAILING_LIST)
    if mail_from == "":
        return Automatic(True, False, NULL_RETURN_PATH)
    if sender_is_system:
        return Automatic(True, False, SYSTEM_SENDER)
    return NOT_AUTOMATIC


def own_mail(parsed, signer):
    """Our own mail came back: it carries our loop marker (kept on every copy, also
    by another connector), or its Message-ID is one we wrote."""
    return signer.carries_marker(parsed.header_all(LOOP_HEADER)) or signer.is_ours(parsed.message_id)


def _domain(address):
    return (address or "").rpartition("@")[2].strip().lower()


def failed_authentication(parsed, trusted_ids):
    """DMARC_FAIL or SPF_FAIL when an Authentication-Results header added by one of
    `trusted_ids` (the site's own MTA) says the From domain failed; '' otherwise.

    Headers from any other authserv-id are ignored (anybody can write one), and
    so is a header that does not parse. SPF counts only when it was checked for
    the From domain (smtp.mailfrom in that domain); `softfail` is not a failure.
    """
    from_domain = _domain(parsed.from_addr)
    if not trusted_ids or not from_domain:
        return ""
    for value in parsed.header_all("authentication-results"):
        try:
            header = authres.AuthenticationResultsHeader.parse_value(value)
        except (authres.AuthResError, ValueError, IndexError):
            continue
        if (header.authserv_id or "").lower() not in trusted_ids:
            continue
        for result in header.results:
            props = {f"{p.type}.{p.name}".lower(): p.value for p in result.properties}
            if result.method == "dmarc" and result.result == "fail" and \
                    _domain("@" + props.get("header.from", from_domain)) == from_domain:
                return DMARC_FAIL
            if result.method == "spf" and result.result == "fail" and \
                    _domain("@" + props.get("smtp.mailfrom", "")) == from_domain:
                return SPF_FAIL
    return ""
