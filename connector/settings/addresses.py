"""What an email address in the configuration may look like, and the pattern of an
address of ours with its +tag forms: shared by the loader, inboxes.yaml and the
pipeline's own-address matching (`connector.pipeline.services`)."""

import re

ADDRESS_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$|^[^@\s<>,;]+@[A-Za-z0-9-]+$")


def own_address_re(address):
    """Matches `address` and its +tag forms (support+x@example.com), case-insensitive."""
    local, _, domain = address.partition("@")
    return re.compile(rf"^{re.escape(local)}(\+[^@]*)?@{re.escape(domain)}$", re.I)
