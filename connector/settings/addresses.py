"""What an email address in the configuration may look like (the loader and inboxes.yaml)."""

import re

ADDRESS_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$|^[^@\s<>,;]+@[A-Za-z0-9-]+$")
