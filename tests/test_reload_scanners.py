"""The scanners reload through the daemon's one reload mechanism: a configuration that
`check-config` would refuse (here a broken template) keeps them on the last good one,
under SIGHUP as under a file change, and the refusal is logged."""

import signal

import pytest
import yaml

from conftest import make_mail, wait_for
from dovecot import dovecot_fixture, scanner
from test_imap_daemon import site

dovecot = pytest.fixture(scope="module")(dovecot_fixture)


def events(inst, name):
    return [line for line in inst.log.read_text().splitlines() if f'"event": "{name}"' in line]


def test_broken_template_under_sighup_keeps_the_scanners_on_the_old_config(tmp_path, sink, dovecot):
    first, second = dovecot.new_user(), dovecot.new_user()
    dovecot.append(second, make_mail(subject="Waits for a good configuration").as_bytes())
    inst = site(tmp_path, sink, [scanner(dovecot, first)])
    scanners = tmp_path / "config" / "scanners.yaml"
    inst.start()
    try:
        wait_for(lambda: events(inst, "imap.scanned"), 15, what="the first scanner's first scan")
        template = tmp_path / "templates" / "auto_response.txt.j2"
        template.parent.mkdir()
        template.write_text("Hello {% if %}\n")                          # a syntax error
        scanners.write_text(yaml.safe_dump({"scanners": [scanner(dovecot, first),
                                                         scanner(dovecot, second, name="added")]}))
        inst.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: events(inst, "scanners.reload_failed"), 15, what="the scanners' refusal")
        refusal = events(inst, "scanners.reload_failed")[0]
        assert "auto_response.txt.j2" in refusal and "template syntax" in refusal
        assert not [line for line in events(inst, "scanners.started") if '"added"' in line]
        assert [s["name"] for s in inst.json("scanners", "status") if s.get("imported")] == []
        assert inst.tickets() == []

        template.unlink()                                                # fixed: the added scanner starts
        inst.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: [t["subject"] for t in inst.tickets()] == ["Waits for a good configuration"], 20,
                 interval=0.3, what="the added scanner's ticket")
        assert events(inst, "scanners.reloaded")
    finally:
        inst.stop()
