"""Our outgoing Message-IDs carry the ticket number and an HMAC, so a reply
that only keeps In-Reply-To/References (an edited subject) still finds its
ticket, and a forged reference to a ticket is recognised as such."""

import hashlib
import hmac
import re
import secrets

ID_RE = re.compile(r"^<t(\d+)\.([0-9a-f]+)\.([0-9a-f]+)@([^>]+)>$")


class MessageIdSigner:
    def __init__(self, key, domain):
        self._key = key
        self._domain = domain.lower()

    def _sig(self, number, nonce):
        return hmac.new(self._key, f"{number}.{nonce}".encode(), hashlib.sha256).hexdigest()[:16]

    def make(self, number):
        nonce = secrets.token_hex(8)
        return f"<t{number}.{nonce}.{self._sig(number, nonce)}@{self._domain}>"

    def verify(self, message_id):
        """The ticket number a Message-ID of ours names, or None."""
        match = ID_RE.match(message_id or "")
        if not match or match.group(4).lower() != self._domain:
            return None
        number, nonce, sig = match.group(1), match.group(2), match.group(3)
        if hmac.compare_digest(sig, self._sig(int(number), nonce)):
            return int(number)
        return None
