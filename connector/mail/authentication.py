"""Whether a mail's From domain was authenticated by the site's own MTA
(`[security] staff_authentication = authentication_results`).

Only `Authentication-Results` headers (RFC 8601, parsed by the `authres`
package) whose authserv-id is one of `trusted_authserv_ids` count: anybody
can write such a header, only the site's MTA writes one with its own id (and
strips forged ones, see the README). The From domain is authenticated when a
trusted header says `dmarc=pass` (for that domain, when it names
`header.from`), or `dkim=pass` with a `header.d` aligned to it: DMARC's
relaxed alignment (RFC 7489 3.1.1), the same organizational domain
(`mail.example.com` signs for `example.com`, `eu.example.com` for
`us.example.com`), found with the Public Suffix List of the
`publicsuffixlist` package (bundled, no lookup at run time), so that
`example.co.uk` and `other.co.uk` never align, nor does a bare suffix. A trusted `dmarc=fail` for the domain outweighs
any pass. Used by the sender step; no other module depends on it.
"""

import functools
import re

import authres
from publicsuffixlist import PublicSuffixList

AUTHSERV_ID_RE = re.compile(r"[\s;(]")  # what ends the authserv-id, the header's first word

# Why a mail from an employee's address does not count as theirs (logged, and the
# triage item's detail).
NO_FROM_DOMAIN = "no From domain"
NO_TRUSTED_HEADER = "no Authentication-Results header from a trusted authserv-id"
DMARC_FAILED = "dmarc=fail"
NOT_ALIGNED = "no dmarc=pass and no aligned dkim=pass"


def domain_of(address):
    return (address or "").rpartition("@")[2].strip().lower().rstrip(".")


@functools.lru_cache(maxsize=1)
def _suffixes():
    return PublicSuffixList()  # reads the bundled list once per process


def organizational_domain(domain):
    """`domain`'s registered domain (example.co.uk for a.b.example.co.uk), or itself for a
    bare public suffix (co.uk), which then aligns with nothing but itself."""
    return _suffixes().privatesuffix(domain) or domain


def aligned(signing_domain, from_domain):
    """`header.d` and the From domain have the same organizational domain (relaxed alignment)."""
    d = (signing_domain or "").strip().lower().rstrip(".")
    if not d or not from_domain:
        return False
    return d == from_domain or organizational_domain(d) == organizational_domain(from_domain)


def trusted_results(parsed, trusted_ids):
    """(method, result, {ptype.property: value}) of every result in a trusted header."""
    for value in parsed.header_all("authentication-results"):
        if AUTHSERV_ID_RE.split(value.strip(), 1)[0].lower() not in trusted_ids:
            continue  # not parsed at all: a stranger may add a thousand of them
        try:
            header = authres.AuthenticationResultsHeader.parse_value(value)
        except (authres.AuthResError, ValueError, IndexError):
            continue  # a header that does not parse says nothing
        if (header.authserv_id or "").lower() not in trusted_ids:
            continue
        for result in header.results:
            yield (result.method.lower(), (result.result or "").lower(),
                   {f"{p.type}.{p.name}".lower(): p.value for p in result.properties})


def from_domain_failure(parsed, trusted_ids):
    """'' when the From domain is authenticated, else why not (one of the constants above)."""
    from_domain = domain_of(parsed.from_addr)
    if not from_domain:
        return NO_FROM_DOMAIN
    seen, passed = False, False
    for method, result, props in trusted_results(parsed, trusted_ids):
        seen = True
        if method == "dmarc" and domain_of("@" + props.get("header.from", from_domain)) == from_domain:
            if result == "fail":
                return DMARC_FAILED
            passed = passed or result == "pass"
        elif method == "dkim" and result == "pass" and aligned(props.get("header.d"), from_domain):
            passed = True
    if passed:
        return ""
    return NOT_ALIGNED if seen else NO_TRUSTED_HEADER
