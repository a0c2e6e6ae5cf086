"""check-config and run: every problem names the file, the key, what is wrong, and a hint."""

import subprocess
import sys

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
