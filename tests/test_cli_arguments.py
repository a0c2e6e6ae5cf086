"""Arguments an operator gets wrong get one line and a non-zero exit, not a silent
"everything" or "nothing" (an outside test): a --limit below 1, an empty --status,
`why` given something that is not an address."""

import pytest

from conftest import Instance


@pytest.fixture
def site(tmp_path, sink):
    return Instance(tmp_path, sink.port)


@pytest.mark.parametrize("command", [["tickets", "list"], ["outbox", "list"], ["inbox", "list"],
                                     ["why", "jane@example.com"]])
@pytest.mark.parametrize("limit", ["-5", "0", "ten"])
def test_a_limit_below_one_is_refused(site, command, limit):
    if command == ["inbox", "list"] and limit == "0":
        pytest.skip("inbox list has a default limit: --limit 0 is no limit (test_inbox.py)")
    result = site.cli(*command, "--limit", limit, check=False)
    assert result.returncode == 2 and b"--limit" in result.stderr and result.stdout == b""


def test_an_empty_status_is_refused_and_changes_nothing(site):
    result = site.cli("tickets", "set", "1", "--status", "", check=False)
    assert result.returncode == 1 and b"--status must not be empty" in result.stderr


def test_why_wants_an_address(site):
    result = site.cli("why", "not an address", check=False)
    assert result.returncode == 1 and b"is not an email address" in result.stderr
    assert site.cli("why", "jane@example.com").returncode == 0


def test_inbound_list_takes_status_all_as_inbox_list_does(site):
    """`inbox list --status all` worked, `inbound list --status all` was an invalid choice (an
    outside test): both take it, and it lists every item as no --status does."""
    every = site.cli("inbound", "list", "--json")
    assert site.cli("inbound", "list", "--status", "all", "--json").stdout == every.stdout
    assert site.cli("inbox", "list", "--status", "all", "--json").returncode == 0
