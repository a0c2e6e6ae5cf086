"""An out-of-office reply without RFC 3834 headers is still automatic (issue 12): the
daemon never answers it and opens no ticket for it; a person's subject that only
mentions an absence is answered as before."""

from conftest import make_mail


def test_headerless_out_of_office_is_not_answered(daemon, sink):
    daemon.send(make_mail(subject="AUTO: Jane Doe is out of the office (returning 07.12.2026)",
                          sender="jane@customer.example"))
    daemon.send(make_mail(subject="Automatische Antwort: Rechnung", sender="dieter@firma.example"))
    daemon.send(make_mail(subject="Re: out of office tomorrow?", sender="ann@acme.example"))
    states = daemon.wait_processed(3)
    assert [(row[2], row[3]) for row in states[:2]] == [("ignored_automatic", "autoreply_subject")] * 2
    assert [t["subject"] for t in daemon.tickets()] == ["Re: out of office tomorrow?"]
    daemon.wait_delivered()
    sent_to = {a for o in daemon.outbox() for a in o["to"]}
    assert "ann@acme.example" in sent_to                                  # the person got an auto-response
    assert not sent_to & {"jane@customer.example", "dieter@firma.example"}
