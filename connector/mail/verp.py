"""VERP: the envelope sender of every mail we deliver names its outbox row,
`bounces+<outbox id>-<hmac>@<public domain>`, so a bounce (which goes to the
envelope sender) says which mail bounced even when the report keeps nothing
of the original.

Set at delivery time (`connector.outbound.delivery`) from the row's id: the
outbox row and `replay --dry-run` keep the plain envelope sender they were
planned with; the id exists only once the row is written. Signed with the
store's key (the one of our Message-IDs, `connector.outbound.msgid`), so an
address with a forged or altered id is not ours: the intake refuses it.
"""

import hashlib
import hmac
import re

LOCAL = "bounces"
VERP_RE = re.compile(rf"^{LOCAL}\+(\d{{1,18}})-([0-9a-f]{{16}})@([^@\s]+)$", re.I)


class Verp:
    def __init__(self, key, domain):
        self._key = key
        self._domain = domain.lower()

    def _sig(self, outbox_id):
        return hmac.new(self._key, f"verp.{outbox_id}".encode(), hashlib.sha256).hexdigest()[:16]

    def address(self, outbox_id):
        """The envelope sender of outbox row `outbox_id`."""
        return f"{LOCAL}+{outbox_id}-{self._sig(outbox_id)}@{self._domain}"

    def outbox_id(self, address):
        """The outbox row a VERP address of ours names, or None (not one, or the HMAC is wrong)."""
        match = VERP_RE.match((address or "").strip())
        if not match or match.group(3).lower() != self._domain:
            return None
        outbox_id = int(match.group(1))
        return outbox_id if hmac.compare_digest(match.group(2).lower(), self._sig(outbox_id)) else None

    def attributed(self, addresses):
        """The first outbox id named by one of `addresses` (a bounce's envelope recipients), or None."""
        return next((i for i in map(self.outbox_id, addresses or ()) if i is not None), None)


def of(settings):
    """The VERP codec of this installation (the store's key, the public address's domain)."""
    from connector.store.db import load_hmac_key
    return Verp(load_hmac_key(settings.data_dir), settings.public_address.rpartition("@")[2])
