"""Which addresses are the connector's own: the public and the notifications
address and the inboxes' addresses (config/inboxes.yaml), each with its +tag
forms (support+x@example.com), case-insensitive.

The one matcher the intake (SMTP/LMTP recipients, `connector inject`) and the
pipeline (routing, recipients of the copies) use. Our VERP envelope senders
(`bounces+<outbox id>-<hmac>@<public domain>`, `connector.mail.verp`) are
ours too, but only with a valid HMAC: that is where bounces come back.
"""

import re


def own_address_re(address):
    """Matches `address` and its +tag forms, case-insensitive."""
    local, _, domain = address.partition("@")
    return re.compile(rf"^{re.escape(local)}(\+[^@]*)?@{re.escape(domain)}$", re.I)


class OwnAddresses:
    def __init__(self, public_address, notifications_address, inboxes=None, verp=None):
        self.public_re = own_address_re(public_address)
        self.notifications_re = own_address_re(notifications_address)
        self.inboxes = inboxes   # config/inboxes.yaml (`connector.settings.inboxes.Inboxes`): their addresses
        self.verp = verp         # `connector.mail.verp.Verp`: bounce addresses of ours

    @classmethod
    def of(cls, settings):
        from connector.mail import verp
        try:
            codec = verp.of(settings)
        except OSError:  # the key cannot be read here (another user, say): no VERP address is ours
            codec = None
        return cls(settings.public_address, settings.notifications_address, settings.extra.get("inboxes"), codec)

    def is_public(self, address):
        return bool(self.public_re.match(address or ""))

    def is_notifications(self, address):
        return bool(self.notifications_re.match(address or ""))

    def is_own(self, address):
        return self.is_public(address) or self.is_notifications(address) or self.is_inbox(address) \
            or (self.verp is not None and self.verp.outbox_id(address) is not None)

    def is_inbox(self, address):
        return self.inboxes is not None and self.inboxes.is_inbox_address(address)

    def notifications_only(self, addresses):
        """Whether `addresses` include the notifications address and neither the public one
        nor an inbox's (mail to an inbox address is a request like mail to the public one)."""
        return any(map(self.is_notifications, addresses)) and not any(
            self.is_public(a) or self.is_inbox(a) for a in addresses)
