"""Scanners in `connector status` and `/metrics`: a real Dovecot, one good mailbox, one wrong password."""

import pytest
import yaml

from conftest import Instance, make_mail, wait_for
from dovecot import PASSWORD, dovecot_fixture, scanner
from health import add_metrics, status
from test_metrics import scrape

dovecot = pytest.fixture(scope="module")(dovecot_fixture)


def test_scanner_success_and_error(tmp_path, sink, dovecot):
    good, other = dovecot.new_user(), dovecot.new_user()
    dovecot.append(good, make_mail(subject="From the mailbox").as_bytes())
    inst = Instance(tmp_path, sink.port)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "imap.pass").write_text(PASSWORD + "\n")
    (tmp_path / "secrets" / "wrong.pass").write_text("not-the-password\n")
    (tmp_path / "config" / "scanners.yaml").write_text(yaml.safe_dump({"scanners": [
        scanner(dovecot, good, name="support"),
        scanner(dovecot, other, name="wrong-password", password_file="secrets/wrong.pass")]}))
    url = add_metrics(inst)
    inst.start()
    try:
        def both_reported():
            scanners = {s["name"]: s for s in status(inst)[1]["scanners"]}
            return (len(scanners) == 2 and scanners["support"]["last_success"]
                    and scanners["wrong-password"]["last_error"] and scanners)
        scanners = wait_for(both_reported, 30, what="both scanners reported")
        assert scanners["support"]["last_error"] is None
        assert scanners["wrong-password"]["last_success"] is None
        code, report = status(inst)
        assert code == 1 and any(p.startswith("scanner wrong-password failed") for p in report["problems"])
        assert not any("scanner support" in p for p in report["problems"])
        m = scrape(url)
        assert m[("connector_scanner_last_success_timestamp_seconds", (("scanner", "support"),))] > 1.7e9
        assert m[("connector_scanner_last_error_timestamp_seconds", (("scanner", "wrong-password"),))] > 1.7e9
        assert ("connector_scanner_last_success_timestamp_seconds", (("scanner", "wrong-password"),)) not in m
        inst.wait_processed(1)
        assert scrape(url)[("connector_intake_accepted_total", (("intake", "imap:support"),))] == 1
    finally:
        inst.stop()
