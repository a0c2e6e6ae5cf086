"""Which addresses are the connector's own: the public and the notifications
address and the inboxes' addresses (config/inboxes.yaml), each with its +tag
forms (support+x@example.com), case-insensitive.

The one matcher the intake (SMTP/LMTP recipients, `connector inject`) and the
pipeline (routing, recipients of the copies) use.
"""

import re


def own_address_re(address):
    """Matches `address` and its +tag forms, case-insensitive."""
    local, _, domain = address.partition("@")
    return re.compile(rf"^{re.escape(local)}(\+[^@]*)?@{re.escape(domain)}$", re.I)


class OwnAddresses:
    def __init__(self, public_address, notifications_address, inboxes=None):
        self.public_re = own_address_re(public_address)
        self.notifications_re = own_address_re(notifications_address)
        self.inboxes = inboxes   # config/inboxes.yaml (`connector.settings.inboxes.Inboxes`): their addresses

    @classmethod
    def of(cls, settings):
        return cls(settings.public_address, settings.notifications_address, settings.extra.get("inboxes"))

    def is_public(self, address):
        return bool(self.public_re.match(address or ""))

    def is_notifications(self, address):
        return bool(self.notifications_re.match(address or ""))

    def is_own(self, address):
        return self.is_public(address) or self.is_notifications(address) \
            or (self.inboxes is not None and self.inboxes.is_inbox_address(address))

    def notifications_only(self, addresses):
        """Whether `addresses` include the notifications address and not the public one."""
        return any(map(self.is_notifications, addresses)) and not any(map(self.is_public, addresses))
