"""Reply extraction: the new text of a reply, without quoted history.

`load_extractor(search_dirs)` builds an `Extractor` from `quotes.yaml` (and
`quotes.local.yaml` overrides) found in `search_dirs`, local first; it has
`.version`, `.extract(text)` and `.extract_message(parsed)`.
`extract_reply(text)` uses the shipped rules. Policy and rule kinds:
docs/reply-extraction.md.
"""

from connector.reply.extract import Extractor, extract_reply
from connector.reply.rules import RuleError, load_rules

__all__ = ["Extractor", "RuleError", "extract_reply", "load_extractor"]


def load_extractor(search_dirs):
    """An `Extractor` for the rule files in `search_dirs` (local first); raises `RuleError`."""
    return Extractor(load_rules(search_dirs))
