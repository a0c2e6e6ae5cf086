"""systemd Type=notify against the real daemon, with a fake $NOTIFY_SOCKET bound by the test."""

import os
import signal
import socket
import time

import pytest

from conftest import children_of, wait_for
from connector.app import START_EXTEND_EVERY
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


SLOW_START = 15  # seconds each child of the daemon sleeps before it starts, with `slow_children`


@pytest.fixture
def slow_children(tmp_path, monkeypatch):
    """The daemon's children start SLOW_START seconds late, as on a machine whose cores are busy
    with other work: a `sitecustomize` on PYTHONPATH (which the children inherit) sleeps in the
    interpreter of a `worker` or `deliver` command before anything of the connector runs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys, time\n"
        f"if sys.argv[-1] in ('worker', 'deliver'):\n    time.sleep({SLOW_START})\n")
    monkeypatch.setenv("PYTHONPATH", str(site))


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


def test_children_slow_to_start_extend_the_start_timeout_and_ready_follows(instance, notify_socket,
                                                                         slow_children):
    """Idle-class children on a machine busy with other work may take long to start; SMTP already
    accepts mail, so the daemon asks systemd for more time rather than being restarted whole."""
    instance.start()
    started = time.monotonic()
    seen = receive_until(notify_socket, "STATUS=accepting mail on 127.0.0.1:%d; waiting for deliver, worker "
                         "to start" % instance.port)
    assert "READY=1" not in seen
    assert any(line.startswith("EXTEND_TIMEOUT_USEC=") and int(line.split("=")[1]) > START_EXTEND_EVERY * 1e6
               for line in seen)
    assert time.monotonic() - started < START_EXTEND_EVERY + 4
    wait_for(lambda: '"daemon.waiting_for_children"' in instance.log.read_text(), 5, what="the log line")
    assert "READY=1" in receive_until(notify_socket, "READY=1")


def lines_for(sock, seconds):
    """Every notify line that came within `seconds`."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            seen += sock.recv(4096).decode().split("\n")
        except socket.timeout:
            break
    return seen


def test_a_child_that_died_before_ready_gets_no_extension(instance, notify_socket, slow_children):
    """A crash loop is no slow start: once a child died, systemd's start timeout stands. Here
    the worker is killed while both children are still starting."""
    instance.start()
    children = wait_for(lambda: len(children_of(instance.proc.pid)) == 2 and children_of(instance.proc.pid), 10,
                        what="the daemon's two children")
    os.kill({role: pid for pid, role in children.items()}["worker"], signal.SIGKILL)
    seen = lines_for(notify_socket, START_EXTEND_EVERY + 3)
    assert not [line for line in seen if line.startswith("EXTEND_TIMEOUT_USEC=")], seen
    assert "READY=1" not in seen and '"daemon.waiting_for_children"' not in instance.log.read_text()
