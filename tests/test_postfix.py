"""The README's "Behind Postfix", as written, against a real Postfix (tests/postfix.py).

A customer writes to support@ and notifications@ through Postfix, which
hands the mail to the connector through the README's pipe service (the
installed `connector` console script, as an unprivileged user) or over LMTP
to a running `connector run`. One ticket, nothing bounced, nothing left in
Postfix's queue.
"""

import re
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

import postfix
from conftest import ROOT, Instance, free_port, make_mail, wait_for

pytestmark = pytest.mark.skipif(postfix.available() is not None, reason=postfix.available() or "")

CUSTOMER = "ann@acme.example"
README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## Behind Postfix"):README.index("Outgoing mail goes to `[outbound] relay`")]


def readme_table(suffix):
    """{address: value} of the README's table lines whose value matches `suffix`."""
    return dict(re.findall(rf"^(\S+@example\.com)\s+({suffix})$", SECTION, re.M))


def readme_pipe_service(console_script, ini):
    """The README's master.cf lines, run by the site's console script, user and ini."""
    block = SECTION[SECTION.index("# /etc/postfix/master.cf\n"):].split("```")[0]
    service = block.split("\n", 1)[1]
    assert "argv=" in service and " -c " in service and "user=" in service, block
    service = re.sub(r"argv=\S+", f"argv={console_script}", service)
    service = re.sub(r" -c \S+", f" -c {ini}", service)
    return re.sub(r"user=\S+", f"user={postfix.PIPE_USER}", service)


@pytest.fixture(scope="module")
def site_bin():
    if not Path(sys.executable).with_name("connector").exists():
        pytest.skip("no installed console script next to the test's python (make venv installs it)")
    bin_dir = postfix.site_venv(ROOT)
    if bin_dir is None:
        pytest.skip(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that {postfix.PIPE_USER} can run")
    yield bin_dir
    shutil.rmtree(bin_dir.parent, ignore_errors=True)


@pytest.fixture
def site(sink, site_bin):
    """A Postfix and a connector installation beside it, both run as the pipe's user."""
    made = []

    def make(transport, protocol="smtp", **main_cf):
        mta = postfix.Postfix(free_port())
        inst = Instance(mta.dir / "site", sink.port, smtp__protocol=protocol)
        made.append((mta, inst))
        inst.run_as, inst.python = postfix.PIPE_USER, str(site_bin / "python")
        shutil.chown(inst.path, postfix.PIPE_USER)
        if transport == "pipe":
            with open(mta.dir / "master.cf", "a") as master:
                master.write(readme_pipe_service(site_bin / "connector", inst.ini))
            table = readme_table("connector:")
        else:
            table = {a: v.replace(":2525", f":{inst.port}") for a, v in readme_table(r"lmtp:\S+").items()}
        assert set(table) == {"support@example.com", "notifications@example.com"}, SECTION
        vmailbox = readme_table("connector")
        assert set(vmailbox) == set(table)
        mta.maps({**vmailbox, CUSTOMER: f"{CUSTOMER}/"}, table)
        if main_cf:
            mta.postconf(*(f"{k}={v}" for k, v in main_cf.items()))
        inst.start()
        mta.start()
        return mta, inst

    yield make
    for mta, inst in made:
        inst.stop()
        mta.stop()


def send_through(mta, msg, rcpts):
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as smtp:
        smtp.sendmail(CUSTOMER, rcpts, msg.as_bytes())


def drained(mta):
    """Wait until Postfix has handed everything on (flushing, as a retry would)."""
    def empty():
        if mta.queue():
            mta.flush()
            return False
        return True
    wait_for(empty, 60, interval=0.5, what=f"postfix queue to drain; log: {mta.log_text()[-1500:]}")


def assert_one_ticket_nothing_bounced(mta, inst, subject):
    drained(mta)
    inst.wait_processed(1, timeout=30)
    assert [t["subject"] for t in inst.tickets()] == [subject]
    assert [i for i in inst.inbound() if i["status"] == "awaiting_review"] == []
    log = mta.log_text()
    delivered = re.findall(r"to=<([^>]+)>.*status=sent", log)
    assert sorted(delivered) == ["notifications@example.com", "support@example.com"], log
    assert "status=bounced" not in log and mta.maildir(CUSTOMER) == [], log


def mail_to_both(subject):
    return make_mail(subject=subject, sender=CUSTOMER, to="support@example.com, notifications@example.com")


@pytest.mark.parametrize("limit", [None, "1"])
def test_readme_pipe_recipe_files_a_mail_to_both_addresses_once(site, limit):
    """Without a recipient limit Postfix runs `inject` once with both recipients (argparse
    used to exit 2: a bounce to the customer); with limit 1, once per recipient (the support
    copy used to be dropped as a duplicate of the notifications triage item)."""
    main_cf = {"connector_destination_recipient_limit": limit} if limit else {}
    mta, inst = site("pipe", **main_cf)
    send_through(mta, mail_to_both("Via the pipe"), ["notifications@example.com", "support@example.com"])
    assert_one_ticket_nothing_bounced(mta, inst, "Via the pipe")
    spooled = inst.spool_states()
    assert len(spooled) == (2 if limit else 1)
    inst.wait_delivered()
    assert len(inst.outbox()) == 2          # the auto-response and the copy for the staff, once


@pytest.mark.parametrize("limit", [None, "1"])
def test_readme_lmtp_recipe_files_a_mail_to_both_addresses_once(site, limit):
    """One LMTP transaction with both recipients, or (limit 1) one transaction each."""
    main_cf = {"lmtp_destination_recipient_limit": limit} if limit else {}
    mta, inst = site("lmtp", protocol="lmtp", **main_cf)
    send_through(mta, mail_to_both("Via LMTP"), ["notifications@example.com", "support@example.com"])
    assert_one_ticket_nothing_bounced(mta, inst, "Via LMTP")
    assert len(inst.spool_states()) == (2 if limit else 1)


def test_pipe_argument_error_defers_then_delivers_once_fixed(site):
    """A pipe service set up wrong makes Postfix keep the mail (exit 75), never bounce it."""
    mta, inst = site("pipe")
    master = mta.dir / "master.cf"
    good = master.read_text()
    master.write_text(good.replace(" inject ", " inject --no-such-option "))
    subprocess.run([postfix.POSTFIX, "-c", str(mta.dir), "reload"], check=True, capture_output=True)
    send_through(mta, mail_to_both("Kept by Postfix"), ["support@example.com"])
    wait_for(lambda: "status=deferred" in mta.log_text(), 30, what="postfix to defer")
    assert "status=bounced" not in mta.log_text() and mta.maildir(CUSTOMER) == []
    assert inst.spool_states() == [] and mta.queue()
    master.write_text(good)
    subprocess.run([postfix.POSTFIX, "-c", str(mta.dir), "reload"], check=True, capture_output=True)
    drained(mta)
    inst.wait_processed(1, timeout=30)
    assert [t["subject"] for t in inst.tickets()] == ["Kept by Postfix"]
    assert mta.maildir(CUSTOMER) == []


def test_readme_pipe_recipe_passes_a_null_return_path_as_empty(site):
    """`null_sender=`: a bounce's `MAIL FROM:<>` reaches the spool as '' (a null path, so
    automatic mail), not as Postfix's default word MAILER-DAEMON."""
    mta, inst = site("pipe")
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as smtp:
        smtp.sendmail("", ["support@example.com"], make_mail(subject="Null path").as_bytes())
    drained(mta)
    inst.wait_processed(1, timeout=30)
    with inst.connect() as db:
        assert db.execute("SELECT mail_from, rcpt_to FROM spool.spool").fetchall() == [("", '["support@example.com"]')]
    assert inst.tickets() == []
