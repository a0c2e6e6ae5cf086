"""`tickets history`: every change of a ticket is an event, written with the change."""

from conftest import make_mail


def test_history_records_mail_and_cli_changes_oldest_first(daemon):
    daemon.send(make_mail(subject="Printer jammed", sender="ann@acme.example"))
    daemon.wait_processed(1)
    number = daemon.tickets()[0]["number"]
    daemon.send(make_mail(subject=f"Re: [Ticket #{number}] Printer jammed", sender="ann@acme.example",
                          body="It is still jammed.\n"))
    daemon.wait_processed(2)
    daemon.cli("tickets", "set", str(number), "--status", "Waiting")
    daemon.cli("tickets", "set", str(number), "--status", "Waiting")  # no change, no event

    history = daemon.json("tickets", "history", str(number))

    assert [(e["event"], e["via"], e["by"]) for e in history] == [
        ("ticket_created", "mail", "ann@acme.example"),
        ("request_by_email", "mail", "ann@acme.example"),
        ("customer_replied", "mail", "ann@acme.example"),
        ("status_changed", "cli", None),
        ("inbox_flag_changed", "cli", None),     # another status takes it out of the Inbox (seed 004)
    ]
    assert history[-2]["detail"] == {"from": "New", "to": "Waiting"} and history[-1]["detail"] == {"in_inbox": False}
    assert all(e["at"].endswith("+00:00") for e in history)
    assert history == sorted(history, key=lambda e: e["at"])


def test_history_of_unknown_ticket_is_refused(instance):
    instance.open_store()
    result = instance.cli("tickets", "history", "999", check=False)
    assert result.returncode == 1
    assert b"no ticket 999" in result.stderr
