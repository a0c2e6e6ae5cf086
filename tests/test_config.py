"""check-config and run: every problem names the file, the key, what is wrong, and a hint."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, Instance
from connector.settings.schema import render_example


def check(instance):
    return instance.cli("check-config", check=False)


@pytest.fixture
def inst(tmp_path):
    return Instance(tmp_path, 2500)


def test_good_config_summary(inst):
    result = check(inst)
    assert result.returncode == 0, result.stderr
    assert b"configuration OK" in result.stdout and b"6 staff (5 active)" in result.stdout


@pytest.mark.parametrize("ini,fragment", [
    ({"connector__colour": "blue"}, "[connector] colour: unknown key"),
    ({"connector__sender_name": "boss"}, "[connector] sender_name: 'boss' is not one of employee, unified"),
    ({"connector__public_address": "not-an-address"}, "[connector] public_address: 'not-an-address' is not an email address"),
    ({"smtp__listen": "localhost"}, "[smtp] listen: 'localhost' is not HOST:PORT"),
    ({"smtp__max_message_size": "-5"}, "[smtp] max_message_size"),
    ({"smtp__max_message_size": "25"}, "[smtp] max_message_size"),      # 25 bytes: the M forgotten
    ({"smtp__max_message_size": "10G"}, "[smtp] max_message_size"),
    ({"connector__ticket_tag": "[Ticket]"}, "[connector] ticket_tag: does not contain {number}"),
    ({"connector__ticket_tag": "[{prefix}-{number}]"}, "[connector] ticket_tag: has braces other than {number}"),
    ({"connector__ticket_tag": "{Ticket {number}}"}, "[connector] ticket_tag: has braces other than {number}"),
])
def test_bad_ini_values(tmp_path, ini, fragment):
    inst = Instance(tmp_path, 2500, **ini)
    result = check(inst)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert str(inst.ini) in err and fragment in err and "hint:" in err


def test_duplicate_staff_email(inst):
    path = inst.path / "config" / "staff.yaml"
    path.write_text(path.read_text() + "  - name: Jane Again\n    emails: [JANE@example.com]\n")
    err = check(inst).stderr.decode()
    assert f"{path}: staff[6].emails: jane@example.com is already listed for Jane Doe" in err


def test_manager_not_staff(inst):
    path = inst.path / "config" / "accounts.yaml"
    path.write_text("accounts:\n  - name: Gamma\n    domains: [gamma.example]\n    manager: nobody@example.com\n")
    result = check(inst)
    assert result.returncode == 1
    assert f"{path}: accounts[0].manager: nobody@example.com is not a staff email" in result.stderr.decode()


def test_bad_receive_and_unknown_staff_key(inst):
    path = inst.path / "config" / "staff.yaml"
    path.write_text("staff:\n  - name: X\n    emails: [x@example.com]\n    receive: sometimes\n")
    assert "staff[0].receive: 'sometimes' is not a recipient option" in check(inst).stderr.decode()
    path.write_text("staff:\n  - name: X\n    email: x@example.com\n")
    assert "staff[0].email: unknown key" in check(inst).stderr.decode()


def test_broken_yaml_and_template(inst):
    path = inst.path / "config" / "staff.yaml"
    path.write_text("staff:\n  - name: [unclosed\n")
    assert f"{path}: line" in check(inst).stderr.decode()
    path.write_text("staff: []\n")
    (inst.path / "config" / "accounts.yaml").unlink()
    template = inst.path / "templates" / "auto_response.txt.j2"
    template.parent.mkdir()
    template.write_text("Subject: {{ ticket.tag }\n\nbody\n")
    err = check(inst).stderr.decode()
    assert f"{template}: line 1: template syntax: unexpected" in err
    template.write_text("Subject: {{ ticket.tag }}\n\nbody\n")
    rules = inst.path / "rules" / "quotes.local.yaml"   # one line like the other files, not PyYAML's eight
    rules.parent.mkdir()
    rules.write_text('quotes:\n  - name: x\n   pattern: "a"\n')
    err = check(inst).stderr.decode().strip()
    assert err.count("\n") == 0 and f"{rules}: line 3: is not valid YAML: expected <block end>" in err


def test_run_refuses_to_start_with_the_same_message(tmp_path):
    inst = Instance(tmp_path, 2500, connector__sender_name="boss")
    result = subprocess.run([sys.executable, "-m", "connector", "-c", str(inst.ini), "run"],
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert "[connector] sender_name: 'boss' is not one of employee, unified" in result.stderr.decode()


def test_missing_config_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "connector", "-c", str(tmp_path / "nope.ini"), "check-config"],
                            capture_output=True, timeout=30)
    assert result.returncode == 1 and b"file not found" in result.stderr


def test_config_from_environment(inst):
    env = {"CONNECTOR_CONFIG": str(inst.ini), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "connector", "check-config"], capture_output=True,
                            env=env, timeout=30)
    assert result.returncode == 0 and str(inst.ini).encode() in result.stdout


def test_example_config_documents_every_key_with_its_default():
    assert (ROOT / "connector.ini.example").read_text() == render_example()


def test_running_daemon_reloads_good_config_and_keeps_last_good(tmp_path):
    from conftest import Sink, make_mail, wait_for
    sink = Sink()
    sink.start()
    inst = Instance(tmp_path, sink.port).start()
    try:
        wait_for(lambda: '"worker.started"' in inst.log.read_text(), what="worker running")
        staff = inst.path / "config" / "staff.yaml"
        staff.write_text(staff.read_text() + "  - name: Nina New\n    emails: [nina@example.com]\n    receive: all\n")
        wait_for(lambda: inst.log.read_text().count('"config.reloaded"') >= 2, what="reload in both processes")
        inst.send(make_mail(subject="After the reload"))
        inst.wait_processed(1)
        inst.wait_delivered()
        assert sink.to("nina@example.com")                     # the new employee receives mail

        staff.write_text("staff:\n  - name: [broken\n")         # a typo while the daemon runs
        wait_for(lambda: '"config.reload_failed"' in inst.log.read_text(), what="failed reload logged")
        assert inst.proc.poll() is None                         # still running
        inst.send(make_mail(subject="Still filed", sender="bert@beta.example"))
        inst.wait_processed(2)
        inst.wait_delivered()
        assert len(sink.to("nina@example.com")) == 2           # last good config still in force
        assert f"{staff}: line" in inst.log.read_text()
    finally:
        inst.stop()
        sink.stop()


@pytest.mark.parametrize("value", ["off", "OFF", "Off", "Manager", "ALL"])
def test_receive_option_as_written_in_yaml(inst, value):
    """`receive: off` unquoted is YAML 1.1 false; the seed writes the options capitalised."""
    from connector.settings.loader import load_staff
    path = inst.path / "config" / "staff.yaml"
    path.write_text(f"staff:\n  - name: X\n    emails: [x@example.com]\n    receive: {value}\n")
    path.parent.joinpath("accounts.yaml").write_text("accounts: []\n")
    result = check(inst)
    assert result.returncode == 0, result.stderr
    assert load_staff(path)[0].receive == value.lower()


BAD_RULE = """\
rules:
  - name: broken_header
    kind: header
    regex: "^On (.* wrote:$"
    samples: {match: ["On Monday Ann wrote:"], no_match: ["Hello"]}
"""


def test_bad_reply_rule_refused_by_check_config_and_run(inst):
    rules = inst.path / "rules" / "quotes.local.yaml"
    rules.parent.mkdir()
    rules.write_text(BAD_RULE)
    for command in ("check-config", "run"):
        result = inst.cli(command, check=False)
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert f"{rules}: rule 'broken_header': bad regex" in err and "hint:" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_template_render_error_names_file_and_line(inst):
    template = inst.path / "templates" / "auto_response.txt.j2"
    template.parent.mkdir()
    template.write_text("Subject: {{ ticket.tag }}\n\nHello {{ sender.name }},\n{{ ticket.colour }}\n")
    err = check(inst).stderr.decode()
    assert f"{template}: line 4: cannot be rendered:" in err and "colour" in err


def test_every_template_is_compiled(inst):
    extra = inst.path / "templates" / "footer.txt.j2"
    extra.parent.mkdir()
    extra.write_text("Thanks\nSupport\n{{ x }\n")
    err = check(inst).stderr.decode()
    assert f"{extra}: line 3: template syntax:" in err


@pytest.mark.parametrize("key,address", [("public_address", "support@example.com"),
                                         ("public_address", "support+billing@example.com"),
                                         ("notifications_address", "notifications@example.com")])
def test_own_address_listed_as_staff_refused(inst, key, address):
    path = inst.path / "config" / "staff.yaml"
    path.write_text(path.read_text() + f"  - name: Desk\n    emails: [{address.upper()}]\n")
    result = check(inst)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert f"{path}: staff[6].emails: {address} is the connector's own {key}" in err and "hint:" in err


@pytest.mark.parametrize("listen,relay", [("127.0.0.1:2600", "127.0.0.1:2600"), ("0.0.0.0:2600", "127.0.0.1:2600"),
                                          ("127.0.0.1:2600", "localhost:2600"), ("[::]:2600", "[::1]:2600"),
                                          ("127.0.0.1:2600", "0.0.0.0:2600")])
def test_relay_that_is_our_own_listen_address_refused(tmp_path, listen, relay):
    inst = Instance(tmp_path, 2500, smtp__listen=listen, outbound__relay=relay)
    err = check(inst).stderr.decode()
    assert f"[outbound] relay: {relay} is the connector's own [smtp] listen address" in err and "hint:" in err


@pytest.mark.parametrize("listen,relay", [("0.0.0.0:2600", "mail.example.com:2600"),
                                          ("127.0.0.1:2600", "[::1]:2600")])   # another socket
def test_relay_on_another_port_or_host_is_fine(tmp_path, listen, relay):
    inst = Instance(tmp_path, 2500, smtp__listen=listen, outbound__relay=relay)
    assert check(inst).returncode == 0


def test_unknown_file_in_config_refused(inst):
    typo = inst.path / "config" / "scanner.yaml"
    typo.write_text("scanners: []\n")
    result = check(inst)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert f"{typo}: -: is not a file the connector reads (hint: did you mean scanners.yaml?" in err
    typo.unlink()
    for name in (".staff.yaml.swp", "staff.yaml~", "scanners.yaml.example", "accounts.yaml.bak"):
        (inst.path / "config" / name).write_text("x")
    assert check(inst).returncode == 0


def as_other_user():
    """A command prefix that runs as `nobody` when we are root (root may write anywhere)."""
    import os
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []


@pytest.mark.sqlite_only("the SQLite file's folder")
def test_data_dir_the_daemon_cannot_write_refused():
    import os
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="connector-perm-"))
    try:
        base.chmod(0o755)                      # the config readable by the other user, the data dir not writable
        inst = Instance(base, 2500)
        (base / "var").mkdir(mode=0o755)
        if not as_other_user():
            (base / "var").chmod(0o555)
        for command in ("check-config", "run"):
            result = subprocess.run(as_other_user() + [sys.executable, "-m", "connector", "-c", str(inst.ini),
                                                       command], capture_output=True, timeout=30, cwd="/")
            err = result.stderr.decode()
            assert result.returncode == 1, err
            assert "[connector] database: user " in err and f"cannot write in {base / 'var'}" in err
            assert "hint:" in err and "Traceback" not in err
        inst.ini.write_text(inst.ini.read_text().replace("database = var/connector.db",
                                                         "database = var/new/connector.db"))
        result = subprocess.run(as_other_user() + [sys.executable, "-m", "connector", "-c", str(inst.ini),
                                                   "check-config"], capture_output=True, timeout=30, cwd="/")
        assert f"{base / 'var' / 'new'} does not exist and user " in result.stderr.decode()
    finally:
        os.chmod(base / "var", 0o755)
        shutil.rmtree(base)


@pytest.mark.sqlite_only("a file that is not an SQLite database")
def test_database_that_cannot_be_opened_is_one_line(inst):
    db = inst.path / "var" / "connector.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not an SQLite database, it is a text file " * 40)
    for args in (("tickets", "list"), ("run",)):
        result = inst.cli(*args, check=False)
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert f"{db}: [connector] database: cannot be opened: file is not a database (hint:" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_messages_and_example_speak_the_users_language(inst):
    path = inst.path / "config" / "staff.yaml"
    path.write_text(path.read_text() + "  - name: Jane Again\n    emails: [JANE@example.com]\n")
    assert "seed" not in check(inst).stderr.decode().lower()
    assert "seed" not in (ROOT / "connector.ini.example").read_text().lower()


LOCAL_TEMPLATE = "Subject: We got it\n\nOLD TEMPLATE {{ ticket.tag }}\n"


def test_bad_rule_and_template_under_a_running_daemon_keep_the_last_good(tmp_path):
    """A reload keeps the last good rules and templates; a worker restarted meanwhile waits
    for a good configuration instead of crash-looping, and files the mail once it is fixed."""
    import os
    import signal as signals
    from conftest import Sink, make_mail, wait_for
    sink = Sink()
    sink.start()
    inst = Instance(tmp_path, sink.port)
    template = inst.path / "templates" / "auto_response.txt.j2"
    template.parent.mkdir()
    template.write_text(LOCAL_TEMPLATE)
    rules = inst.path / "rules" / "quotes.local.yaml"
    rules.parent.mkdir()
    rules.write_text("rules: []\n")
    inst.start()
    try:
        wait_for(lambda: '"worker.started"' in inst.log.read_text() and '"deliver.started"' in inst.log.read_text(),
                 timeout=30, what="worker and delivery running")  # one starting now would wait for a fix
        rules.write_text(BAD_RULE)
        template.write_text("Subject: {{ broken\n\nNEW TEMPLATE\n")
        os.kill(inst.proc.pid, signals.SIGHUP)
        wait_for(lambda: inst.log.read_text().count("bad regex") >= 3, timeout=30, what="failed reloads (3 processes)")
        rules.write_text("rules: []\n")                        # the template is still broken
        wait_for(lambda: inst.log.read_text().count("template syntax") >= 3, timeout=30, what="failed template reloads")
        assert '"config.reloaded"' not in inst.log.read_text()
        rules.write_text(BAD_RULE)
        inst.send(make_mail(subject="Filed with the old ones"))
        inst.wait_processed(1, timeout=30)
        inst.wait_delivered(timeout=30)
        reply = sink.to("ann@acme.example")[0][2]
        assert b"OLD TEMPLATE" in reply and b"NEW TEMPLATE" not in reply

        # A worker that dies now restarts into the bad configuration: it waits, it does not loop.
        worker_pid = [json.loads(line)["pid"] for line in inst.log.read_text().splitlines()
                      if '"child.spawned"' in line and '"worker"' in line][-1]
        os.kill(worker_pid, signals.SIGKILL)
        wait_for(lambda: '"config.invalid"' in inst.log.read_text(), timeout=30, what="restarted worker waiting")
        inst.send(make_mail(subject="Waits for the fix", sender="bert@beta.example"))
        time.sleep(3)                                            # a crash loop would spawn again and again
        assert inst.log.read_text().count('"child.spawned"') == 3  # worker, deliver, the one restart
        rules.write_text("rules: []\n")
        template.write_text(LOCAL_TEMPLATE.replace("OLD", "FIXED"))
        inst.wait_processed(2, timeout=30)
        inst.wait_delivered(timeout=30)
        assert b"FIXED TEMPLATE" in sink.to("bert@beta.example")[0][2]
        assert inst.proc.poll() is None
    finally:
        inst.stop()
        sink.stop()


def test_metrics_listen_and_smtp_listen_are_separate_keys(tmp_path):
    """Both sections have a `listen`: each keeps its own, whatever their order in the file."""
    from connector.settings import load_settings
    from connector.settings.schema import RESTART_FIELDS
    ini = tmp_path / "connector.ini"
    ini.write_text("[metrics]\nlisten = 127.0.0.1:9325\n[smtp]\nlisten = 127.0.0.1:2600\n"
                   "[connector]\ndatabase = var/c.db\n")
    settings = load_settings(ini)
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 2600)
    assert (settings.metrics_listen_host, settings.metrics_listen_port) == ("127.0.0.1", 9325)
    ini.write_text("[connector]\ndatabase = var/c.db\n")
    assert load_settings(ini).metrics_listen == ""   # empty: no metrics served
    assert {"listen", "metrics_listen", "database", "backlog"} <= set(RESTART_FIELDS)


def test_unreadable_or_non_utf8_files_are_one_line(tmp_path):
    """An ini or YAML file the process may not read, or that is not UTF-8: one line, no traceback."""
    import subprocess
    import sys
    ini = tmp_path / "connector.ini"
    ini.write_text("[connector]\ndatabase = var/c.db\n")
    (tmp_path / "config").mkdir()
    staff = tmp_path / "config" / "staff.yaml"
    staff.write_bytes(b"staff: []\n# J\xf6ran\n")

    def check():
        done = subprocess.run([sys.executable, "-m", "connector", "-c", str(ini), "check-config"],
                              capture_output=True, text=True, cwd=tmp_path)
        return done.returncode, done.stderr

    code, err = check()
    assert code == 1 and "Traceback" not in err and "staff.yaml" in err and "UTF-8" in err
    staff.unlink()
    staff.mkdir()          # open() fails with an OSError, as it does for a file of mode 0600 root
    code, err = check()
    assert code == 1 and "Traceback" not in err and "staff.yaml: -: cannot be read" in err
    staff.rmdir()
    ini.unlink()
    ini.mkdir()
    code, err = check()
    assert code == 1 and "Traceback" not in err and "connector.ini: -: cannot be read" in err


@pytest.mark.sqlite_only("SQLite's files and their folder")
def test_check_config_reads_the_database_and_warns_of_a_readable_password(tmp_path):
    """A file that is no database fails check-config as it would fail `run`; a password file
    every user can read is said, not refused."""
    import subprocess
    import sys
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "c.db").write_text("this is not a database\n" * 100)
    secret = tmp_path / "relay.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    ini = tmp_path / "connector.ini"
    ini.write_text("[connector]\ndatabase = var/c.db\n")

    def check():
        done = subprocess.run([sys.executable, "-m", "connector", "-c", str(ini), "check-config"],
                              capture_output=True, text=True, cwd=tmp_path)
        return done.returncode, done.stderr

    code, err = check()
    assert code == 1 and "c.db: [connector] database: cannot be opened" in err and "Traceback" not in err
    (tmp_path / "var" / "c.db").unlink()
    ini.write_text("[connector]\ndatabase = var/c.db\n[outbound]\nrelay = smtp.example.net:587\n"
                   f"tls = starttls\nusername = support\npassword_file = {secret}\n")
    code, err = check()
    assert code == 0 and "warning:" in err and "chmod 0600" in err and "s3cret" not in err


def test_a_reload_keeps_restart_only_keys_in_force(tmp_path):
    """Every process reloads through keep_in_force: a new database or listen address waits for
    the restart (a worker that took a new data directory made a new Message-ID key there)."""
    from connector.settings import load_settings
    from connector.settings.reload import keep_in_force
    ini = tmp_path / "connector.ini"
    ini.write_text("[connector]\ndatabase = var/a.db\nresponse_from_name = Old\n[smtp]\nlisten = 127.0.0.1:2600\n")
    old = load_settings(ini)
    ini.write_text("[connector]\ndatabase = var/b.db\nresponse_from_name = New\n[smtp]\nlisten = 127.0.0.1:2700\n")
    new = load_settings(ini)
    assert sorted(keep_in_force(old, new)) == ["database", "listen"]
    assert (new.database, new.data_dir, new.listen_port) == (old.database, old.data_dir, 2600)
    assert new.response_from_name == "New"          # what can change at once does


def test_a_template_in_a_subfolder_is_watched(tmp_path):
    """templates/parts/footer.j2 (for {% include %}) changes the fingerprint a reload looks at."""
    import os
    from connector.settings import load_settings
    from connector.settings.reload import fingerprint
    ini = tmp_path / "connector.ini"
    ini.write_text("[connector]\ndatabase = var/c.db\n")
    footer = tmp_path / "templates" / "parts" / "footer.j2"
    footer.parent.mkdir(parents=True)
    footer.write_text("Regards\n")
    settings = load_settings(ini)
    before = fingerprint(settings)
    footer.write_text("Kind regards, the desk\n")
    os.utime(footer, ns=(1, 1))
    assert fingerprint(settings) != before


def test_check_config_as_root_says_the_daemons_user_may_see_otherwise(inst):
    """As root every folder is writable: an OK then says nothing of the daemon's own user
    (outside test), so check-config says so and shows the command to check as that user."""
    import os
    result = check(inst)
    if os.geteuid() == 0:
        assert result.returncode == 0 and b"warning: checked as root" in result.stderr
        assert b"runuser -u connector -- connector -c" in result.stderr
    else:
        assert b"checked as root" not in result.stderr
