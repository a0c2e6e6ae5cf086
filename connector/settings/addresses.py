"""What an email address in the configuration may look like (the loader and inboxes.yaml)."""

import re

ADDRESS_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$|^[^@\s<>,;]+@[A-Za-z0-9-]+$")


def unicode_domain(domain):
    """A domain in one form whichever way it is written: lower case, its IDNA labels
    (xn--bcher-kva) decoded (bücher), so `bücher.example` in accounts.yaml matches mail from
    `hans@xn--bcher-kva.example` and the other way round. A label that is not valid IDNA stays."""
    labels = []
    for label in domain.strip().lower().split("."):
        if label.startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)
