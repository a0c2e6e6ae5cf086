"""`tickets list`: filters and pages, each page one query, on a real SQLite file."""

import json
import logging

from connector.cli import main
from connector.store.db import open_store
from connector.store.models import Contact, Message, Ticket


def _store(tmp_path):
    ini = tmp_path / "connector.ini"
    ini.write_text("[connector]\npublic_address = support@example.com\n"
                   "notifications_address = notifications@example.com\ndatabase = c.db\n")
    open_store(tmp_path / "c.db")
    ann = Contact.create(email="ann@acme.example", name="Ann", created_at=1.0)
    for number in range(1, 8):
        ticket = Ticket.create(number=number, subject=f"T{number}", status="Closed" if number % 3 == 0 else "New",
                               in_inbox=number % 2 == 1, contact=ann if number != 5 else None,
                               created_at=number * 86400.0, updated_at=number * 86400.0)
        for _ in range(number):
            Message.create(ticket=ticket, direction="in", received_at=1.0)
    return ini


def _list(capsys, ini, *args):
    assert main(["-c", str(ini), "tickets", "list", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_filters_and_pages(tmp_path, capsys):
    ini = _store(tmp_path)
    every = _list(capsys, ini)
    assert [t["number"] for t in every] == [1, 2, 3, 4, 5, 6, 7]
    assert [t["message_count"] for t in every] == [1, 2, 3, 4, 5, 6, 7]
    assert [t["contact"] for t in every][3:5] == ["ann@acme.example", None]
    assert [t["number"] for t in _list(capsys, ini, "--limit", "3")] == [1, 2, 3]
    assert [t["number"] for t in _list(capsys, ini, "--limit", "3", "--after", "3")] == [4, 5, 6]
    assert [t["number"] for t in _list(capsys, ini, "--status", "Closed")] == [3, 6]
    assert [t["number"] for t in _list(capsys, ini, "--inbox")] == [1, 3, 5, 7]
    assert [t["number"] for t in _list(capsys, ini, "--since", "1970-01-06")] == [5, 6, 7]


def test_a_bad_since_is_one_line(tmp_path, capsys):
    ini = _store(tmp_path)
    assert main(["-c", str(ini), "tickets", "list", "--since", "yesterday"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--since" in err


def test_a_page_is_one_query(tmp_path, capsys):
    ini = _store(tmp_path)
    statements = []

    class Count(logging.Handler):
        def emit(self, record):  # peewee logs each statement as (sql, params)
            statements.append(record.msg[0] if isinstance(record.msg, tuple) else str(record.msg))

    logger = logging.getLogger("peewee")
    handler, level = Count(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        _list(capsys, ini)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    selects = [s for s in statements if s.startswith("SELECT") and ('"ticket"' in s or '"message"' in s)]
    assert len(selects) == 1
