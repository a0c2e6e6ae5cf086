"""A real smarthost (Microsoft 365, Gmail, a provider): STARTTLS or implicit TLS with the
certificate verified, and AUTH with the password from a file, never logged.

The relay is aiosmtpd on loopback with a throwaway certificate (openssl).
"""

import ssl
import subprocess
import sys

import pytest
from aiosmtpd.smtp import AuthResult

from connector.outbound.delivery import Delivery
from conftest import free_port
from relays import Clock, ScriptedRelay, queue, row, store_and_settings, write_ini

LOGIN, PASSWORD = "support@example.com", "Pa55-w0rd-XYZ"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "relay.pem", folder / "relay.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


class AuthRelay(ScriptedRelay):
    """Requires STARTTLS and AUTH, like a submission port; records who logged in."""

    def __init__(self, context, **server):
        self.logins = []
        super().__init__(tls_context=context, require_starttls=True, auth_required=True, auth_require_tls=True,
                         authenticator=self.authenticate, **server)

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = (auth_data.login.decode(), auth_data.password.decode()) == (LOGIN, PASSWORD)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def relays():
    started = []
    yield started
    for relay in started:
        relay.stop()


def smarthost(tmp_path, relay, password=PASSWORD, **outbound):
    (tmp_path / "relay.password").write_text(password + "\n")
    keys = {"tls": "starttls", "username": LOGIN, "password_file": "relay.password", **outbound}
    return Delivery(store_and_settings(tmp_path, relay.port, **{k: v for k, v in keys.items() if v is not None}),
                    clock=Clock())


def test_starttls_and_auth(tmp_path, certificate, relays):
    cert, context = certificate
    relays.append(relay := AuthRelay(context).start())
    delivery = smarthost(tmp_path, relay, ca_file=cert)
    [entry_id] = queue(["ann@acme.example"], delivery.clock())
    delivery.run_once()
    assert row(entry_id).status == "sent"
    assert relay.logins == [(LOGIN, PASSWORD)]
    assert relay.sessions[0].ssl is not None            # the mail went over TLS
    assert relay.rcpt_counts() == {"ann@acme.example": 1}
    delivery.close()


def test_wrong_password_defers_and_is_never_logged(tmp_path, certificate, relays, capfd):
    from connector.log import setup_logging
    setup_logging("info")   # to this test's stdout: an earlier test of this process may have logged elsewhere
    cert, context = certificate
    relays.append(relay := AuthRelay(context).start())
    delivery = smarthost(tmp_path, relay, password="Wr0ng-Secret-123", ca_file=cert)
    [entry_id] = queue(["ann@acme.example"], delivery.clock())
    delivery.run_once()
    entry = row(entry_id)
    assert entry.status == "deferred"
    assert f"authentication as {LOGIN} failed: 535 5.7.8 Authentication credentials invalid" in entry.last_error
    out, err = capfd.readouterr()
    assert "outbox.deferred" in out + err
    assert "Wr0ng-Secret-123" not in out + err + entry.last_error + entry.delivery_attempts[0].detail
    assert relay.messages == []
    delivery.close()


def test_certificate_is_verified(tmp_path, certificate, relays):
    _, context = certificate
    relays.append(relay := AuthRelay(context).start())
    delivery = smarthost(tmp_path, relay)                 # no ca_file: the system CAs do not know it
    [entry_id] = queue(["ann@acme.example"], delivery.clock())
    delivery.run_once()
    entry = row(entry_id)
    assert entry.status == "deferred"
    assert "CERTIFICATE_VERIFY_FAILED" in entry.last_error and "ca_file" in entry.last_error
    assert relay.logins == [] and relay.messages == []    # the password never went out
    delivery.close()


def test_starttls_required_and_not_offered(tmp_path, relays):
    relays.append(relay := ScriptedRelay().start())
    delivery = smarthost(tmp_path, relay)
    [entry_id] = queue(["ann@acme.example"], delivery.clock())
    delivery.run_once()
    assert row(entry_id).status == "deferred"
    assert "does not offer STARTTLS, which tls = starttls requires" in row(entry_id).last_error
    assert relay.messages == []
    delivery.close()


def test_implicit_tls(tmp_path, certificate, relays):
    cert, context = certificate
    relays.append(relay := ScriptedRelay(ssl_context=context).start())
    delivery = smarthost(tmp_path, relay, tls="tls", ca_file=cert, username=None, password_file=None)
    [entry_id] = queue(["ann@acme.example"], delivery.clock())
    delivery.run_once()
    assert row(entry_id).status == "sent"                 # this relay speaks nothing but TLS
    assert relay.rcpt_counts() == {"ann@acme.example": 1}
    delivery.close()


@pytest.mark.parametrize("outbound, key, what", [
    ({"username": LOGIN, "tls": "starttls"}, "[outbound] password_file", "is empty while username is set"),
    ({"password_file": "relay.password", "tls": "starttls"}, "[outbound] username", "is empty while password_file"),
    ({"username": LOGIN, "password_file": "missing.password", "tls": "starttls"}, "[outbound] password_file",
     "cannot read"),
    ({"username": LOGIN, "password_file": "relay.password", "tls": "none"}, "[outbound] tls",
     "is none while username is set"),
    ({"tls": "starttls", "ca_file": "missing.pem"}, "[outbound] ca_file", "cannot read"),
    ({"tls": "ssl"}, "[outbound] tls", "is not one of none, starttls, tls"),
    ({"timeout": "0"}, "[outbound] timeout", "must be more than 0 seconds"),
])
def test_smarthost_configuration_mistakes(tmp_path, outbound, key, what):
    (tmp_path / "relay.password").write_text(PASSWORD + "\n")
    ini = write_ini(tmp_path, free_port(), **outbound)
    result = subprocess.run([sys.executable, "-m", "connector", "-c", str(ini), "check-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and what in lines[0], result.stderr
    assert PASSWORD not in result.stderr + result.stdout


def test_check_config_shows_the_login_but_not_the_password(tmp_path):
    (tmp_path / "relay.password").write_text(PASSWORD + "\n")
    ini = write_ini(tmp_path, free_port(), tls="starttls", username=LOGIN, password_file="relay.password")
    result = subprocess.run([sys.executable, "-m", "connector", "-c", str(ini), "check-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"tls starttls, login {LOGIN}" in result.stdout
    assert PASSWORD not in result.stdout
