"""Our outgoing Message-IDs carry the ticket number and an HMAC, so a reply
that only keeps In-Reply-To/References (an edited subject) still finds its
ticket, and a forged reference to a ticket is recognised as such.

The same key (in the data directory) signs the Message-IDs of our notices and
the loop marker every mail we send carries (`X-Connector-Loop`), so our own
mail is recognised when it comes back, however many copies later.
"""

import hashlib
import hmac
import re
import secrets

ID_RE = re.compile(r"^<t(\d+)\.([0-9a-f]+)\.([0-9a-f]+)@([^>]+)>$")
NOTICE_ID_RE = re.compile(r"^<n\.([0-9a-f]+)\.([0-9a-f]+)@([^>]+)>$")


class MessageIdSigner:
    def __init__(self, key, domain):
        self._key = key
        self._domain = domain.lower()
        self.loop_token = f"{self._domain} {self._mac('loop')[:24]}"

    def _mac(self, text):
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _sig(self, number, nonce):
        return self._mac(f"{number}.{nonce}")[:16]

    def make(self, number):
        nonce = secrets.token_hex(8)
        return f"<t{number}.{nonce}.{self._sig(number, nonce)}@{self._domain}>"

    def ticket_root(self, number):
        """The ticket's own Message-ID, the same for every mail about it (a nonce derived from
        the number): first in the References of each mail we send on the ticket, so the mail
        clients of everyone on it thread them together, although each copy answers a mail
        its reader never saw (the copy another recipient got). It verifies as ours."""
        nonce = self._mac(f"root.{number}")[:16]
        return f"<t{number}.{nonce}.{self._sig(number, nonce)}@{self._domain}>"

    def make_notice(self):
        """The Message-ID of a New Inbound Message Notice (no ticket)."""
        nonce = secrets.token_hex(8)
        return f"<n.{nonce}.{self._sig('n', nonce)}@{self._domain}>"

    def verify(self, message_id):
        """The ticket number a Message-ID of ours names, or None."""
        match = ID_RE.match(message_id or "")
        if not match or match.group(4).lower() != self._domain:
            return None
        number, nonce, sig = match.group(1), match.group(2), match.group(3)
        if hmac.compare_digest(sig, self._sig(int(number), nonce)):
            return int(number)
        return None

    def is_notice(self, message_id):
        match = NOTICE_ID_RE.match(message_id or "")
        return bool(match and match.group(3).lower() == self._domain
                    and hmac.compare_digest(match.group(2), self._sig("n", match.group(1))))

    def is_ours(self, message_id):
        """A Message-ID we wrote (a ticket's mail or a notice)."""
        return self.verify(message_id) is not None or self.is_notice(message_id)

    def carries_marker(self, values):
        """One of the `X-Connector-Loop` values is ours: our own mail came back."""
        return any(value.strip().lower() == self.loop_token for value in values)
