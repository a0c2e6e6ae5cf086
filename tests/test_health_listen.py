"""`connector run` on an address it cannot listen on: one line naming it, with a hint; no traceback."""

import socket

import pytest

from conftest import Instance
from health import add_metrics


def run_refused(instance):
    result = instance.cli("run", check=False)
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_smtp_port_in_use(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", inst.port))
        taken.listen()
        err = run_refused(inst)
    assert f"[smtp] listen: cannot listen on 127.0.0.1:{inst.port}: address already in use" in err
    assert str(inst.ini) in err and "hint:" in err


@pytest.mark.parametrize("address,what", [("no-such-host.invalid:2525", "cannot resolve the host"),
                                          ("192.0.2.1:2525", "cannot assign requested address")])
def test_smtp_address_not_here(tmp_path, sink, address, what):
    inst = Instance(tmp_path, sink.port, smtp__listen=address)
    err = run_refused(inst)
    assert f"cannot listen on {address}: {what}" in err and "hint:" in err


def test_metrics_port_in_use(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    url = add_metrics(inst)
    port = int(url.rpartition(":")[2])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        err = run_refused(inst)
    assert f"[metrics] listen: cannot listen on 127.0.0.1:{port}: address already in use" in err
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", inst.port)) != 0   # nothing left listening for SMTP


def test_bad_metrics_address_is_a_configuration_error(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    inst.ini.write_text(inst.ini.read_text() + "[metrics]\nlisten = 9325\n")
    result = inst.cli("check-config", check=False)
    assert result.returncode == 1
    assert "[metrics] listen: '9325' is not HOST:PORT" in result.stderr.decode()
