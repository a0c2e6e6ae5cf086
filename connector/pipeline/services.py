"""What every pipeline step may use, built once per process: settings, the
reply extractor, the Message-ID signer (which also makes our loop marker),
the clock, our own addresses and ticket tag matching, and the triage actions
(`connector.workqueue.triage`, given by the wiring: they run the pipeline, so
the pipeline's staff mail commands cannot import them)."""

import re
import time

from connector.mail.addresses import OwnAddresses
from connector.outbound.msgid import MessageIdSigner
from connector.mail.verp import Verp
from connector.reply import load_extractor


def ticket_tag_re(tag):
    """A pattern for `ticket_tag` in subjects: spaces flexible, case-insensitive."""
    prefix, _, suffix = tag.partition("{number}")

    def loose(text):
        return r"\s*".join(re.escape(part) for part in text.split()) if text.strip() else ""

    return re.compile(loose(prefix) + r"\s*(\d+)\s*" + loose(suffix), re.I)


class Services:
    def __init__(self, settings, hmac_key, clock=time.time, extractor=None, triage=None):
        self.settings = settings
        self.triage = triage    # connector.workqueue.triage, or None where no mail command runs
        self.clock = clock
        self.extractor = extractor or load_extractor(settings.folder_candidates("rules"))
        domain = settings.public_address.rpartition("@")[2]
        self.signer = MessageIdSigner(hmac_key, domain)
        self.verp = Verp(hmac_key, domain)
        self.addresses = OwnAddresses.of(settings)
        self.tag_re = ticket_tag_re(settings.ticket_tag)
        self.loop_value = settings.public_address
        self.trusted_authserv_ids = self.trusted_ids(settings)

    @staticmethod
    def trusted_ids(settings):
        """`[security] trusted_authserv_ids` as a set of lower-case ids."""
        return {i.strip().lower() for i in settings.trusted_authserv_ids.split(",") if i.strip()}

    def tag(self, number):
        return self.settings.ticket_tag.format(number=number)

    def without_keyword(self, subject):
        """The subject a customer sees: the internal keyword would make their reply internal."""
        keyword = self.settings.internal_keyword
        if not keyword or not subject:
            return subject
        parts = re.split(r"\s*" + re.escape(keyword) + r"\s*", subject, flags=re.I)
        return " ".join(part for part in parts if part).strip()

    def subject_with_tag(self, subject, number):
        """`subject` carrying this ticket's tag exactly once (prefixed when missing)."""
        match = self.tag_re.search(subject or "")
        if match and (match.group(1).lstrip("0") or "0") == str(number):   # no int(): 5,000 digits raise
            return subject
        if match:
            subject = (subject[:match.start()] + subject[match.end():]).strip()
        return f"{self.tag(number)} {subject}".strip()

