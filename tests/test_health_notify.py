"""systemd Type=notify against the real daemon, with a fake $NOTIFY_SOCKET bound by the test."""

import socket

import pytest

from health import status


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")   # WatchdogSec=0.4s: a ping every 0.2 s
    yield sock
    sock.close()


def receive_until(sock, wanted):
    seen = []
    while wanted not in seen:
        seen += sock.recv(4096).decode().split("\n")
    return seen


def test_ready_watchdog_stopping(instance, notify_socket):
    instance.start()
    seen = receive_until(notify_socket, "READY=1")
    # READY came once SMTP listened and both children ran (started and reported)
    report = status(instance)[1]
    assert all(c["state"] == "running" for c in report["children"].values()) and report["daemon"]["ready"]
    assert any(line.startswith("STATUS=accepting mail on 127.0.0.1:") for line in seen)
    pings = [line for line in receive_until(notify_socket, "WATCHDOG=1") + receive_until(notify_socket, "WATCHDOG=1")
             if line == "WATCHDOG=1"]
    assert len(pings) >= 2
    instance.stop()
    assert "STOPPING=1" in receive_until(notify_socket, "STOPPING=1")


def test_children_do_not_inherit_the_notify_socket(instance, notify_socket):
    instance.start()
    receive_until(notify_socket, "READY=1")
    pids = [c["pid"] for c in status(instance)[1]["children"].values()]
    for pid in pids:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert not any(item.startswith(b"NOTIFY_SOCKET=") for item in environ)
