"""Scanners inside the real daemon (`connector run` as a process) against Dovecot:
IMAP IDLE files a new message (long before `interval`; bench/imap_bench.py measures how
fast); a scanner that fails (server down,
wrong password, TLS refused) never stops another one or the SMTP intake; a
crash between the spool commit and the \\Seen flag loses nothing and files
nothing twice."""

import json
import time

import pytest
import yaml
from imapclient import SEEN

from conftest import Instance, free_port, make_mail, wait_for
from dovecot import PASSWORD, dovecot_fixture, scanner
from faultproxy import FaultProxy

dovecot = pytest.fixture(scope="module")(dovecot_fixture)


def site(tmp_path, sink, scanners, wrong_password=False, **ini):
    inst = Instance(tmp_path, sink.port, **ini)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "imap.pass").write_text(PASSWORD + "\n")
    (tmp_path / "secrets" / "wrong.pass").write_text("not-the-password\n")
    (tmp_path / "config" / "scanners.yaml").write_text(yaml.safe_dump({"scanners": scanners}))
    return inst


def query(inst, sql):
    return inst.rows(sql)


def subjects(inst):
    return sorted(row[0] for row in query(inst, "select subject from ticket"))


def log_has(inst, event):
    return f'"event": "{event}"' in inst.log.read_text()


def test_idle_files_a_new_message_before_the_interval(tmp_path, sink, dovecot):
    """interval = 300 s: within the generous 60 s wait only IDLE can have filed the mail."""
    user = dovecot.new_user()
    inst = site(tmp_path, sink, [scanner(dovecot, user, idle=True, interval=300)])
    inst.start()
    try:
        wait_for(lambda: log_has(inst, "imap.scanned"), 15, what="first scan")
        time.sleep(0.3)
        dovecot.append(user, make_mail(subject="Arrives while idling").as_bytes())
        wait_for(lambda: subjects(inst) == ["Arrives while idling"], 60, what="the ticket filed by IDLE")
        assert log_has(inst, "imap.idle_wakeup")
        wait_for(lambda: all(SEEN in f for f in dovecot.flags(user).values()), 5, what="\\Seen")
    finally:
        inst.stop()


def test_idle_on_an_unchanged_mailbox_waits_instead_of_scanning_again(tmp_path, sink, dovecot):
    """The SELECT before IDLE answers with `* N EXISTS` / `* 0 RECENT`: those are not news.
    Taken as "mail announced", every wait returned at once and the scanner looped (hundreds of
    scans a second on an empty mailbox). With nothing arriving it scans once, then idles."""
    user = dovecot.new_user()
    dovecot.append(user, make_mail(subject="Already there").as_bytes())
    inst = site(tmp_path, sink, [scanner(dovecot, user, idle=True, interval=300)])
    inst.start()
    try:
        wait_for(lambda: subjects(inst) == ["Already there"], 30, what="the first scan's ticket")
        time.sleep(3)
        log = inst.log.read_text()
        assert log.count('"event": "imap.scanned"') <= 3
        assert '"event": "imap.idle_wakeup"' not in log
    finally:
        inst.stop()


def test_failing_scanners_do_not_stop_the_others_or_smtp(tmp_path, sink, dovecot):
    good, other = dovecot.new_user(), dovecot.new_user()
    dovecot.append(good, make_mail(subject="Via the good scanner").as_bytes())
    closed = free_port()
    scanners = [
        scanner(dovecot, other, name="server-down", port=closed),
        scanner(dovecot, other, name="wrong-password", password_file="secrets/wrong.pass"),
        scanner(dovecot, other, name="tls-refused", security="ssl", port=dovecot.ssl_port),
        scanner(dovecot, good, name="good", idle=True),
    ]
    inst = site(tmp_path, sink, scanners)
    inst.start()
    try:
        wait_for(lambda: subjects(inst) == ["Via the good scanner"], 15, what="the good scanner's ticket")
        inst.send(make_mail(subject="Via SMTP"))
        wait_for(lambda: subjects(inst) == ["Via SMTP", "Via the good scanner"], 15, what="the SMTP ticket")
        dovecot.append(good, make_mail(subject="Second via the good scanner").as_bytes())
        wait_for(lambda: len(subjects(inst)) == 3, 10, what="the good scanner keeps working")
        status = {}

        def all_reported():
            status.update({s["name"]: s for s in inst.json("scanners", "status")})
            return all(status[n]["last_error"] for n in ("server-down", "wrong-password", "tls-refused"))
        wait_for(all_reported, 15, interval=0.3, what="every failure in status")
        assert "cannot connect" in status["server-down"]["last_error"]["text"]
        assert "login" in status["wrong-password"]["last_error"]["text"]
        assert "certificate" in status["tls-refused"]["last_error"]["text"]
        assert status["good"]["last_error"] is None and status["good"]["imported"] == 2
        assert status["good"]["last_uid"] == {"INBOX": 2} and status["good"]["last_success"]
        log = inst.log.read_text()
        assert log.count('"event": "imap.error"') >= 3
    finally:
        inst.stop()


def test_kill_between_spool_commit_and_flag(tmp_path, sink, dovecot):
    """kill -9 from outside at the instant the scanner sends its first flag command (STORE):
    the spool commit came before it, no flag reached the server."""
    user = dovecot.new_user()
    rules = [{"name": "to-processed", "conditions": {"field": "subject", "op": "contains", "value": "crash"},
              "actions": ["create_or_update_ticket", {"move_to_folder": "Processed"}]}]
    # on PostgreSQL the restarted daemon takes the killed one's scanner lease back at once
    # (the default 30 s failover: this test fails if it waits for the lease to run out)
    inst = site(tmp_path, sink, [scanner(dovecot, user, idle=True, rules=rules)])
    proxy = FaultProxy(dovecot.port, rb"(?i)\bSTORE\b", lambda: inst.proc.kill())
    scanners = yaml.safe_load((tmp_path / "config" / "scanners.yaml").read_text())
    scanners["scanners"][0]["port"] = proxy.port
    (tmp_path / "config" / "scanners.yaml").write_text(yaml.safe_dump(scanners))
    inst.start()
    try:
        wait_for(lambda: log_has(inst, "imap.scanned"), 15, what="first (empty) scan")
        uid = dovecot.append(user, make_mail(subject="crash test").as_bytes())
        wait_for(lambda: inst.proc.poll() is not None, 15, what="the daemon to be killed at its first STORE")
        assert inst.proc.returncode == -9
        inst.proc = None
        # Committed, but neither flagged nor moved: the server still shows it unread in INBOX.
        assert len(query(inst, "select id from spool.spool")) == 1
        assert SEEN not in dovecot.flags(user)[uid] and dovecot.flags(user, "Processed") == {}
        time.sleep(1.0)   # the orphaned worker notices its parent died and stops
        inst.start()
        wait_for(lambda: dovecot.flags(user) == {} and len(dovecot.flags(user, "Processed")) == 1, 15,
                 what="the message moved after the restart")
        # The scanner had recorded the UID as stored: it flags and moves it now, and does not
        # spool it a second time.
        rows = wait_for(lambda: (r := query(inst, "select s.id, p.action from spool.spool s join processing p "
                                                  "on p.spool_id = s.id order by s.id")) and r,
                        15, what="the spool entry processed")
        assert [action for _, action in rows] == ["new_ticket"]
        assert subjects(inst) == ["crash test"]
        assert SEEN in next(iter(dovecot.flags(user, "Processed").values()))
        status = inst.json("scanners", "status")[0]
        assert status["imported"] == 1
    finally:
        inst.stop()
        proxy.close()


def test_scanners_yaml_changes_apply_while_running(tmp_path, sink, dovecot):
    first, second = dovecot.new_user(), dovecot.new_user()
    dovecot.append(second, make_mail(subject="Added scanner").as_bytes())
    inst = site(tmp_path, sink, [scanner(dovecot, first, idle=True)])
    inst.start()
    try:
        wait_for(lambda: log_has(inst, "imap.scanned"), 15, what="first scan")
        config = tmp_path / "config" / "scanners.yaml"
        config.write_text("scanners: [ {name: broken, host: } ]\n")        # bad: kept running on the old one
        wait_for(lambda: log_has(inst, "scanners.reload_failed"), 10, what="reload refused")
        config.write_text(yaml.safe_dump({"scanners": [scanner(dovecot, first, idle=True),
                                                       scanner(dovecot, second, name="added")]}))
        wait_for(lambda: subjects(inst) == ["Added scanner"], 15, what="the added scanner's ticket")
        assert json.loads(inst.cli("scanners", "status", "--json").stdout)[1]["name"] == "added"
    finally:
        inst.stop()
