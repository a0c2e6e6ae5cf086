"""Arguments an operator gets wrong get one line and a non-zero exit, not a silent
"everything" or "nothing" (an outside test): a --limit below 1, an empty --status,
`why` given something that is not an address."""

import pytest

from conftest import Instance


@pytest.fixture
def site(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    inst.open_store()  # the store a first `connector run` makes
    return inst


def test_a_command_on_a_store_that_is_not_there_says_so_and_makes_nothing(tmp_path, sink):
    """A mistyped `-c` or `database` showed `(none)`, an empty helpdesk, and left new store files
    (and folders) behind (an outside test); `db status` already said there was no database."""
    inst = Instance(tmp_path, sink.port, connector__database="typo/lib/connector.db")
    for command in (["tickets", "list"], ["outbox", "list"], ["inbound", "list"], ["inbox", "list"],
                    ["blocks", "list"], ["nodes"], ["db", "vacuum"], ["db", "prune", "--days", "3"]):
        result = inst.cli(*command, check=False)
        assert result.returncode == 1 and b"no connector store here" in result.stderr, (command, result)
        assert result.stdout == b""
    assert not (tmp_path / "typo").exists()


@pytest.mark.sqlite_only("the two files of an SQLite store")
def test_a_main_file_without_its_spool_file_is_refused_by_every_process(tmp_path, sink):
    """With the spool file gone, a command made a new empty one: new mail got ids the main
    file had already filed, was taken for filed mail and never filed, with a 250 given (a
    review). The daemon, inject and the commands refuse, naming the file; nothing is made."""
    inst = Instance(tmp_path, sink.port)
    inst.open_store()
    spool = tmp_path / "var" / "connector-spool.db"
    spool.unlink()
    for command in (["tickets", "list"], ["db", "status"], ["inject"], ["run"]):
        result = inst.cli(*command, input=b"Subject: x\r\n\r\nbody\r\n", check=False)
        assert result.returncode != 0 and b"the spool file is missing" in result.stderr, (command, result)
        assert not spool.exists(), command


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


def test_the_command_table_names_what_each_module_registers():
    """`cli` imports only the module of the command asked for, found in `COMMANDS`: a word the
    table gives the wrong module would be an "invalid choice" for that command."""
    import argparse

    from connector import commands
    for name, words in commands.COMMANDS.items():
        subparsers = argparse.ArgumentParser().add_subparsers()
        commands.module(name).register(subparsers)
        assert tuple(subparsers.choices) == words, name


@pytest.mark.parametrize("argv, word", [
    (["tickets", "list"], "tickets"), (["-c", "/etc/x.ini", "inbox", "list"], "inbox"),
    (["--config", "tickets", "status"], "status"), (["--config=/x.ini", "db", "status"], "db"),
    (["--version"], None), ([], None), (["--", "run"], "run"), (["--help", "tickets"], None),
    (["-c", "x.ini", "-h", "run"], None), (["tickets", "--help"], "tickets")])
def test_the_command_word_skips_options_and_the_config_path(argv, word):
    from connector.cli import command_word
    assert command_word(argv) == word


def test_a_listing_command_loads_neither_the_daemon_nor_the_pipeline():
    """`tickets list` at 50,000 tickets is mostly start-up (issue 14: < 0.3 s): it loads its own
    command module, not every one and what they import; `--help` still lists every command."""
    import subprocess
    import sys
    probe = ("import sys; from connector.cli import build_parser; p = build_parser(['tickets', 'list']); "
             "print(sorted(m for m in sys.modules if m.startswith(('connector.pipeline', "
             "'connector.commands.daemon', 'connector.workqueue', 'connector.intake'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
    usage = subprocess.run([sys.executable, "-m", "connector", "--help"], capture_output=True, text=True,
                           check=True, cwd="/").stdout
    assert all(word in usage for word in ("run", "tickets", "inbound", "auto-emails", "nodes", "why"))
