"""`connector status [--json]`: a Nagios/Icinga check of the running daemon (exit 0, 1, 2)."""

import json
import os
import signal
import stat
import sys
import urllib.request

import pytest
from aiosmtpd.controller import Controller

from conftest import Instance, free_port, make_mail, wait_for
from health import children_running, events, start_from, status

from connector.health.state import FILE


def test_healthy_daemon(daemon):
    report = wait_for(lambda: children_running(daemon), 20, interval=0.3, what="children running")
    code, report = status(daemon)
    assert code == 0 and report["state"] == "healthy" and report["problems"] == []
    assert report["daemon"]["running"] is True and report["daemon"]["pid"] == daemon.proc.pid
    assert report["daemon"]["listen"] == f"127.0.0.1:{daemon.port}"
    assert set(report["children"]) == {"worker", "deliver"}
    assert all(c["pid"] and c["restarts"] == 0 for c in report["children"].values())
    assert report["spool"] == {"unfiled": 0, "oldest_unfiled_age": None, "shunted": 0}
    assert report["outbox"] == {"pending": 0, "deferred": 0, "failed": 0, "oldest_pending_age": None}
    assert report["config"]["generation"] == 1 and report["config"]["reload_error"] is None
    assert report["scanners"] == []
    state_file = daemon.path / "var" / FILE
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    text = daemon.cli("status").stdout.decode()
    assert text.startswith("CONNECTOR HEALTHY - ") and "worker" in text


def test_down_when_never_started_stopped_or_killed(instance):
    code, report = status(instance)
    assert code == 2 and report["state"] == "down"
    instance.start()
    wait_for(lambda: children_running(instance), 20, interval=0.3, what="children running")
    instance.stop()
    code, report = status(instance)
    assert code == 2 and report["problems"] == ["the daemon is stopped"]
    instance.start()
    wait_for(lambda: children_running(instance), 20, interval=0.3, what="children running")
    pid = instance.proc.pid
    instance.kill9()
    code, report = status(instance)
    assert code == 2 and report["problems"] == [f"the daemon (pid {pid}) is gone"]
    assert instance.cli("status", check=False).stdout.decode().startswith("CONNECTOR DOWN - ")


def test_backlog_counts_unfiled_and_degrades_when_old(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    start_from(inst, inst.path, [sys.executable, "-m", "connector", "-c", str(inst.ini), "run", "--no-worker"])
    try:
        wait_for(lambda: status(inst)[0] == 0, 20, interval=0.3, what="healthy")
        for number in range(3):
            inst.send(make_mail(subject=f"Waiting {number}"))
        code, report = status(inst)
        assert code == 0 and report["spool"]["unfiled"] == 3
        assert 0 <= report["spool"]["oldest_unfiled_age"] < 300
        with inst.connect() as conn:
            conn.execute("UPDATE spool.spool SET received_at = received_at - 900 WHERE id = 1")
        code, report = status(inst)
        assert code == 1 and report["spool"]["unfiled"] == 3 and report["spool"]["oldest_unfiled_age"] > 900
        assert any("3 messages unfiled" in p for p in report["problems"])
    finally:
        inst.stop()


class RefusingRelay:
    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            return "554 5.7.1 <%s>: Relay access denied" % address   # about us: failed (5.1.1 would bounce)


@pytest.fixture
def refusing_relay():
    port = free_port()
    controller = Controller(RefusingRelay.Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


def test_failed_outgoing_mail_degrades(tmp_path, refusing_relay):
    inst = Instance(tmp_path, refusing_relay).start()
    try:
        inst.send(make_mail(subject="Nobody gets this"))
        inst.wait_processed(1)
        wait_for(lambda: status(inst)[1]["outbox"]["failed"] >= 1, 20, interval=0.3, what="failed outbox rows")
        code, report = status(inst)
        assert code == 1 and report["state"] == "degraded"
        assert report["outbox"]["pending"] == 0
        assert any("outgoing mails failed" in p for p in report["problems"])
    finally:
        inst.stop()


def test_configuration_generation_and_refused_reload(daemon):
    wait_for(lambda: children_running(daemon), 20, interval=0.3, what="children running")
    ini = daemon.ini.read_text()
    daemon.ini.write_text(ini.replace("[connector]\n", "[connector]\nauto_responses_per_hour = 5\n"))
    wait_for(lambda: status(daemon)[1]["config"]["generation"] == 2, 15, interval=0.3, what="generation 2")
    assert status(daemon)[0] == 0
    def daemon_reloads():
        return [e for e in events(daemon, "config.reloaded") if e["process"] == "daemon"]
    before = len(daemon_reloads())
    daemon.proc.send_signal(signal.SIGHUP)           # a reload of the same files: the same generation
    wait_for(lambda: len(daemon_reloads()) > before, 15, what="reloaded again")
    assert status(daemon)[1]["config"]["generation"] == 2
    staff = daemon.path / "config" / "staff.yaml"
    good = staff.read_text()
    staff.write_text(good.replace("receive: all", "receive: everybody", 1))
    wait_for(lambda: status(daemon)[1]["config"]["reload_error"], 15, interval=0.3, what="reload refused")
    code, report = status(daemon)       # status needs only the ini: it works while a YAML file is bad
    assert code == 1 and report["config"]["generation"] == 2
    assert "everybody" in report["config"]["reload_error"]["error"]
    staff.write_text(good)
    wait_for(lambda: status(daemon)[1]["config"]["generation"] == 3, 15, interval=0.3, what="generation 3")
    assert status(daemon)[0] == 0


FRAGILE_TEMPLATE = """\
Subject: {{ ticket.tag }} received

{% if ticket.subject == "Printer" %}We are on it.{% else %}{{ event.detail.no_such_value }}{% endif %}
"""
FRAGILE_RULES = """\
auto_emails:
  - name: ack
    event: ticket_created
    to: [boss@example.com]
    template: fragile.txt.j2
  - name: taken
    event: ticket_taken
    to: [boss@example.com]
    template: fragile.txt.j2
"""


def test_a_template_failing_on_real_values_degrades_status_until_it_renders(tmp_path, sink):
    """check-config renders with sample values ("Printer"): a template that fails on a real
    ticket's is logged, and `status` is degraded naming the template and when, until a later
    mail renders it (the decision: a success clears it; 24 h without failing too)."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "fragile.txt.j2").write_text(FRAGILE_TEMPLATE)
    inst = Instance(tmp_path, sink.port, metrics__listen=f"127.0.0.1:{free_port()}")
    inst.path.joinpath("config", "auto_emails.yaml").write_text(FRAGILE_RULES)
    inst.path.joinpath("config", "inboxes.yaml").write_text(
        "inboxes:\n  - name: Technical\n    members: [bob@example.com]\ndefault_inbox: Technical\n")
    inst.cli("check-config")
    try:
        inst.start()
        wait_for(lambda: status(inst)[0] == 0, 20, interval=0.3, what="healthy")
        inst.send(make_mail(subject="Boom"))
        inst.wait_processed(1)
        assert [e["template"] for e in events(inst, "auto_email.render_failed")] == ["fragile.txt.j2"]
        code, report = status(inst)
        assert code == 1 and report["state"] == "degraded"
        [problem] = report["problems"]
        [failure] = report["template_failures"]
        assert {k: failure[k] for k in ("template", "rule", "ticket", "event", "count")} == {
            "template": "fragile.txt.j2", "rule": "ack", "ticket": 1, "event": "ticket_created", "count": 1}
        assert "no_such_value" in failure["error"] and failure["time"] == failure["first_time"]
        assert problem.startswith(f"auto-email template fragile.txt.j2 failed to render once, last at {failure['time']}")
        text = inst.cli("status", check=False).stdout.decode()
        assert text.startswith("CONNECTOR DEGRADED - auto-email template fragile.txt.j2 failed")
        assert f"template  fragile.txt.j2: failed 1x since {failure['time']}" in text
        healthz = json.loads(urllib.request.urlopen(f"http://{inst_metrics(inst)}/healthz", timeout=10).read())
        assert healthz["state"] == "degraded" and healthz["problems"] == report["problems"]

        inst.send(make_mail(subject="Printer"))   # the same template renders on the next ticket
        inst.wait_processed(2)
        code, report = status(inst)
        assert (code, report["problems"], report["template_failures"]) == (0, [], [])

        entry = next(e for e in inst.json("inbox", "list") if e["ticket"] == 1)   # an event a command records
        inst.cli("inbox", "take", str(entry["id"]), "--as", "bob@example.com")
        code, report = status(inst)
        assert code == 1 and [(f["template"], f["rule"], f["ticket"], f["event"], f["count"])
                              for f in report["template_failures"]] == [("fragile.txt.j2", "taken", 1, "ticket_taken", 1)]
    finally:
        inst.stop()


def inst_metrics(inst):
    return next(line.split("=", 1)[1].strip() for line in inst.ini.read_text().splitlines()
                if line.startswith("listen") and line.split("=", 1)[1].strip() != f"127.0.0.1:{inst.port}")


def test_a_template_failure_stops_counting_24_h_after_it_last_failed(tmp_path):
    from connector.health import template_failures as failures
    renders = failures.Renders()
    renders.failure("fragile.txt.j2", "ack", 7, "ticket_created", "'dict object' has no attribute 'x'")
    failures.note(tmp_path, renders, 1000.0)
    failures.note(tmp_path, renders, 2000.0)
    [noted] = failures.recent(tmp_path, 2000.0)
    assert (noted["count"], noted["first_at"], noted["at"], noted["ticket"]) == (2, 1000.0, 2000.0, 7)
    assert stat.S_IMODE((tmp_path / failures.FILE).stat().st_mode) == 0o600
    assert failures.recent(tmp_path, 2000.0 + failures.CLEARED_AFTER) == [noted]
    assert failures.recent(tmp_path, 2000.0 + failures.CLEARED_AFTER + 1) == []
    failures.note(tmp_path, failures.Renders(rendered={"other.txt.j2"}), 2500.0)   # another template: kept
    assert failures.recent(tmp_path, 2500.0) == [noted]
    failures.note(tmp_path, failures.Renders(rendered={"fragile.txt.j2"}), 2600.0)
    assert failures.recent(tmp_path, 2600.0) == []


def test_a_hand_edited_failures_file_never_stops_filing_or_the_check(tmp_path):
    """An entry without its fields raised KeyError inside the filing transaction: every mail with
    an auto-email was shunted and `status` said DOWN (a review). Such entries are dropped."""
    from connector.health import template_failures as failures
    (tmp_path / failures.FILE).write_text('{"x.j2": {"template": "x.j2"}, "y.j2": "no entry"}')
    assert failures.recent(tmp_path, 1000.0) == []
    renders = failures.Renders()
    renders.failure("z.j2", "ack", 7, "ticket_created", "boom")
    failures.note(tmp_path, renders, 1000.0)
    assert [f["template"] for f in failures.recent(tmp_path, 1000.0)] == ["z.j2"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a command run as root")
def test_a_failure_noted_by_root_stays_writable_by_the_daemons_user(tmp_path):
    """`sudo connector ...` made the failures file and its lock root's (0600): the daemon could
    never note a failure again, and status stayed healthy (a review)."""
    import pwd
    from connector.health import template_failures as failures
    nobody = pwd.getpwnam("nobody")
    os.chown(tmp_path, nobody.pw_uid, nobody.pw_gid)
    renders = failures.Renders()
    renders.failure("z.j2", "ack", 7, "ticket_created", "boom")
    failures.note(tmp_path, renders, 1000.0)
    for name in (failures.FILE, failures.LOCK):
        assert (tmp_path / name).stat().st_uid == nobody.pw_uid, name


def test_an_ini_status_cannot_read_is_unknown_on_stdout(tmp_path, sink):
    """A check reads stdout: with a bad value in the ini `status` exited 3 with nothing there
    (an outside test), so Nagios showed UNKNOWN without a reason."""
    inst = Instance(tmp_path, sink.port, outbound__retry_initial="soon")
    text = inst.cli("status", check=False)
    assert text.returncode == 3, text
    assert text.stdout.decode().startswith("CONNECTOR UNKNOWN - configuration error: ")
    assert "retry_initial" in text.stdout.decode()
    report = inst.cli("status", "--json", check=False)
    assert report.returncode == 3 and json.loads(report.stdout)["state"] == "unknown"
