"""Intake invariants: no open relay, size limit, LMTP, crash safety, dedupe, the pipe command."""

import smtplib
import socket

import pytest

from conftest import Instance, make_mail


def test_foreign_recipient_gets_550_and_is_logged(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.port) as smtp:
        smtp.ehlo()
        smtp.mail("spammer@evil.example")
        code, _ = smtp.rcpt("victim@elsewhere.example")
        assert code == 550
        assert smtp.rcpt("support+billing@example.com")[0] == 250   # +tag forms are ours
        assert smtp.rcpt("NOTIFICATIONS@Example.com")[0] == 250
    assert "intake.rcpt_rejected" in daemon.log.read_text()


def test_oversized_mail_gets_552(daemon):
    big = make_mail(subject="Huge", body="x" * 250_000)
    with pytest.raises(smtplib.SMTPResponseException) as info:
        daemon.send(big)
    assert info.value.smtp_code == 552
    assert daemon.spool_states() == []


def test_lmtp_answers_per_recipient(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, smtp__protocol="lmtp").start()
    try:
        # smtplib.LMTP reads one DATA reply only, so speak RFC 2033 on a raw socket.
        with socket.create_connection(("127.0.0.1", inst.port), timeout=10) as sock:
            stream = sock.makefile("rwb")

            def say(line):
                stream.write(line + b"\r\n")
                stream.flush()

            def reply():
                lines = []
                while True:
                    line = stream.readline()
                    lines.append(line)
                    if line[3:4] != b"-":
                        return lines
            assert reply()[0].startswith(b"220")
            say(b"LHLO client.example")
            assert reply()[-1].startswith(b"250")
            for command in (b"MAIL FROM:<ann@acme.example>", b"RCPT TO:<support@example.com>",
                            b"RCPT TO:<support+x@example.com>", b"RCPT TO:<other@elsewhere.example>"):
                say(command)
                assert reply()[0][:3] == (b"550" if b"elsewhere" in command else b"250")
            say(b"DATA")
            assert reply()[0].startswith(b"354")
            stream.write(make_mail(subject="Via LMTP").as_bytes().replace(b"\n", b"\r\n") + b"\r\n.\r\n")
            stream.flush()
            first, second = reply(), reply()        # one reply per accepted recipient
            assert first[0].startswith(b"250") and second[0].startswith(b"250")
            say(b"QUIT")
            assert reply()[0].startswith(b"221")
        inst.wait_processed(1)
        assert [t["subject"] for t in inst.tickets()] == ["Via LMTP"]
    finally:
        inst.stop()


def test_kill_9_right_after_250_loses_nothing_and_files_once(instance, sink):
    instance.start()
    msg = make_mail(subject="Survives a crash")
    instance.send(msg)                 # 250 received ...
    instance.kill9()                   # ... and the whole process group dies at once
    instance.start()
    instance.wait_processed(1)
    tickets = instance.tickets()
    assert [t["subject"] for t in tickets] == ["Survives a crash"]
    assert tickets[0]["message_count"] == 2          # the mail + one auto-response, once
    instance.wait_delivered()
    assert len(sink.to("ann@acme.example")) == 1


def test_kill_9_during_a_burst(instance, sink):
    instance.start()
    accepted = 0
    for index in range(30):
        instance.send(make_mail(subject=f"Burst {index}"))
        accepted += 1
    instance.kill9()
    instance.start()
    instance.wait_processed(accepted, timeout=30)
    subjects = sorted(t["subject"] for t in instance.tickets())
    assert subjects == sorted(f"Burst {i}" for i in range(accepted))


def test_dedupe_same_bytes_once_different_bytes_both(daemon):
    raw = make_mail(subject="Twice", message_id="<same@acme.example>").as_bytes()
    daemon.send(raw, "ann@acme.example", ["support@example.com"])
    daemon.send(raw, "ann@acme.example", ["support@example.com"])
    daemon.wait_processed(2)
    assert [row[2] for row in daemon.spool_states()] == ["new_ticket", "duplicate"]
    other = make_mail(subject="Twice but other", message_id="<same@acme.example>").as_bytes()
    daemon.send(other, "ann@acme.example", ["support@example.com"])
    daemon.wait_processed(3)
    assert daemon.spool_states()[-1][2] == "new_ticket"
    assert len(daemon.tickets()) == 2
    assert "message.duplicate" in daemon.log.read_text()
    # No Message-ID at all (an MTA retrying after a lost 250): the bytes decide.
    bare = b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: No id\r\n\r\nHello\r\n"
    daemon.send(bare, "ann@acme.example", ["support@example.com"])
    daemon.send(bare, "ann@acme.example", ["support@example.com"])
    daemon.send(bare.replace(b"Hello", b"Hello again"), "ann@acme.example", ["support@example.com"])
    daemon.wait_processed(6)
    assert [row[2] for row in daemon.spool_states()[3:]] == ["new_ticket", "duplicate", "new_ticket"]


def test_inject_exit_codes(instance):
    ok = instance.cli("inject", "--recipient", "support@example.com",
                      input=make_mail(subject="Piped").as_bytes(), check=False)
    assert ok.returncode == 0, ok.stderr
    assert [row[1] for row in instance.spool_states()] == ["queued"]   # stored, processed later
    assert instance.cli("inject", input=b"", check=False).returncode == 65
    assert instance.cli("inject", input=b"\x00\x01 garbage", check=False).returncode == 65
    too_big = make_mail(body="y" * 300_000).as_bytes()
    assert instance.cli("inject", input=too_big, check=False).returncode == 65
    foreign = instance.cli("inject", "--recipient", "x@elsewhere.example", input=make_mail().as_bytes(),
                           check=False)
    assert foreign.returncode == 65
    instance.start()
    instance.wait_processed(1)
    assert [t["subject"] for t in instance.tickets()] == ["Piped"]


@pytest.mark.sqlite_only("SQLite's files and their folder")
def test_inject_tempfails_when_it_cannot_store(tmp_path, sink):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data directory should be")
    inst = Instance(tmp_path, sink.port, connector__database="blocker/connector.db")
    result = inst.cli("inject", input=make_mail().as_bytes(), check=False)
    assert result.returncode == 75, result.stderr
    assert b"try again later" in result.stderr


@pytest.mark.sqlite_only("an SQLite file lock")
def test_smtp_tempfails_when_it_cannot_store(daemon):
    db = daemon.path / "var" / "connector-spool.db"
    import sqlite3
    locker = sqlite3.connect(db, timeout=1)
    locker.execute("PRAGMA busy_timeout=1")
    locker.execute("BEGIN EXCLUSIVE")   # another writer holds the spool past the busy timeout (10 s)
    try:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=60) as smtp:
            smtp.ehlo()
            smtp.mail("ann@acme.example")
            smtp.rcpt("support@example.com")
            code, text = smtp.data(make_mail(subject="Locked out").as_bytes())
    finally:
        locker.rollback()
        locker.close()
    assert code == 451, text


def test_replay_dry_run_changes_nothing(instance):
    path = instance.path / "new.eml"
    path.write_bytes(make_mail(subject="Dry", sender="ann@acme.example").as_bytes())
    import json
    result = json.loads(instance.cli("replay", "--dry-run", "--json", str(path)).stdout)
    assert result["action"] == "new_ticket" and result["public"] is True and result["ticket"] == 1
    assert sorted(result["recipients"]) == ["ann@acme.example", "bob@example.com", "jane@example.com"]
    assert instance.spool_states() == [] and instance.tickets() == []
    done = json.loads(instance.cli("replay", "--json", str(path)).stdout)
    assert done["action"] == "new_ticket" and done["ticket"] == 1
    assert [t["number"] for t in instance.tickets()] == [1]
    again = json.loads(instance.cli("replay", "--json", str(path)).stdout)
    assert again["action"] == "duplicate"


SUPPORT, NOTIFICATIONS = "support@example.com", "notifications@example.com"


def test_inject_takes_several_recipients_in_either_spelling(instance):
    """Postfix expands `--recipient=${recipient}` to one word per recipient, the older
    `--recipient ${recipient}` to one option followed by every recipient: both are one mail."""
    for index, argv in enumerate((["--recipient", SUPPORT, NOTIFICATIONS],
                                  [f"--recipient={SUPPORT}", f"--recipient={NOTIFICATIONS}"])):
        mail = make_mail(subject=f"Both {index}", to=f"{SUPPORT}, {NOTIFICATIONS}").as_bytes()
        result = instance.cli("inject", "--sender=ann@acme.example", *argv, input=mail, check=False)
        assert result.returncode == 0, result.stderr
    instance.start()
    instance.wait_processed(2)
    assert sorted(t["subject"] for t in instance.tickets()) == ["Both 0", "Both 1"]
    assert [row[2] for row in instance.spool_states()] == ["new_ticket", "new_ticket"]


def test_inject_stores_for_its_own_recipients_among_foreign_ones(instance):
    mail = make_mail(subject="Mixed").as_bytes()
    result = instance.cli("inject", "--recipient", "x@elsewhere.example", SUPPORT, input=mail, check=False)
    assert result.returncode == 0, result.stderr
    assert b"x@elsewhere.example is not an address of this connector" in result.stderr
    instance.start()
    instance.wait_processed(1)
    assert [t["subject"] for t in instance.tickets()] == ["Mixed"]


@pytest.mark.parametrize("argv", [["--bogus"], ["--recipient"], ["--sender"], ["--recipient", SUPPORT, "-x"]])
def test_inject_argument_errors_exit_75_not_2(instance, argv):
    """argparse's exit 2 is a permanent failure to Postfix: the customer got a bounce."""
    result = instance.cli("inject", *argv, input=make_mail().as_bytes(), check=False)
    assert result.returncode == 75, result.stderr
    assert b"the MTA keeps the mail and retries" in result.stderr
    assert instance.spool_states() == []


def test_inject_unexpected_error_exits_75(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    staff = tmp_path / "config" / "staff.yaml"
    staff.unlink()
    staff.mkdir()            # an IsADirectoryError while loading: whatever it is, never a bounce
    result = inst.cli("inject", "--recipient", SUPPORT, input=make_mail().as_bytes(), check=False)
    assert result.returncode == 75, result.stderr


def deliver_copy(inst, via, raw, rcpt):
    """One copy of `raw` for one recipient, as an MTA that splits the delivery makes it."""
    if via == "pipe":
        inst.cli("inject", "--sender=ann@acme.example", f"--recipient={rcpt}", input=raw)
    else:
        with smtplib.LMTP("127.0.0.1", inst.port) as lmtp:
            lmtp.sendmail("ann@acme.example", [rcpt], raw)


@pytest.mark.parametrize("via", ["pipe", "lmtp"])
@pytest.mark.parametrize("first", [NOTIFICATIONS, SUPPORT])
def test_one_copy_per_recipient_is_filed_once_by_all_recipients(tmp_path, sink, via, first):
    """A mail to support@ and notifications@ delivered as two copies, each processed before
    the next arrives, is one ticket whichever copy comes first; no triage item stays open."""
    inst = Instance(tmp_path, sink.port, smtp__protocol=via if via == "lmtp" else "smtp").start()
    try:
        raw = make_mail(subject="Split delivery", to=f"{SUPPORT}, {NOTIFICATIONS}").as_bytes()
        second = SUPPORT if first == NOTIFICATIONS else NOTIFICATIONS
        deliver_copy(inst, via, raw, first)
        inst.wait_processed(1)
        deliver_copy(inst, via, raw, second)
        states = inst.wait_processed(2)
        assert [t["subject"] for t in inst.tickets()] == ["Split delivery"]
        assert [row[2] for row in states] == (["triage", "new_ticket"] if first == NOTIFICATIONS
                                              else ["new_ticket", "duplicate"])
        assert [i["status"] for i in inst.inbound() if i["status"] == "awaiting_review"] == []
        inst.wait_delivered()
        assert len(sink.to("ann@acme.example")) == 1      # one auto-response
        # A third copy (an MTA retrying) changes nothing.
        deliver_copy(inst, via, raw, NOTIFICATIONS)
        assert inst.wait_processed(3)[-1][2] == "duplicate"
        assert len(inst.tickets()) == 1
    finally:
        inst.stop()


def test_an_automatic_reply_split_by_the_mta_reaches_its_ticket(daemon):
    """An out-of-office from the ticket's contact to support@ and notifications@: the copy
    for notifications alone would be ignored as automatic mail there; the support copy
    that follows files it on the ticket, as one delivery of both would."""
    deliver_copy(daemon, "pipe", make_mail(subject="Printer").as_bytes(), SUPPORT)
    daemon.wait_processed(1)
    raw = make_mail(subject="Re: [Ticket #1] Printer", to=f"{SUPPORT}, {NOTIFICATIONS}",
                    headers={"Auto-Submitted": "auto-replied"}, body="I am out of the office.\n").as_bytes()
    deliver_copy(daemon, "pipe", raw, NOTIFICATIONS)
    daemon.wait_processed(2)
    deliver_copy(daemon, "pipe", raw, SUPPORT)
    actions = [row[2] for row in daemon.wait_processed(3)]
    assert actions == ["new_ticket", "ignored_automatic", "follow_up"]
    assert daemon.ticket(1)["message_count"] == 3   # request, auto-response, the out-of-office


def test_copies_spooled_before_the_worker_runs_are_filed_once(instance):
    raw = make_mail(subject="Both waiting", to=f"{SUPPORT}, {NOTIFICATIONS}").as_bytes()
    for rcpt in (NOTIFICATIONS, SUPPORT):
        deliver_copy(instance, "pipe", raw, rcpt)
    instance.start()
    instance.wait_processed(2)
    assert [t["subject"] for t in instance.tickets()] == ["Both waiting"]
    assert [i for i in instance.inbound() if i["status"] == "awaiting_review"] == []


def test_a_copy_only_to_notifications_stays_triage(daemon):
    raw = make_mail(subject="Just notifications", to=NOTIFICATIONS).as_bytes()
    for _ in range(2):
        deliver_copy(daemon, "pipe", raw, NOTIFICATIONS)
    assert [row[2:] for row in daemon.wait_processed(2)] == [("triage", "notifications_address"),
                                                            ("duplicate", "same Message-ID and bytes as spool entry 1")]
    assert daemon.tickets() == []


def test_support_in_bcc_only_still_files_the_notifications_copy(daemon):
    """The envelope decides, not To/Cc: support@ in Bcc shows in its copy's envelope only."""
    raw = make_mail(subject="Bcc to support", to=NOTIFICATIONS).as_bytes()
    deliver_copy(daemon, "pipe", raw, NOTIFICATIONS)
    daemon.wait_processed(1)
    deliver_copy(daemon, "pipe", raw, SUPPORT)
    assert [row[2] for row in daemon.wait_processed(2)] == ["triage", "new_ticket"]
    assert [t["subject"] for t in daemon.tickets()] == ["Bcc to support"]
    closed = [i for i in daemon.inbound() if i["reason"] == "notifications_address"]
    assert [i["status"] for i in closed] == ["closed"]
